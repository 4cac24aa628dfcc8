package probe_test

import (
	"context"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/vishvananda/netlink"

	"github.com/dsr-agent/dsr-agent/internal/lab"
	"github.com/dsr-agent/dsr-agent/internal/netnstest"
	"github.com/dsr-agent/dsr-agent/probe"
)

// The lab (internal/lab): a director owning the VIPs on a bridge with real
// servers rs1 and rs2, both configured by hand as correct DSR real servers
// (VIP on lo, arp_ignore 1, arp_announce 2). Each fault is injected on rs1
// alone, probed from the director's namespace, and undone; rs2 must stay up.

const (
	portRealOnly = 8081 // rs1 listens on its own IP only, rs2 on the wildcard
	portDNS      = 5300 // rs1: wildcard UDP without pktinfo; rs2 with
)

type probeLab struct {
	*lab.Lab
	ctx context.Context
}

func newProbeLab(t *testing.T) *probeLab { return newProbeLabB(t) }

func newProbeLabB(t testing.TB) *probeLab {
	t.Helper()
	if testing.Short() {
		t.Skip("a namespace lab: test-root runs it")
	}
	netnstest.RequireRoot(t)
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(cancel)
	l, err := lab.New(ctx, lab.Options{Servers: 2, Log: slog.New(slog.DiscardHandler)})
	if err != nil {
		t.Fatalf("lab: %v", err)
	}
	t.Cleanup(func() {
		if err := l.Close(); err != nil {
			t.Errorf("lab teardown: %v", err)
		}
	})
	// A fresh veth drops what it is given until the kernel's link watch
	// has seen its carrier (asynchronously): wait for every NIC to be up.
	deadline := time.Now().Add(10 * time.Second)
	for _, n := range l.Nodes() {
		for {
			link, err := n.Link()
			if err != nil {
				t.Fatal(err)
			}
			if link.Attrs().OperState == netlink.OperUp {
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("%s: %s never came up (%s)", n.Name, lab.NIC, link.Attrs().OperState)
			}
			runtime.Gosched()
		}
	}
	if err := l.Serve(ctx); err != nil {
		t.Fatalf("serve: %v", err)
	}
	for _, rs := range l.Servers {
		if err := l.ConfigureByHand(rs, true, lab.VIP4, lab.VIP6); err != nil {
			t.Fatal(err)
		}
	}
	// rs1: a service bound to its own addresses only (the classic mistake);
	// rs2: the same service on the wildcard.
	for i, rs := range l.Servers {
		addrs := []string{"[::]"}
		if i == 0 {
			addrs = []string{rs.IP4.String(), "[" + rs.IP6.String() + "]"}
		}
		for _, a := range addrs {
			var ln net.Listener
			if err := rs.Do(func() (err error) {
				ln, err = net.Listen("tcp", fmt.Sprintf("%s:%d", a, portRealOnly))
				return err
			}); err != nil {
				t.Fatal(err)
			}
			go func() {
				for {
					c, err := ln.Accept()
					if err != nil {
						return
					}
					c.Close()
				}
			}()
			t.Cleanup(func() { ln.Close() })
		}
	}
	if err := l.ServeDNS(ctx, l.Servers[0], portDNS, false); err != nil {
		t.Fatal(err)
	}
	if err := l.ServeDNS(ctx, l.Servers[1], portDNS, true); err != nil {
		t.Fatal(err)
	}
	return &probeLab{Lab: l, ctx: ctx}
}

func realOf(rs *lab.Node, vip netip.Addr) netip.Addr {
	if vip.Is4() {
		return rs.IP4
	}
	return rs.IP6
}

// probe runs one probe from the director's namespace.
func (l *probeLab) probe(t *testing.T, rs *lab.Node, vip netip.Addr, port uint16, proto probe.Proto) *probe.Result {
	t.Helper()
	var res *probe.Result
	err := l.Director.Do(func() error {
		var err error
		res, err = probe.Probe(l.ctx, probe.Config{
			Target: netip.AddrPortFrom(vip, port), Real: realOf(rs, vip), Encap: probe.Encap{Kind: probe.L2},
			Proto: proto, Timeout: 500 * time.Millisecond,
		})
		return err
	})
	if err != nil {
		t.Fatalf("probe %s via %s: %v", vip, rs.Name, err)
	}
	t.Logf("%s: %s (arp answers %v)", rs.Name, res.Explanation, res.ARPAnswers)
	return res
}

