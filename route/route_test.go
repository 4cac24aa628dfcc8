package route

import (
	"context"
	"encoding/binary"
	"errors"
	"log/slog"
	"net/netip"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/vishvananda/netlink/nl"
	"golang.org/x/sys/unix"

	"github.com/dsr-agent/dsr-agent/internal/inet"
	"github.com/dsr-agent/dsr-agent/internal/netnstest"
)

func portRule(v6 bool, src string, port uint16) Rule {
	return Rule{IPv6: v6, Priority: 8558, Src: netip.MustParsePrefix(src), IPProto: inet.TCP, SPort: port, Table: 8558, SuppressPrefixLen: -1}
}

func TestRender(t *testing.T) {
	for _, c := range []struct {
		got, want string
	}{
		{portRule(false, "192.0.2.21/32", 443).Command("add"), "ip rule add priority 8558 from 192.0.2.21 ipproto tcp sport 443 lookup 8558 proto 213"},
		{portRule(true, "2001:db8::21/128", 80).Command("del"), "ip -6 rule del priority 8558 from 2001:db8::21 ipproto tcp sport 80 lookup 8558 proto 213"},
		{Rule{Priority: 8557, Table: unix.RT_TABLE_MAIN, SuppressPrefixLen: 0}.Command("add"), "ip rule add priority 8557 from all lookup main suppress_prefixlength 0 proto 213"},
		{Route{Gateway: netip.MustParseAddr("192.0.2.252"), Link: "eth0", Table: 8558}.Command("replace"), "ip route replace default via 192.0.2.252 dev eth0 table 8558 proto 213"},
		{Route{Gateway: netip.MustParseAddr("fe80::1"), Link: "eth0", Table: 8558}.Command("del"), "ip -6 route del default via fe80::1 dev eth0 table 8558 proto 213"},
	} {
		if c.got != c.want {
			t.Errorf("got  %s\nwant %s", c.got, c.want)
		}
	}
}

func TestDiff(t *testing.T) {
	keep, gone, add := portRule(false, "192.0.2.21/32", 443), portRule(false, "192.0.2.21/32", 80), portRule(false, "192.0.2.21/32", 8443)
	oldGW := Route{Gateway: netip.MustParseAddr("192.0.2.251"), Link: "eth0", Table: 8558}
	newGW := Route{Gateway: netip.MustParseAddr("192.0.2.252"), Link: "eth0", Table: 8558}
	v6 := Route{Gateway: netip.MustParseAddr("fe80::1"), Link: "eth0", Table: 8558}
	o := &Observed{Rules: []Rule{keep, gone}, Routes: []Route{oldGW, v6}}
	delRules, addRules, delRoutes, putRoutes := Diff([]Rule{keep, add}, []Route{newGW}, o)
	if !slices.Equal(delRules, []Rule{gone}) || !slices.Equal(addRules, []Rule{add}) {
		t.Errorf("rules: del %v add %v", delRules, addRules)
	}
	// A changed gateway is a replace, not a delete: no instant without the
	// route. The IPv6 route is no longer wanted.
	if !slices.Equal(delRoutes, []Route{v6}) || !slices.Equal(putRoutes, []Route{newGW}) {
		t.Errorf("routes: del %v put %v", delRoutes, putRoutes)
	}
	delRules, addRules, delRoutes, putRoutes = Diff([]Rule{keep, gone}, []Route{oldGW, v6}, o)
	if len(delRules)+len(addRules)+len(delRoutes)+len(putRoutes) != 0 {
		t.Errorf("in sync, yet %v %v %v %v", delRules, addRules, delRoutes, putRoutes)
	}
}

