//go:build e2e

// End-to-end tests: real packets through a namespace lab. Built only with the
// e2e tag (make test-e2e), so the plain `go test ./...` runs of test-unit and
// test-root neither run them twice nor skip them silently.
package lab_test

import (
	"context"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"os"
	"os/signal"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/dsr-agent/dsr-agent/internal/lab"
	"github.com/dsr-agent/dsr-agent/internal/netnstest"
)

func TestMain(m *testing.M) {
	// An interrupted run (Ctrl-C, CI cancel) must not leave namespaces
	// behind; t.Cleanup does not run when the process is killed by a signal.
	sig := make(chan os.Signal, 1)
	signal.Notify(sig, os.Interrupt, syscall.SIGTERM, syscall.SIGHUP)
	go func() {
		s := <-sig
		fmt.Fprintf(os.Stderr, "e2e: %v: tearing down labs\n", s)
		lab.CloseAll()
		os.Exit(1)
	}()
	// Hygiene: the lab must not touch the host's network namespace. Compared
	// only when root (the snapshot needs nft), around the whole run.
	var before *lab.HostState
	if os.Geteuid() == 0 {
		var err error
		if before, err = lab.SnapshotHost(); err != nil {
			fmt.Fprintf(os.Stderr, "e2e: host snapshot: %v\n", err)
			os.Exit(1)
		}
	}
	code := m.Run()
	lab.CloseAll()
	if before != nil {
		after, err := lab.SnapshotHost()
		if err != nil {
			fmt.Fprintf(os.Stderr, "e2e: host snapshot: %v\n", err)
			code = 1
		} else if d := before.Diff(after); d != "" {
			fmt.Fprintf(os.Stderr, "e2e: FAIL: the host's network state changed during the run:\n%s", d)
			code = 1
		} else {
			fmt.Printf("e2e: host links, addresses, routes, %d net sysctls and nftables ruleset unchanged\n", before.Sysctls())
		}
	}
	netnstest.RemoveBuiltAgent()
	os.Exit(code)
}

func agent(t *testing.T) *lab.Agent {
	t.Helper()
	return &lab.Agent{Bin: netnstest.AgentBinary(t), Dir: t.TempDir()}
}

type testLogWriter struct{ t *testing.T }

func (w testLogWriter) Write(b []byte) (int, error) {
	w.t.Log(strings.TrimRight(string(b), "\n"))
	return len(b), nil
}

// newLab builds a lab with HTTP servers running; it is torn down when the
// test ends, pass or fail.
func newLab(t *testing.T, servers int) (*lab.Lab, context.Context) {
	t.Helper()
	netnstest.RequireRoot(t)
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(cancel)
	log := slog.New(slog.NewTextHandler(testLogWriter{t}, &slog.HandlerOptions{Level: slog.LevelWarn}))
	l, err := lab.New(ctx, lab.Options{Servers: servers, Log: log})
	if err != nil {
		t.Fatalf("lab: %v", err)
	}
	t.Cleanup(func() {
		if err := l.Close(); err != nil {
			t.Errorf("lab teardown: %v", err)
		}
		for _, n := range append(l.Nodes(), l.Hub) {
			if _, err := os.Stat(filepath.Join("/run/netns", n.NS)); err == nil {
				t.Errorf("netns %s still exists after teardown", n.NS)
			}
		}
	})
	if err := l.Serve(ctx); err != nil {
		t.Fatalf("serve: %v", err)
	}
	return l, ctx
}

func family(v netip.Addr) string {
	if v.Is6() {
		return "ipv6"
	}
	return "ipv4"
}

// solicitVIP forgets the client's neighbour entry for vip and sends 20
// ARP requests (IPv4) or Neighbour Solicitations (IPv6) for it; the caller
// reads the answers from the returned prober and closes it.
func solicitVIP(t *testing.T, l *lab.Lab, vip netip.Addr) *lab.Prober {
	t.Helper()
	if err := l.FlushClientNeighbor(vip); err != nil {
		t.Fatal(err)
	}
	p, err := l.NewProber()
	if err != nil {
		t.Fatal(err)
	}
	for range 20 {
		if vip.Is6() {
			err = p.SendNS()
		} else {
			err = p.SendARP()
		}
		if err != nil {
			p.Close()
			t.Fatal(err)
		}
	}
	return p
}