// nft runs an nft script in rs's namespace.
func nft(t *testing.T, rs *lab.Node, script string) {
	t.Helper()
	cmd := exec.Command("ip", "netns", "exec", rs.NS, "nft", "-f", "-")
	cmd.Stdin = strings.NewReader(script)
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("nft in %s: %v\n%s\n%s", rs.Name, err, out, script)
	}
}

func ipCmd(t testing.TB, n *lab.Node, args ...string) string {
	t.Helper()
	out, err := exec.Command("ip", append([]string{"netns", "exec", n.NS}, args...)...).CombinedOutput()
	if err != nil {
		t.Fatalf("%s in %s: %v\n%s", strings.Join(args, " "), n.Name, err, out)
	}
	return string(out)
}

func family(v netip.Addr) string {
	if v.Is4() {
		return "ip"
	}
	return "ip6"
}

// fault is one misconfiguration of rs1 with the verdict it must produce.
type fault struct {
	name   string
	port   uint16
	proto  probe.Proto
	want   probe.Verdict
	inject func(t *testing.T, l *probeLab, rs *lab.Node, vip netip.Addr)
	undo   func(t *testing.T, l *probeLab, rs *lab.Node, vip netip.Addr)
}

var faults = []fault{
	{name: "healthy", port: lab.ServicePort, proto: probe.TCP, want: probe.Up},
	{name: "service on the real IP only", port: portRealOnly, proto: probe.TCP, want: probe.Refused},
	{name: "nftables reject on VIP:80", port: lab.ServicePort, proto: probe.TCP, want: probe.Unreachable,
		inject: func(t *testing.T, _ *probeLab, rs *lab.Node, vip netip.Addr) {
			nft(t, rs, fmt.Sprintf("table inet probefault {\n chain in {\n type filter hook input priority 0;\n %s daddr %s tcp dport %d reject\n }\n}\n", family(vip), vip, lab.ServicePort))
		},
		undo: func(t *testing.T, _ *probeLab, rs *lab.Node, _ netip.Addr) {
			nft(t, rs, "delete table inet probefault\n")
		}},
	{name: "nftables drop on VIP:80", port: lab.ServicePort, proto: probe.TCP, want: probe.Timeout,
		inject: func(t *testing.T, _ *probeLab, rs *lab.Node, vip netip.Addr) {
			nft(t, rs, fmt.Sprintf("table inet probefault {\n chain in {\n type filter hook input priority 0;\n %s daddr %s tcp dport %d drop\n }\n}\n", family(vip), vip, lab.ServicePort))
		},
		undo: func(t *testing.T, _ *probeLab, rs *lab.Node, _ netip.Addr) {
			nft(t, rs, "delete table inet probefault\n")
		}},
	{name: "VIP deleted", port: lab.ServicePort, proto: probe.TCP, want: probe.Timeout,
		inject: func(t *testing.T, _ *probeLab, rs *lab.Node, vip netip.Addr) {
			ipCmd(t, rs, "ip", "addr", "del", netip.PrefixFrom(vip, vip.BitLen()).String(), "dev", "lo")
		},
		undo: func(t *testing.T, _ *probeLab, rs *lab.Node, vip netip.Addr) {
			ipCmd(t, rs, "ip", "addr", "add", netip.PrefixFrom(vip, vip.BitLen()).String(), "dev", "lo")
		}},
	{name: "ARP flux", port: lab.ServicePort, proto: probe.TCP, want: probe.ARPFlux,
		// IPv4: arp_ignore 0 (the VIP on lo is answered for); IPv6 has no
		// arp_ignore — a VIP on the NIC is what makes a server answer NDP.
		inject: func(t *testing.T, l *probeLab, rs *lab.Node, vip netip.Addr) {
			if vip.Is4() {
				ipCmd(t, rs, "sysctl", "-qw", "net.ipv4.conf.all.arp_ignore=0", "net.ipv4.conf.eth0.arp_ignore=0")
				return
			}
			if err := l.AddVIPToNIC(rs, vip); err != nil {
				t.Fatal(err)
			}
			// The kernel joins the VIP's solicited-node group from a work
			// queue after the address is added; until then rs ignores NS.
			b := vip.As16()
			group := netip.AddrFrom16([16]byte{0: 0xff, 1: 0x02, 11: 1, 12: 0xff, 13: b[13], 14: b[14], 15: b[15]}).String()
			deadline := time.Now().Add(5 * time.Second)
			for !strings.Contains(ipCmd(t, rs, "ip", "-6", "maddr", "show", "dev", lab.NIC), group) {
				if time.Now().After(deadline) {
					t.Fatalf("%s never joined %s", rs.Name, group)
				}
				runtime.Gosched()
			}
		},
		undo: func(t *testing.T, _ *probeLab, rs *lab.Node, vip netip.Addr) {
			if vip.Is4() {
				ipCmd(t, rs, "sysctl", "-qw", "net.ipv4.conf.all.arp_ignore=1", "net.ipv4.conf.eth0.arp_ignore=1")
				return
			}
			ipCmd(t, rs, "ip", "addr", "del", netip.PrefixFrom(vip, vip.BitLen()).String(), "dev", lab.NIC)
		}},
	{name: "UDP on the wildcard without pktinfo", port: portDNS, proto: probe.UDP, want: probe.WrongSource},
}