// The kernel round trip: what Manager adds, Observe reads back as equal (so
// a second pass plans nothing); foreign rules and foreign routes in the
// table are reported or left alone, never touched.
func TestManagerInNamespace(t *testing.T) {
	ns := netnstest.New(t)
	ns.AddDummy(t, "eth0", "192.0.2.21/24", "2001:db8::21/64")
	m := &Manager{NL: ns.Netlink}
	ns.Exec(t, "ip", "rule", "add", "priority", "100", "from", "192.0.2.21", "sport", "22", "ipproto", "tcp", "lookup", "main")
	ns.Exec(t, "ip", "route", "add", "198.51.100.0/24", "via", "192.0.2.1", "table", "9000")

	rules := []Rule{portRule(false, "192.0.2.21/32", 443), portRule(true, "2001:db8::21/128", 443),
		{Priority: 8557, Table: unix.RT_TABLE_MAIN, SuppressPrefixLen: 0}}
	routes := []Route{{Gateway: netip.MustParseAddr("192.0.2.252"), Link: "eth0", Table: 8558},
		{Gateway: netip.MustParseAddr("2001:db8::252"), Link: "eth0", Table: 8558}}
	for _, r := range routes {
		if err := m.ReplaceRoute(r); err != nil {
			t.Fatal(err)
		}
	}
	for _, r := range rules {
		if err := m.AddRule(r); err != nil {
			t.Fatal(err)
		}
	}
	o, err := m.Observe([]int{8558, 9000})
	if err != nil {
		t.Fatal(err)
	}
	dr, ar, dt, pt := Diff(rules, routes, o)
	if len(dr)+len(ar)+len(dt)+len(pt) != 0 {
		t.Fatalf("after applying, the kernel's copy differs: del %v add %v delroute %v put %v\nobserved %+v", dr, ar, dt, pt, o)
	}
	if len(o.Foreign) != 1 || !strings.Contains(o.Foreign[0], "198.51.100.0/24 table 9000") {
		t.Errorf("foreign routes = %q", o.Foreign)
	}
	show := ns.Exec(t, "ip", "rule", "show")
	for _, want := range []string{"8558:\tfrom 192.0.2.21 ipproto tcp sport 443 lookup 8558 proto 213", "8557:\tfrom all lookup main suppress_prefixlength 0 proto 213"} {
		if !strings.Contains(show, want) {
			t.Errorf("ip rule show lacks %q:\n%s", want, show)
		}
	}
	if got := ns.Exec(t, "ip", "route", "show", "table", "8558"); !strings.Contains(got, "default via 192.0.2.252 dev eth0 proto 213") {
		t.Errorf("table 8558: %s", got)
	}
	// The kernel routes by it: a reply from 443 goes via the LB, one from
	// another port does not (ip route get with sport/ipproto).
	if got := ns.Exec(t, "ip", "route", "get", "203.0.113.9", "from", "192.0.2.21", "ipproto", "tcp", "sport", "443"); !strings.Contains(got, "via 192.0.2.252") {
		t.Errorf("reply from 443 not via the LB: %s", got)
	}
	for _, r := range rules {
		if err := m.DelRule(r); err != nil {
			t.Fatal(err)
		}
	}
	for _, r := range routes {
		if err := m.DelRoute(r); err != nil {
			t.Fatal(err)
		}
	}
	o, err = m.Observe([]int{8558})
	if err != nil || len(o.Rules)+len(o.Routes) != 0 {
		t.Fatalf("after delete: %+v %v", o, err)
	}
	if !strings.Contains(ns.Exec(t, "ip", "rule", "show"), "100:\tfrom 192.0.2.21 ipproto tcp sport 22 lookup main") {
		t.Error("the foreign rule is gone")
	}
	if !strings.Contains(ns.Exec(t, "ip", "route", "show", "table", "9000"), "198.51.100.0/24") {
		t.Error("the foreign route is gone")
	}
}

// The watcher wakes for dsr-agent's rules and routes and for any rule (a
// foreign rule may be in the way of return_via's), not for others' routes.
// Watch judges each message by ours, so ours is held to the messages the
// kernel really sends for each change, read from a subscription like
// Watch's and awaited one by one (no quiet period stands for "no wake").
// TestWatchWakes shows the subscription is wired to wake.
func TestWatchWakesForOwnOnly(t *testing.T) {
	ns := netnstest.New(t)
	ns.AddDummy(t, "eth0", "192.0.2.21/24")
	m := &Manager{NL: ns.Netlink}
	next := subscribe(t, ns)
	foreign := "198.51.100.0/24"
	ns.Exec(t, "ip", "route", "add", foreign, "via", "192.0.2.1")
	if next(unix.RTM_NEWROUTE, routeTo(foreign)) {
		t.Error("a foreign route wakes the watcher")
	}
	if err := m.AddRule(portRule(false, "192.0.2.21/32", 443)); err != nil {
		t.Fatal(err)
	}
	if !next(unix.RTM_NEWRULE, rulePriority(8558)) {
		t.Error("no wake for dsr-agent's rule")
	}
	if err := m.ReplaceRoute(Route{Gateway: netip.MustParseAddr("192.0.2.1"), Link: "eth0", Table: 8558}); err != nil {
		t.Fatal(err)
	}
	if !next(unix.RTM_NEWROUTE, routeInTable(8558)) {
		t.Error("no wake for dsr-agent's route")
	}
	ns.Exec(t, "ip", "rule", "add", "priority", "100", "from", "192.0.2.21", "lookup", "main")
	if !next(unix.RTM_NEWRULE, rulePriority(100)) {
		t.Error("no wake for a foreign rule (it may be in the way)")
	}
	ns.Exec(t, "ip", "rule", "del", "priority", "8558")
	if !next(unix.RTM_DELRULE, rulePriority(8558)) {
		t.Error("no wake for the deleted rule")
	}
	ns.Exec(t, "ip", "route", "del", foreign)
	if next(unix.RTM_DELROUTE, routeTo(foreign)) {
		t.Error("a foreign route's deletion wakes the watcher")
	}
}