// checkDSR is the core assertion: through the VIP, every real server answers;
// the director carries every client packet to the VIP and none of the
// replies; the VIP's ARP/NDP is answered by the director alone and the
// client's neighbour entry ends up on the director's MAC.
func checkDSR(t *testing.T, ctx context.Context, l *lab.Lab, vip netip.Addr, requests int) {
	t.Helper()
	// Explicit probes in addition to the client kernel's own resolution.
	p := solicitVIP(t, l, vip)
	defer p.Close()
	reqBefore, err := l.DirectorCounter(lab.CounterRequests)
	if err != nil {
		t.Fatal(err)
	}
	repBefore, err := l.DirectorCounter(lab.CounterReplies)
	if err != nil {
		t.Fatal(err)
	}
	sentBefore, err := l.ClientCounter(lab.CounterSent)
	if err != nil {
		t.Fatal(err)
	}
	recvBefore, err := l.ClientCounter(lab.CounterRecvd)
	if err != nil {
		t.Fatal(err)
	}

	hc := l.HTTPClient(5 * time.Second)
	perServer := map[string]int{}
	for i := range requests {
		name, _, err := l.Fetch(ctx, hc, vip)
		if err != nil {
			t.Fatalf("request %d of %d through VIP %s: %v", i+1, requests, vip, err)
		}
		perServer[name]++
	}
	t.Logf("%d requests to %s answered by %v", requests, vip, perServer)
	for _, rs := range l.Servers {
		if perServer[rs.Name] == 0 {
			t.Errorf("real server %s answered none of %d requests (per-flow hash should spread them): %v", rs.Name, requests, perServer)
		}
	}

	// The last FIN/ACK of a connection may still be on its way to the
	// director when Fetch returns: let the counters settle (bounded).
	var req, rep, sent, recv lab.Counter
	for deadline := time.Now().Add(2 * time.Second); ; {
		req, _ = l.DirectorCounter(lab.CounterRequests)
		rep, _ = l.DirectorCounter(lab.CounterReplies)
		sent, _ = l.ClientCounter(lab.CounterSent)
		recv, _ = l.ClientCounter(lab.CounterRecvd)
		req, rep, sent, recv = req.Sub(reqBefore), rep.Sub(repBefore), sent.Sub(sentBefore), recv.Sub(recvBefore)
		if req.Packets == sent.Packets || time.Now().After(deadline) {
			break
		}
		time.Sleep(20 * time.Millisecond)
	}
	t.Logf("client sent %v, director forwarded %v, client received %v, director saw replies %v", sent, req, recv, rep)
	if req.Packets != sent.Packets {
		t.Errorf("director forwarded %d packets to real servers, client sent %d to the VIP: want equal", req.Packets, sent.Packets)
	}
	if rep.Packets != 0 {
		t.Errorf("director saw %d reply packets from the VIP: replies must bypass it", rep.Packets)
	}
	if recv.Packets == 0 || recv.Bytes < uint64(requests*lab.ReplyPadding) {
		t.Errorf("client received %v from the VIP, want at least %d bytes", recv, requests*lab.ReplyPadding)
	}

	time.Sleep(50 * time.Millisecond) // in-flight answers
	ans, err := p.Answers()
	if err != nil {
		t.Fatal(err)
	}
	got := ans.ARP
	if vip.Is6() {
		got = ans.NA
	}
	if ans.Drops != 0 {
		t.Errorf("packet socket dropped %d frames: answers may be missing", ans.Drops)
	}
	if got[l.Director.MAC.String()] == 0 {
		t.Errorf("director never answered ARP/NDP for %s: %v", vip, got)
	}
	for m, n := range got {
		if m != l.Director.MAC.String() {
			t.Errorf("%s (%s) answered ARP/NDP for %s %d times: only the director may", l.NameOf(mustMAC(m)), m, vip, n)
		}
	}
	nmac, state, err := l.ClientNeighbor(vip)
	if err != nil {
		t.Fatal(err)
	}
	if nmac.String() != l.Director.MAC.String() {
		t.Errorf("client neighbour entry for %s: %s (%s, %s), want the director's %s", vip, nmac, l.NameOf(nmac), state, l.Director.MAC)
	}
}

func mustMAC(s string) net.HardwareAddr {
	m, _ := net.ParseMAC(s)
	return m
}