// captureTo records the frames of the probes until the returned stop is
// called into $PROBE_CAPTURE/NAME-KIND-N.json (the testdata of
// packet_test.go was recorded so: PROBE_CAPTURE=$PWD/testdata/captured).
func captureTo(t *testing.T, name string) (stop func()) {
	dir := os.Getenv("PROBE_CAPTURE")
	if dir == "" {
		return func() {}
	}
	name = regexp.MustCompile(`[^a-z0-9]+`).ReplaceAllString(strings.ToLower(name), "-")
	n := 0
	probe.SetCapture(func(kind string, f *probe.Flow, frame []byte) {
		n++
		b, err := json.MarshalIndent(probe.Captured{Kind: kind, Flow: *f, Frame: hex.EncodeToString(frame)}, "", "  ")
		if err == nil {
			err = os.WriteFile(filepath.Join(dir, fmt.Sprintf("%s-%d-%s.json", name, n, kind)), append(b, '\n'), 0o644)
		}
		if err != nil {
			t.Errorf("capture: %v", err)
		}
	})
	return func() { probe.SetCapture(nil) }
}

// directorState is what the probe must not change on the director:
// addresses, links, routes of every table, policy rules, neighbour entries
// (address and MAC; the kernel's own state transitions are not ours) and the
// nftables ruleset (without counter values, which the lab's counters change).
func directorState(t *testing.T, l *probeLab) string {
	t.Helper()
	var b strings.Builder
	for _, args := range [][]string{
		{"ip", "-d", "link", "show"}, {"ip", "addr", "show"},
		{"ip", "-4", "route", "show", "table", "all"}, {"ip", "-6", "route", "show", "table", "all"},
		{"ip", "-4", "rule", "show"}, {"ip", "-6", "rule", "show"},
		{"ip", "-4", "neigh", "show"}, {"ip", "-6", "neigh", "show"},
		{"nft", "list", "ruleset"},
	} {
		b.WriteString(ipCmd(t, l.Director, args...))
	}
	s := regexp.MustCompile(`packets \d+ bytes \d+`).ReplaceAllString(b.String(), "")
	s = regexp.MustCompile(`(?m)\s(REACHABLE|STALE|DELAY|PROBE)\s*$`).ReplaceAllString(s, "")
	// Link statistics and lifetimes move on their own.
	s = regexp.MustCompile(`(valid_lft|preferred_lft) \S+`).ReplaceAllString(s, "")
	return s
}

// warmNeighbours lets the director's kernel learn the real servers the way
// any traffic would (their answers to the probe make them ask for the
// director's address, and the kernel records the asker): after this the
// neighbour table is in the steady state the before/after comparison needs.
func warmNeighbours(t testing.TB, l *probeLab) {
	t.Helper()
	for _, rs := range l.Servers {
		for _, a := range []netip.Addr{l.Director.IP4, l.Director.IP6} {
			// Up to 5 echo requests: the first may go while the lab's
			// neighbours are still being resolved on a loaded machine.
			ipCmd(t, rs, "ping", "-c5", "-i0.2", "-w5", "-A", "-W1", "-q", a.String())
		}
	}
}