// TestWatchWakes: Watch, subscribed in a namespace, wakes with "route" for a
// rule of dsr-agent's.
func TestWatchWakes(t *testing.T) {
	ns := netnstest.New(t)
	ns.AddDummy(t, "eth0", "192.0.2.21/24")
	m := &Manager{NL: ns.Netlink}
	woke := make(chan string, 64)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	// The subscription socket is opened in the calling thread's namespace.
	go func() {
		defer close(done)
		_ = netnstest.Within(ns.Handle, func() error {
			Watch(ctx, func(s string) { woke <- s }, slog.Default())
			return nil
		})
	}()
	defer func() { cancel(); <-done }()
	// Changes made before the subscription is open are not seen: toggle
	// one of ours until it wakes.
	probe := portRule(false, "192.0.2.21/32", 9)
	deadline := time.After(10 * time.Second)
	for {
		if err := m.AddRule(probe); err != nil {
			t.Fatal(err)
		}
		if err := m.DelRule(probe); err != nil {
			t.Fatal(err)
		}
		select {
		case got := <-woke:
			if got != "route" {
				t.Fatalf("woke with %q", got)
			}
			return
		case <-deadline:
			t.Fatal("no wake for dsr-agent's rule")
		case <-time.After(100 * time.Millisecond):
		}
	}
}

// subscribe opens a subscription to Watch's groups in ns and returns next:
// it reads the kernel's messages until one of type typ matches, and
// reports whether ours says that message wakes the watcher.
func subscribe(t *testing.T, ns *netnstest.NS) (next func(typ uint16, match func(data []byte) bool) bool) {
	t.Helper()
	var s *nl.NetlinkSocket
	var err error
	ns.Do(t, func() { s, err = nl.Subscribe(unix.NETLINK_ROUTE, watchGroups...) })
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(s.Close)
	if err := s.SetReceiveTimeout(&unix.Timeval{Usec: 100000}); err != nil {
		t.Fatal(err)
	}
	return func(typ uint16, match func([]byte) bool) bool {
		t.Helper()
		for deadline := time.Now().Add(10 * time.Second); time.Now().Before(deadline); {
			msgs, _, err := s.Receive()
			if errors.Is(err, unix.EAGAIN) || errors.Is(err, unix.EINTR) {
				continue
			}
			if err != nil {
				t.Fatalf("receive: %v", err)
			}
			for _, m := range msgs {
				if m.Header.Type == typ && match(m.Data) {
					return ours(m.Header.Type, m.Data)
				}
			}
		}
		t.Fatalf("no message of type %d from the kernel", typ)
		return false
	}
}

// rtAttrs are the attributes after an rtmsg (routes and rules share the
// header's size).
func rtAttrs(data []byte) map[uint16][]byte {
	if len(data) < unix.SizeofRtMsg {
		return nil
	}
	attrs, err := nl.ParseRouteAttrAsMap(data[unix.SizeofRtMsg:])
	if err != nil {
		return nil
	}
	out := map[uint16][]byte{}
	for k, a := range attrs {
		out[k] = a.Value
	}
	return out
}

func routeTo(dst string) func([]byte) bool {
	p := netip.MustParsePrefix(dst)
	return func(data []byte) bool {
		a, ok := netip.AddrFromSlice(rtAttrs(data)[unix.RTA_DST])
		return ok && netip.PrefixFrom(a, int(nl.DeserializeRtMsg(data).Dst_len)) == p
	}
}

func routeInTable(table uint32) func([]byte) bool {
	return func(data []byte) bool {
		v := rtAttrs(data)[unix.RTA_TABLE]
		return len(v) == 4 && binary.NativeEndian.Uint32(v) == table
	}
}

func rulePriority(prio uint32) func([]byte) bool {
	return func(data []byte) bool {
		v := rtAttrs(data)[unix.FRA_PRIORITY]
		return len(v) == 4 && binary.NativeEndian.Uint32(v) == prio
	}
}