// TestByHand checks the lab itself with real servers set up the textbook way
// (sysctls + VIP on lo), independent of dsr-agent.
func TestByHand(t *testing.T) {
	l, ctx := newLab(t, 2)
	for _, rs := range l.Servers {
		if err := l.ConfigureByHand(rs, true, lab.VIP4, lab.VIP6); err != nil {
			t.Fatal(err)
		}
	}
	startUnbound(t, ctx, l, lab.UnboundOptions{})
	for _, vip := range []netip.Addr{lab.VIP4, lab.VIP6} {
		t.Run(family(vip), func(t *testing.T) { checkDSR(t, ctx, l, vip, 30) })
		t.Run("dns-"+family(vip), func(t *testing.T) { checkDNS(t, ctx, l, vip, lab.DNSPort, 30) })
	}
}

// TestModes: each dsr-agent mode, IPv4 and IPv6, real servers configured only
// by `dsr-agent apply` run inside their namespaces.
func TestModes(t *testing.T) {
	for _, mode := range lab.Modes {
		t.Run(string(mode), func(t *testing.T) {
			a := agent(t)
			l, ctx := newLab(t, 2)
			// DNS: unbound with interface-automatic (answers from the VIP);
			// in firewalld mode only on the redirect's target port, so a
			// redirect to the wrong port fails.
			dnsPorts := []int{lab.DNSPort}
			if mode == lab.ModeFirewalld {
				dnsPorts = []int{lab.DNSRedirectPort}
			}
			startUnbound(t, ctx, l, lab.UnboundOptions{Ports: dnsPorts})
			for _, rs := range l.Servers {
				r, err := a.Apply(ctx, rs, mode, lab.VIP4, lab.VIP6)
				if err != nil {
					t.Fatalf("apply: %v", err)
				}
				t.Logf("%s: dsr-agent apply (%v):\n%s", rs.Name, r.Took.Round(time.Millisecond), r.Output)
				if r, err := a.Run(ctx, rs, "status"); err != nil {
					t.Errorf("status right after apply: %v\n%s", err, r.Output)
				}
			}
			for _, vip := range []netip.Addr{lab.VIP4, lab.VIP6} {
				t.Run(family(vip), func(t *testing.T) { checkDSR(t, ctx, l, vip, 30) })
				t.Run("dns-"+family(vip), func(t *testing.T) { checkDNS(t, ctx, l, vip, lab.DNSPort, 30) })
			}
			for _, rs := range l.Servers {
				if _, err := a.Remove(ctx, rs); err != nil {
					t.Errorf("remove: %v", err)
				}
				for _, vip := range []netip.Addr{lab.VIP4, lab.VIP6} {
					if dev, ok, err := lab.HasAddr(rs, vip); err != nil || ok {
						t.Errorf("%s: VIP %s still on %s after remove (err %v)", rs.Name, vip, dev, err)
					}
				}
			}
		})
	}
}

// TestNegativeControl proves the checks above can fail: a real server with
// the VIP on lo but no ARP suppression answers ARP for the VIP (ARP flux),
// and one with the IPv6 VIP on its NIC answers Neighbour Solicitations.
func TestNegativeControl(t *testing.T) {
	l, _ := newLab(t, 2)
	bad, good := l.Servers[0], l.Servers[1]
	if err := l.ConfigureByHand(bad, false, lab.VIP4); err != nil {
		t.Fatal(err)
	}
	if err := l.AddVIPToNIC(bad, lab.VIP6); err != nil {
		t.Fatal(err)
	}
	if err := l.ConfigureByHand(good, true, lab.VIP4, lab.VIP6); err != nil {
		t.Fatal(err)
	}
	for _, vip := range []netip.Addr{lab.VIP4, lab.VIP6} {
		t.Run(family(vip), func(t *testing.T) {
			p := solicitVIP(t, l, vip)
			defer p.Close()
			time.Sleep(100 * time.Millisecond)
			ans, err := p.Answers()
			if err != nil {
				t.Fatal(err)
			}
			got := ans.ARP
			if vip.Is6() {
				got = ans.NA
			}
			t.Logf("answers for %s by source MAC: %v (director %s, %s %s)", vip, got, l.Director.MAC, bad.Name, bad.MAC)
			if got[bad.MAC.String()] == 0 || len(got) < 2 {
				t.Errorf("negative control did not show ARP flux: want answers from the director and from %s, got %v", bad.Name, got)
			}
			if got[good.MAC.String()] != 0 {
				t.Errorf("%s (with ARP suppression) answered: %v", good.Name, got)
			}
		})
	}
}