func TestFaultsL2(t *testing.T) {
	l := newProbeLab(t)
	warmNeighbours(t, l)
	before := directorState(t, l)
	rs1, rs2 := l.Servers[0], l.Servers[1]
	for _, vip := range []netip.Addr{lab.VIP4, lab.VIP6} {
		for _, f := range faults {
			t.Run(fmt.Sprintf("%s/%s", family(vip), f.name), func(t *testing.T) {
				if f.inject != nil {
					f.inject(t, l, rs1, vip)
					defer f.undo(t, l, rs1, vip)
				}
				stopCapture := captureTo(t, fmt.Sprintf("%s-%s", family(vip), f.name))
				got := l.probe(t, rs1, vip, f.port, f.proto)
				stopCapture()
				if got.Verdict != f.want {
					t.Errorf("rs1 with %q: verdict %s, want %s (%s)", f.name, got.Verdict, f.want, got.Explanation)
				}
				if got.Verdict.ExitCode() == probe.ExitUsage {
					t.Errorf("verdict %s has the usage exit code", got.Verdict)
				}
				switch f.want {
				case probe.WrongSource:
					if got.From != rs1.IP4.String() && got.From != rs1.IP6.String() {
						t.Errorf("wrong-source answer from %s, want rs1's own address", got.From)
					}
				case probe.ARPFlux:
					if !strings.Contains(got.Explanation, rs1.MAC.String()) {
						t.Errorf("arp-flux explanation does not name rs1's MAC %s: %s", rs1.MAC, got.Explanation)
					}
				case probe.Up:
					if got.MSS == 0 || got.Window == 0 || got.RTT <= 0 {
						t.Errorf("up without MSS, window or RTT: %+v", got)
					}
				}
				if ok := l.probe(t, rs2, vip, f.port, f.proto); ok.Verdict != probe.Up {
					t.Errorf("healthy rs2 while rs1 has %q: verdict %s, want up (%s)", f.name, ok.Verdict, ok.Explanation)
				}
			})
		}
	}
	if after := directorState(t, l); after != before {
		t.Errorf("the director's state changed:\n--- before\n%s\n--- after\n%s", before, after)
	}
}

// TestResolvesWithoutNeighbourEntry: with the director's neighbour table
// empty for the real server, the probe resolves the MAC itself (ARP / NDP)
// and leaves no entry behind.
func TestResolvesWithoutNeighbourEntry(t *testing.T) {
	l := newProbeLab(t)
	rs := l.Servers[1]
	for _, vip := range []netip.Addr{lab.VIP4, lab.VIP6} {
		ipCmd(t, l.Director, "ip", "neigh", "flush", "dev", lab.NIC)
		// rs must not ask for the director either, or the kernel learns it
		// from that request: give rs a permanent entry for the director.
		for _, a := range []netip.Addr{l.Director.IP4, l.Director.IP6} {
			ipCmd(t, rs, "ip", "neigh", "replace", a.String(), "lladdr", l.Director.MAC.String(), "dev", lab.NIC, "nud", "permanent")
		}
		res := l.probe(t, rs, vip, lab.ServicePort, probe.TCP)
		if res.Verdict != probe.Up || res.NextHopMAC != rs.MAC.String() {
			t.Fatalf("probe without a neighbour entry: %s via MAC %s, want up via %s", res.Verdict, res.NextHopMAC, rs.MAC)
		}
		if out := ipCmd(t, l.Director, "ip", "neigh", "show", realOf(rs, vip).String()); strings.TrimSpace(out) != "" {
			t.Errorf("the probe left a neighbour entry on the director: %s", out)
		}
	}
}

// TestBadInput: bad input is an ErrUsage error naming the field, and nothing
// is sent.
func TestBadInput(t *testing.T) {
	for _, c := range []struct {
		cfg  probe.Config
		want string
	}{
		{probe.Config{Real: netip.MustParseAddr("10.0.0.1"), Encap: probe.Encap{Kind: probe.L2}, Proto: probe.TCP}, "VIP:PORT"},
		{probe.Config{Target: netip.MustParseAddrPort("10.0.0.9:80"), Encap: probe.Encap{Kind: probe.L2}, Proto: probe.TCP}, "--real"},
		{probe.Config{Target: netip.MustParseAddrPort("10.0.0.9:80"), Real: netip.MustParseAddr("fd00::1"), Encap: probe.Encap{Kind: probe.L2}, Proto: probe.TCP}, "family"},
		{probe.Config{Target: netip.MustParseAddrPort("10.0.0.9:80"), Real: netip.MustParseAddr("10.0.0.1"), Encap: probe.Encap{Kind: probe.L2}, Proto: "sctp"}, "--proto"},
		{probe.Config{Target: netip.MustParseAddrPort("10.0.0.9:80"), Real: netip.MustParseAddr("10.0.0.1"), Encap: probe.Encap{Kind: probe.GUE}, Proto: probe.TCP}, "gue:PORT"},
	} {
		_, err := probe.Probe(context.Background(), c.cfg)
		if err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%+v: error %v, want one naming %q", c.cfg, err, c.want)
		}
	}
}

// TestNoLeak runs 10,000 probes (4 at a time) and checks that no socket
// (file descriptor) and no goroutine outlives them.
func TestNoLeak(t *testing.T) {
	l := newProbeLab(t)
	rs := l.Servers[1]
	cfg := probe.Config{Target: netip.AddrPortFrom(lab.VIP4, lab.ServicePort), Real: rs.IP4,
		Encap: probe.Encap{Kind: probe.L2}, Proto: probe.TCP, Timeout: time.Second, NoARPCheck: true, NetNS: l.Director.Handle}
	// One probe first: the runtime's own lazily started goroutines and fds
	// (netpoll) are not the probe's.
	var res []*probe.Result
	must := func() {
		res = probe.All(l.ctx, []probe.Config{cfg}, 1)
	}
	must()
	fds0, g0 := countFDs(t), runtime.NumGoroutine()
	cfgs := make([]probe.Config, 10000)
	for i := range cfgs {
		cfgs[i] = cfg
	}
	res = probe.All(l.ctx, cfgs, 4)
	up := 0
	for _, r := range res {
		if r.Verdict == probe.Up {
			up++
		}
	}
	if up < len(cfgs)*99/100 {
		t.Errorf("%d of %d probes up; first: %s %s", up, len(cfgs), res[0].Explanation, res[0].Error)
	}
	// Goroutines of finished probes may still be unwinding: wait for the
	// count to settle rather than sleeping a fixed time.
	deadline := time.Now().Add(5 * time.Second)
	for runtime.NumGoroutine() > g0 && time.Now().Before(deadline) {
		runtime.Gosched()
	}
	if fds, g := countFDs(t), runtime.NumGoroutine(); fds > fds0 || g > g0 {
		t.Errorf("after 10,000 probes: %d fds (was %d), %d goroutines (was %d)", fds, fds0, g, g0)
	}
}

func countFDs(t *testing.T) int {
	t.Helper()
	es, err := os.ReadDir("/proc/self/fd")
	if err != nil {
		t.Fatal(err)
	}
	return len(es)
}