// blastInterval paces the ARP/NS probes of the window tests: one ARP request
// and one NS every 50µs.
const blastInterval = 50 * time.Microsecond

// probeDuring runs cycles of fn on a real server while the client solicits
// the VIPs without pause, and returns what answered.
func probeDuring(t *testing.T, ctx context.Context, l *lab.Lab, cycles int, fn func(i int) error) lab.Answers {
	t.Helper()
	p, err := l.NewProber()
	if err != nil {
		t.Fatal(err)
	}
	defer p.Close()
	bctx, stop := context.WithCancel(ctx)
	defer stop()
	blastErr := make(chan error, 1)
	go func() { blastErr <- p.Blast(bctx, blastInterval, true, true) }()
	start := time.Now()
	for i := range cycles {
		if err := fn(i); err != nil {
			t.Fatalf("cycle %d: %v", i, err)
		}
	}
	took := time.Since(start)
	time.Sleep(20 * time.Millisecond)
	stop()
	if err := <-blastErr; err != nil {
		t.Fatal(err)
	}
	time.Sleep(50 * time.Millisecond) // answers in flight
	ans, err := p.Answers()
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("%d cycles in %v; sent %d ARP requests and %d NS (%.0f/s each); ARP answers %v, NA answers %v, drops %d",
		cycles, took.Round(time.Millisecond), ans.SentARP, ans.SentNS, float64(ans.SentARP)/took.Seconds(), ans.ARP, ans.NA, ans.Drops)
	// The probe must have been live the whole time, or "no answer" means nothing.
	d := l.Director.MAC.String()
	if ans.ARP[d] < ans.SentARP*9/10 || ans.NA[d] < ans.SentNS*9/10 {
		t.Errorf("director answered only %d of %d ARP and %d of %d NS: the probe was not live", ans.ARP[d], ans.SentARP, ans.NA[d], ans.SentNS)
	}
	if ans.Drops != 0 {
		t.Errorf("packet socket dropped %d frames: an answer may have been missed", ans.Drops)
	}
	return ans
}

// TestNoARPWindow: while apply, a mode switch (both directions) and remove
// run over and over on a real server, the client solicits the VIPs without
// pause; that server must never answer, not once.
func TestNoARPWindow(t *testing.T) {
	const cycles = 50
	a := agent(t)
	l, ctx := newLab(t, 2)
	rs := l.Servers[0]
	runs := 0
	ans := probeDuring(t, ctx, l, cycles, func(i int) error {
		first, second := lab.ModeLoopback, lab.ModeARPTables
		if i%2 == 1 {
			first, second = second, first
		}
		for _, m := range []lab.Mode{first, second} {
			if _, err := a.Apply(ctx, rs, m, lab.VIP4, lab.VIP6); err != nil {
				return fmt.Errorf("apply %s: %w", m, err)
			}
			runs++
			// Otherwise the test could pass because nothing was ever configured.
			if _, ok, err := lab.HasAddr(rs, lab.VIP4); err != nil || !ok {
				return fmt.Errorf("after apply %s the VIP is not on %s (err %v)", m, rs.Name, err)
			}
		}
		if _, err := a.Remove(ctx, rs); err != nil {
			return fmt.Errorf("remove: %w", err)
		}
		runs++
		if _, ok, err := lab.HasAddr(rs, lab.VIP4); err != nil || ok {
			return fmt.Errorf("after remove the VIP is still on %s (err %v)", rs.Name, err)
		}
		return nil
	})
	t.Logf("%d dsr-agent runs (apply, switch, remove) on %s", runs, rs.Name)
	if n := ans.ARP[rs.MAC.String()]; n != 0 {
		t.Errorf("%s answered ARP for the VIP %d times during apply/switch/remove", rs.Name, n)
	}
	if n := ans.NA[rs.MAC.String()]; n != 0 {
		t.Errorf("%s answered NDP for the VIP %d times during apply/switch/remove", rs.Name, n)
	}
}