// TestCapNetRawOnly runs the real binary on the director as an unprivileged
// user holding CAP_NET_RAW alone (setpriv, ambient): it probes and exits
// with the verdict's code; without the capability it exits 2 naming it.
func TestCapNetRawOnly(t *testing.T) {
	l := newProbeLab(t)
	bin := netnstest.AgentBinary(t)
	// The built binary lives in a 0700 directory: copy it where nobody can
	// run it.
	dir := t.TempDir()
	if err := os.Chmod(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	b, err := os.ReadFile(bin)
	if err != nil {
		t.Fatal(err)
	}
	exe := filepath.Join(dir, "dsr-agent")
	if err := os.WriteFile(exe, b, 0o755); err != nil {
		t.Fatal(err)
	}
	run := func(caps string, args ...string) (string, int) {
		full := append([]string{"netns", "exec", l.Director.NS, "setpriv", "--reuid=65534", "--regid=65534", "--clear-groups",
			"--inh-caps=" + caps, "--ambient-caps=" + caps, "--bounding-set=" + caps, exe, "probe"}, args...)
		out, err := exec.Command("ip", full...).CombinedOutput()
		code := 0
		if ee, ok := err.(*exec.ExitError); ok {
			code = ee.ExitCode()
		} else if err != nil {
			t.Fatal(err)
		}
		return string(out), code
	}
	rs1, rs2 := l.Servers[0], l.Servers[1]
	for _, vip := range []netip.Addr{lab.VIP4, lab.VIP6} {
		ap := netip.AddrPortFrom(vip, lab.ServicePort).String()
		out, code := run("-all,+net_raw", ap, "--real", realOf(rs2, vip).String())
		if code != probe.ExitUp || !strings.HasPrefix(out, "up: ") {
			t.Errorf("with CAP_NET_RAW only: exit %d, %q; want 0 and up", code, out)
		}
		out, code = run("-all,+net_raw", netip.AddrPortFrom(vip, portRealOnly).String(), "--real", realOf(rs1, vip).String(), "--json")
		var r probe.Result
		if err := json.Unmarshal([]byte(out), &r); err != nil || code != probe.ExitRefused || r.Verdict != probe.Refused {
			t.Errorf("refused with --json: exit %d, %q (%v); want %d and verdict refused", code, out, err, probe.ExitRefused)
		}
		out, code = run("-all,+net_raw", ap, "--real", realOf(rs1, vip).String(), "--misc-dynamic")
		if code != 0 {
			t.Errorf("--misc-dynamic up: exit %d, %q", code, out)
		}
		out, code = run("-all,+net_raw", netip.AddrPortFrom(vip, portRealOnly).String(), "--real", realOf(rs1, vip).String(), "--misc-dynamic")
		if code != 1 {
			t.Errorf("--misc-dynamic refused: exit %d, %q; want 1", code, out)
		}
		out, code = run("-all", ap, "--real", realOf(rs2, vip).String())
		if code != probe.ExitUsage || !strings.Contains(out, "CAP_NET_RAW") {
			t.Errorf("without CAP_NET_RAW: exit %d, %q; want 2 naming CAP_NET_RAW", code, out)
		}
	}
}

// TestRSTLeavesNothingHalfOpen: after an up probe the real server holds no
// connection of the probe's (no SYN-RECV left waiting for an ACK).
func TestRSTLeavesNothingHalfOpen(t *testing.T) {
	l := newProbeLab(t)
	rs := l.Servers[1]
	for _, vip := range []netip.Addr{lab.VIP4, lab.VIP6} {
		res := l.probe(t, rs, vip, lab.ServicePort, probe.TCP)
		if res.Verdict != probe.Up {
			t.Fatalf("verdict %s", res.Verdict)
		}
		if out := ipCmd(t, rs, "ss", "-Htn", "state", "syn-recv"); strings.TrimSpace(out) != "" {
			t.Errorf("half-open connections left on %s after the probe:\n%s", rs.Name, out)
		}
	}
}

// TestAllCLI: `dsr-agent probe --all` reads a list (and ipvsadm -Ln output)
// on stdin, prints one line per real server in input order and exits with
// the worst code.
func TestAllCLI(t *testing.T) {
	l := newProbeLab(t)
	bin := netnstest.AgentBinary(t)
	rs1, rs2 := l.Servers[0], l.Servers[1]
	run := func(stdin string) ([]string, int) {
		cmd := exec.Command("ip", "netns", "exec", l.Director.NS, bin, "probe", "--all", "--timeout", "500ms")
		cmd.Stdin = strings.NewReader(stdin)
		out, err := cmd.Output()
		code := 0
		if ee, ok := err.(*exec.ExitError); ok {
			code = ee.ExitCode()
		} else if err != nil {
			t.Fatal(err)
		}
		return strings.Split(strings.TrimSpace(string(out)), "\n"), code
	}
	list := fmt.Sprintf("%s:%d %s\n%s:%d %s\n[%s]:%d %s l2 tcp\n", lab.VIP4, lab.ServicePort, rs1.IP4,
		lab.VIP4, portRealOnly, rs1.IP4, lab.VIP6, lab.ServicePort, rs2.IP6)
	lines, code := run(list)
	if len(lines) != 3 || !strings.HasPrefix(lines[0], "up: ") || !strings.HasPrefix(lines[1], "refused: ") || !strings.HasPrefix(lines[2], "up: ") || code != probe.ExitRefused {
		t.Errorf("--all list: exit %d\n%s", code, strings.Join(lines, "\n"))
	}
	ipvs := fmt.Sprintf("IP Virtual Server version 1.2.1 (size=4096)\nProt LocalAddress:Port Scheduler Flags\n  -> RemoteAddress:Port           Forward Weight ActiveConn InActConn\nTCP  %s:%d rr\n  -> %s:%d    Route   1      0          0\n  -> %s:%d    Route   1      0          0\n",
		lab.VIP4, lab.ServicePort, rs1.IP4, lab.ServicePort, rs2.IP4, lab.ServicePort)
	lines, code = run(ipvs)
	if len(lines) != 2 || code != 0 || !strings.Contains(lines[0], rs1.IP4.String()) || !strings.Contains(lines[1], rs2.IP4.String()) {
		t.Errorf("--all ipvsadm -Ln: exit %d\n%s", code, strings.Join(lines, "\n"))
	}
}