// TestNoARPWindowDetectsBadOrder is the window test's own negative control:
// a configurator that adds the VIP 1ms before turning on ARP suppression (the
// wrong order) must be caught. It shows the probe's time resolution is good
// enough to see a window of that size.
func TestNoARPWindowDetectsBadOrder(t *testing.T) {
	l, ctx := newLab(t, 2)
	rs := l.Servers[0]
	ans := probeDuring(t, ctx, l, 10, func(int) error {
		if err := l.ConfigureByHand(rs, false, lab.VIP4); err != nil {
			return err
		}
		time.Sleep(time.Millisecond)
		if err := l.ConfigureByHand(rs, true); err != nil {
			return err
		}
		time.Sleep(2 * time.Millisecond)
		return l.UnconfigureByHand(rs, lab.VIP4)
	})
	if ans.ARP[rs.MAC.String()] == 0 {
		t.Errorf("a 1ms window with the VIP on lo and no ARP suppression went unnoticed: the window test is blind")
	}
}

// startUnbound runs Debian's unbound on every real server until the test
// ends (stopped before the lab is torn down: cleanups run last-in first-out).
func startUnbound(t *testing.T, ctx context.Context, l *lab.Lab, o lab.UnboundOptions) {
	t.Helper()
	dir := t.TempDir()
	for _, rs := range l.Servers {
		start := time.Now()
		u, err := lab.StartUnbound(ctx, rs, filepath.Join(dir, rs.Name), o)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(u.Stop)
		t.Logf("%s: unbound (%s) answering after %v", rs.Name, unboundKind(o), time.Since(start).Round(time.Millisecond))
	}
}

func unboundKind(o lab.UnboundOptions) string {
	if len(o.Addresses) > 0 {
		return fmt.Sprintf("interface %v port %v", o.Addresses, o.Ports)
	}
	if o.Wildcard {
		return fmt.Sprintf("interface 0.0.0.0/:: port %v, no interface-automatic", o.Ports)
	}
	return fmt.Sprintf("interface-automatic, ports %v", o.Ports)
}

// dnsRound is one burst of n queries from n client sockets to vip:port, with
// the director's and the client's UDP counters and a capture of every UDP
// datagram that reached the client.
type dnsRound struct {
	results                   []lab.DNSResult
	answered                  map[string]int // server name → valid answers
	failed                    int
	firstErr                  error
	sent, fwd, recv, dirSawRe lab.Counter
	wire                      map[lab.UDPSource]int
}

func queryVIP(t *testing.T, ctx context.Context, l *lab.Lab, vip netip.Addr, port uint16, n int, timeout time.Duration) dnsRound {
	t.Helper()
	p, err := l.NewProber()
	if err != nil {
		t.Fatal(err)
	}
	defer p.Close()
	snap := func() [4]lab.Counter {
		var c [4]lab.Counter
		for i, get := range []func() (lab.Counter, error){
			func() (lab.Counter, error) { return l.ClientCounter(lab.CounterSentUDP) },
			func() (lab.Counter, error) { return l.DirectorCounter(lab.CounterRequestsUDP) },
			func() (lab.Counter, error) { return l.ClientCounter(lab.CounterRecvdUDP) },
			func() (lab.Counter, error) { return l.DirectorCounter(lab.CounterRepliesUDP) },
		} {
			if c[i], err = get(); err != nil {
				t.Fatal(err)
			}
		}
		return c
	}
	before := snap()
	res, err := l.QueryDNS(ctx, netip.AddrPortFrom(vip, port), n, timeout)
	if err != nil {
		t.Fatal(err)
	}
	// Wait (bounded) until the capture has seen one answer per query: the
	// answers the client dropped may still be on their way; then a moment
	// for strays.
	var ans lab.Answers
	for deadline := time.Now().Add(2 * time.Second); ; {
		if ans, err = p.Answers(); err != nil {
			t.Fatal(err)
		}
		total := 0
		for _, c := range ans.UDP {
			total += c
		}
		if total >= n || time.Now().After(deadline) {
			break
		}
		time.Sleep(10 * time.Millisecond)
	}
	time.Sleep(20 * time.Millisecond)
	if ans, err = p.Answers(); err != nil {
		t.Fatal(err)
	}
	after := snap()
	if ans.Drops != 0 {
		t.Errorf("packet socket dropped %d frames: the capture is incomplete", ans.Drops)
	}
	r := dnsRound{results: res, answered: map[string]int{}, wire: ans.UDP,
		sent: after[0].Sub(before[0]), fwd: after[1].Sub(before[1]), recv: after[2].Sub(before[2]), dirSawRe: after[3].Sub(before[3])}
	for _, q := range res {
		if q.Err != nil {
			r.failed++
			if r.firstErr == nil {
				r.firstErr = fmt.Errorf("query from %s: %w", q.Local, q.Err)
			}
			continue
		}
		r.answered[q.Server]++
	}
	t.Logf("%d queries to %s: answered by %v, %d failed (first: %v); client sent %v, director forwarded %v and saw replies %v, client received from the VIP %v; on the wire: %s",
		n, netip.AddrPortFrom(vip, port), r.answered, r.failed, r.firstErr, r.sent, r.fwd, r.dirSawRe, r.recv, wireString(l, r.wire))
	return r
}

func wireString(l *lab.Lab, w map[lab.UDPSource]int) string {
	var parts []string
	for k, n := range w {
		parts = append(parts, fmt.Sprintf("%d from %s via %s", n, k.Addr, l.NameOf(mustMAC(k.MAC))))
	}
	slices.Sort(parts)
	return "[" + strings.Join(parts, ", ") + "]"
}

// checkDNS: through the VIP, every query gets a valid answer naming a real
// server, and every server answers some; the director forwarded exactly the
// client's datagrams and saw none of the answers; on the wire, every answer
// came from the VIP with the Ethernet source of the server it names (straight
// from that server, not via the director).
func checkDNS(t *testing.T, ctx context.Context, l *lab.Lab, vip netip.Addr, port uint16, n int) {
	t.Helper()
	r := queryVIP(t, ctx, l, vip, port, n, 3*time.Second)
	if r.failed != 0 {
		t.Errorf("%d of %d queries to %s got no valid answer; first: %v", r.failed, n, vip, r.firstErr)
	}
	for _, rs := range l.Servers {
		if r.answered[rs.Name] == 0 {
			t.Errorf("real server %s answered none of %d queries (per-flow hash should spread them): %v", rs.Name, n, r.answered)
		}
	}
	if r.sent.Packets != uint64(n) || r.fwd.Packets != r.sent.Packets {
		t.Errorf("client sent %d datagrams to the VIP, director forwarded %d: want %d each", r.sent.Packets, r.fwd.Packets, n)
	}
	if r.dirSawRe.Packets != 0 {
		t.Errorf("director saw %d UDP packets from the VIP: replies must bypass it", r.dirSawRe.Packets)
	}
	if r.recv.Packets != uint64(n) {
		t.Errorf("client received %d UDP datagrams from the VIP, want %d", r.recv.Packets, n)
	}
	for _, rs := range l.Servers {
		k := lab.UDPSource{MAC: rs.MAC.String(), Addr: netip.AddrPortFrom(vip, port)}
		if got := r.wire[k]; got != r.answered[rs.Name] {
			t.Errorf("%d answers from %s with %s's MAC on the wire, but %s named itself in %d answers", got, k.Addr, rs.Name, rs.Name, r.answered[rs.Name])
		}
	}
	if got := r.wire[lab.UDPSource{MAC: l.Director.MAC.String(), Addr: netip.AddrPortFrom(vip, port)}]; got != 0 {
		t.Errorf("%d answers reached the client from the director's MAC", got)
	}
}

// checkDNSWrongSource is the pitfall: the servers do answer every query, but
// from their own address instead of the VIP, so the client (a connected
// socket, like any stub resolver) accepts none of them.
func checkDNSWrongSource(t *testing.T, ctx context.Context, l *lab.Lab, vip netip.Addr, port uint16, n int) {
	t.Helper()
	r := queryVIP(t, ctx, l, vip, port, n, 300*time.Millisecond)
	if r.failed != n {
		t.Errorf("%d of %d queries got an answer: want none (a reply from the real IP must be dropped)", n-r.failed, n)
	}
	if r.fwd.Packets != uint64(n) || r.sent.Packets != uint64(n) {
		t.Errorf("client sent %d datagrams, director forwarded %d: want %d each (the queries did reach the servers)", r.sent.Packets, r.fwd.Packets, n)
	}
	if r.recv.Packets != 0 {
		t.Errorf("client received %d datagrams from the VIP, want 0", r.recv.Packets)
	}
	total := 0
	for _, rs := range l.Servers {
		ip := rs.IP4
		if vip.Is6() {
			ip = rs.IP6
		}
		got := r.wire[lab.UDPSource{MAC: rs.MAC.String(), Addr: netip.AddrPortFrom(ip, port)}]
		if got == 0 {
			t.Errorf("no answer from %s's own address %s on the wire: the capture does not show the pitfall", rs.Name, ip)
		}
		total += got
	}
	if total != n {
		t.Errorf("%d answers from the servers' own addresses on the wire, want one per query (%d): %s", total, n, wireString(l, r.wire))
	}
}

// TestUDPSourcePitfall shows the classic DNS-over-DSR mistake and its fix, on
// servers set up by hand (VIP on lo, ARP suppressed) and on dsr-agent's
// firewalld mode:
//   - go-naive: the lab's Go DNS server on the wildcard without IP_PKTINFO:
//     every query is answered, from the real server's own address; the client
//     drops every answer.
//   - go-pktinfo: the same server with IP_PKTINFO / IPV6_RECVPKTINFO, replying
//     from each query's destination: every answer arrives, from the VIP.
//   - unbound-wildcard: unbound with `interface: 0.0.0.0` and `::`: the same
//     mistake in a real server. (unbound-automatic, the fix, is what
//     TestByHand and TestModes run.)
//   - unbound-vip: unbound bound to the VIPs (`interface: 10.77.0.100`):
//     the other fix, where the VIP is a local address.
//   - firewalld: with dsr-agent's redirect, go-naive on the redirect's port
//     works: the redirect's conntrack entry rewrites the answer's source back
//     to the VIP.
func TestUDPSourcePitfall(t *testing.T) {
	const n = 16
	t.Run("by-hand", func(t *testing.T) {
		l, ctx := newLab(t, 2)
		for _, rs := range l.Servers {
			if err := l.ConfigureByHand(rs, true, lab.VIP4, lab.VIP6); err != nil {
				t.Fatal(err)
			}
			if err := l.ServeDNS(ctx, rs, 5300, false); err != nil {
				t.Fatal(err)
			}
			if err := l.ServeDNS(ctx, rs, 5301, true); err != nil {
				t.Fatal(err)
			}
		}
		startUnbound(t, ctx, l, lab.UnboundOptions{Ports: []int{5302}, Wildcard: true})
		startUnbound(t, ctx, l, lab.UnboundOptions{Ports: []int{5303}, Addresses: []netip.Addr{lab.VIP4, lab.VIP6}})
		for _, vip := range []netip.Addr{lab.VIP4, lab.VIP6} {
			t.Run("go-naive/"+family(vip), func(t *testing.T) { checkDNSWrongSource(t, ctx, l, vip, 5300, n) })
			t.Run("go-pktinfo/"+family(vip), func(t *testing.T) { checkDNS(t, ctx, l, vip, 5301, n) })
			t.Run("unbound-wildcard/"+family(vip), func(t *testing.T) { checkDNSWrongSource(t, ctx, l, vip, 5302, n) })
			t.Run("unbound-vip/"+family(vip), func(t *testing.T) { checkDNS(t, ctx, l, vip, 5303, n) })
		}
	})
	t.Run("firewalld", func(t *testing.T) {
		a := agent(t)
		l, ctx := newLab(t, 2)
		for _, rs := range l.Servers {
			if err := l.ServeDNS(ctx, rs, lab.DNSRedirectPort, false); err != nil {
				t.Fatal(err)
			}
			if _, err := a.Apply(ctx, rs, lab.ModeFirewalld, lab.VIP4, lab.VIP6); err != nil {
				t.Fatalf("apply: %v", err)
			}
		}
		for _, vip := range []netip.Addr{lab.VIP4, lab.VIP6} {
			t.Run("go-naive/"+family(vip), func(t *testing.T) { checkDNS(t, ctx, l, vip, lab.DNSPort, n) })
		}
		for _, rs := range l.Servers {
			if _, err := a.Remove(ctx, rs); err != nil {
				t.Errorf("remove: %v", err)
			}
		}
	})
}
