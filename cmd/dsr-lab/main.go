// Command dsr-lab runs the dsr-agent network-namespace lab: `dsr-lab demo`
// shows direct server return working end to end (what `make demo` runs);
// `dsr-lab sweep` deletes namespaces left by lab runs that were killed.
package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net/netip"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"sort"
	"strings"
	"syscall"
	"time"

	"github.com/dsr-agent/dsr-agent/internal/lab"
)

func main() {
	log := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelWarn}))
	if len(os.Args) < 2 {
		usage()
		os.Exit(2)
	}
	switch os.Args[1] {
	case "demo":
		os.Exit(demoMain(os.Args[2:], log))
	case "sweep":
		if os.Geteuid() != 0 {
			fmt.Fprintln(os.Stderr, "dsr-lab sweep: needs root")
			os.Exit(1)
		}
		lab.SweepOrphans(slog.New(slog.NewTextHandler(os.Stderr, nil)))
	case "-h", "--help", "help":
		usage()
	default:
		usage()
		os.Exit(2)
	}
}

func usage() {
	fmt.Fprint(os.Stderr, `usage:
  dsr-lab demo [--agent bin/dsr-agent] [--mode loopback|arptables|firewalld] [--family 4|6|46] [--servers 2] [--requests 20] [--dns-queries 10]
  dsr-lab sweep     delete lab namespaces whose creating process is gone
`)
}

type demoOpts struct {
	agent    string
	mode     lab.Mode
	vips     []netip.Addr
	servers  int
	requests int
	queries  int // DNS queries per family (0: no DNS part)
}

func demoMain(args []string, log *slog.Logger) int {
	fs := flag.NewFlagSet("demo", flag.ContinueOnError)
	agentBin := fs.String("agent", "bin/dsr-agent", "dsr-agent binary to configure the real servers with")
	mode := fs.String("mode", string(lab.ModeLoopback), "dsr-agent mode: loopback, arptables or firewalld")
	fam := fs.String("family", "4", "address family of the VIP: 4, 6 or 46 (both)")
	servers := fs.Int("servers", 2, "number of real servers")
	requests := fs.Int("requests", 20, "HTTP requests per address family")
	queries := fs.Int("dns-queries", 10, "DNS queries per address family (0: skip DNS; needs unbound)")
	if err := fs.Parse(args); err != nil {
		return 2
	}
	o := demoOpts{mode: lab.Mode(*mode), servers: *servers, requests: *requests, queries: *queries}
	switch o.mode {
	case lab.ModeLoopback, lab.ModeARPTables, lab.ModeFirewalld:
	default:
		fmt.Fprintf(os.Stderr, "dsr-lab demo: --mode %q: want loopback, arptables or firewalld\n", *mode)
		return 2
	}
	if strings.Contains(*fam, "4") {
		o.vips = append(o.vips, lab.VIP4)
	}
	if strings.Contains(*fam, "6") {
		o.vips = append(o.vips, lab.VIP6)
	}
	if len(o.vips) == 0 || strings.Trim(*fam, "46") != "" {
		fmt.Fprintf(os.Stderr, "dsr-lab demo: --family %q: want 4, 6 or 46\n", *fam)
		return 2
	}
	abs, err := filepath.Abs(*agentBin)
	if err != nil {
		fmt.Fprintf(os.Stderr, "dsr-lab demo: --agent: %v\n", err)
		return 2
	}
	o.agent = abs
	if os.Geteuid() != 0 {
		fmt.Fprintln(os.Stderr, "dsr-lab demo: needs root to create network namespaces (try: sudo make demo)")
		return 1
	}
	if _, err := os.Stat(o.agent); err != nil {
		fmt.Fprintf(os.Stderr, "dsr-lab demo: dsr-agent binary: %v (run make build)\n", err)
		return 1
	}

	// First Ctrl-C: stop and tear down cleanly. A second one kills at once
	// (default handling is restored as soon as the first arrives).
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM, syscall.SIGHUP)
	defer stop()
	go func() {
		<-ctx.Done()
		stop()
	}()

	before, berr := lab.SnapshotHost()
	err = demo(ctx, os.Stdout, o, log)
	if err != nil {
		if ctx.Err() != nil {
			fmt.Println("\nInterrupted: everything was torn down.")
		} else {
			fmt.Fprintf(os.Stderr, "\ndemo FAILED: %v\n", err)
		}
	}
	if berr == nil {
		after, aerr := lab.SnapshotHost()
		if aerr == nil {
			if diff := before.Diff(after); diff != "" {
				fmt.Printf("\nWARNING: the host changed during the demo (maybe not by us):\n%s", diff)
			} else {
				fmt.Printf("\nHost check: interfaces, addresses, routes, %d net sysctls and the nftables ruleset of the host are exactly as before.\n", before.Sysctls())
			}
		}
	}
	if err != nil {
		return 1
	}
	return 0
}

func famName(v netip.Addr) string {
	if v.Is6() {
		return "IPv6"
	}
	return "IPv4"
}

func demo(ctx context.Context, w io.Writer, o demoOpts, log *slog.Logger) error {
	p := func(format string, a ...any) { fmt.Fprintf(w, format, a...) }
	step := 0
	bold := false
	if f, ok := w.(*os.File); ok {
		if st, err := f.Stat(); err == nil && st.Mode()&os.ModeCharDevice != 0 {
			bold = true
		}
	}
	head := func(title string) {
		step++
		if bold {
			p("\n\033[1m[%d] %s\033[0m\n", step, title)
		} else {
			p("\n[%d] %s\n", step, title)
		}
	}
	fams := make([]string, 0, len(o.vips))
	for _, v := range o.vips {
		fams = append(fams, famName(v)+" "+v.String())
	}
	p(`=== dsr-agent lab: Direct Server Return, end to end (mode %s, VIP %s) ===

In DSR (LVS "direct routing") a load balancer, the director, owns a virtual IP
(VIP). Clients send requests to the VIP; the director does not proxy them: it
only rewrites the destination MAC address and hands the unchanged IP packet to
a real server. Each real server also accepts the VIP as a local address and
answers the client directly, from the VIP, without passing the director again.
The catch: a real server that has the VIP must never answer ARP (IPv6: NDP) for
it, or clients send their requests to it directly ("ARP flux"). Configuring
that safely is dsr-agent's job. Everything below runs in throwaway network
namespaces on this machine; the host's own network is not touched.
`, o.mode, strings.Join(fams, ", "))

	head("Building the lab: one bridge, a client, the director and the real servers")
	l, err := lab.New(ctx, lab.Options{Servers: o.servers, Log: log})
	if err != nil {
		return fmt.Errorf("build lab: %w", err)
	}
	tmp, err := os.MkdirTemp("", "dsr-lab-demo-")
	if err != nil {
		_ = l.Close()
		return fmt.Errorf("temp dir: %w", err)
	}
	agent := &lab.Agent{Bin: o.agent, Dir: tmp}
	var applied []*lab.Node
	var unbounds []*lab.Unbound
	defer func() {
		head("Tearing down")
		// A fresh context: teardown must run even after Ctrl-C.
		tctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		for _, u := range unbounds {
			u.Stop()
		}
		if len(unbounds) > 0 {
			p("  stopped unbound on %d real servers\n", len(unbounds))
		}
		for _, rs := range applied {
			if r, err := agent.Remove(tctx, rs); err != nil {
				p("  %s: dsr-agent remove failed: %v\n", rs.Name, err)
			} else {
				p("  %s: dsr-agent remove\n%s", rs.Name, indent(r.Output, "      "))
			}
		}
		if err := l.Close(); err != nil {
			p("  deleting namespaces: %v\n", err)
		} else {
			p("  deleted the lab's %d network namespaces (their interfaces, addresses and rules went with them)\n", len(l.Nodes())+1)
		}
		os.RemoveAll(tmp)
	}()

	p("  The bridge lives in its own namespace %s. Each node below is a network\n", l.Hub.NS)
	p("  namespace with one NIC (eth0) plugged into that bridge:\n\n")
	p("  %-9s %-40s %-18s %s\n", "node", "netns", "MAC", "addresses")
	for _, n := range l.Nodes() {
		extra := ""
		if n.Role == lab.RoleDirector {
			extra = " + VIPs " + lab.VIP4.String() + ", " + lab.VIP6.String()
		}
		p("  %-9s %-40s %-18s %s, %s%s\n", n.Name, n.NS, n.MAC, n.IP4, n.IP6, extra)
	}
	p("\n  The director has the VIP on its NIC, so its kernel answers ARP/NDP for it,\n")
	p("  exactly like an LVS director. Its load balancer is one nftables chain:\n\n")
	out, err := exec.CommandContext(ctx, "ip", "netns", "exec", l.Director.NS, "nft", "list", "table", "netdev", lab.DirectorTable).CombinedOutput()
	if err != nil {
		p("  (nft list failed: %v; is the nftables package installed?)\n", err)
	} else {
		p("%s", indent(string(out), "    "))
	}
	p(`
  For every TCP or UDP packet to the VIP: choose a real server by a hash of
  the client's address and port (one flow always goes to one server), set the
  destination MAC to that server and the source MAC to the director's own,
  and send the packet back out of the same NIC. The IP packet itself, still
  addressed to the VIP, is not changed. Counters count what passes.
`)

	head(fmt.Sprintf("Configuring each real server with dsr-agent (mode %s)", o.mode))
	if err := l.Serve(ctx); err != nil {
		return err
	}
	p("  Each real server runs a small HTTP server that names itself (port %d; port %d for\n", lab.ServicePort, lab.RedirectPort)
	p("  firewalld mode's redirect).\n")
	if o.queries > 0 {
		if _, err := lab.UnboundBinary(); err != nil {
			p("  No DNS part: %v\n", err)
			o.queries = 0
		}
	}
	if o.queries > 0 {
		port := lab.DNSPort
		if o.mode == lab.ModeFirewalld {
			port = lab.DNSRedirectPort
		}
		for _, rs := range l.Servers {
			u, err := lab.StartUnbound(ctx, rs, filepath.Join(tmp, rs.NS, "unbound"), lab.UnboundOptions{Ports: []int{port}})
			if err != nil {
				return err
			}
			unbounds = append(unbounds, u)
		}
		p("  And unbound, Debian's DNS server, on UDP port %d, answering TXT %s with the\n", port, lab.WhoamiName)
		p("  server's name. It listens on the wildcard with `interface-automatic: yes`\n")
		p("  (IP_PKTINFO), so each answer leaves from the address its query was sent to.\n")
	}
	p("  Then, inside each server's namespace:\n")
	for i, rs := range l.Servers {
		if err := agent.WriteConfig(rs, o.mode, o.vips...); err != nil {
			return err
		}
		if i == 0 {
			p("\n  config (%s):\n%s", agent.ConfigPath(rs), indent(lab.Config(o.mode, o.vips...), "    "))
		}
		p("\n  $ ip netns exec %s %s --config %s --state-dir %s apply\n", rs.NS, o.agent, agent.ConfigPath(rs), agent.StateDir(rs))
		r, err := agent.Run(ctx, rs, "apply")
		applied = append(applied, rs)
		if err != nil {
			return err
		}
		if i == 0 {
			p("%s", indent(r.Output, "    "))
		} else {
			p("%s", indent(elideHeredocs(r.Output), "    "))
		}
	}
	switch o.mode {
	case lab.ModeLoopback:
		p("\n  loopback mode: the VIP sits on lo and the arp_ignore/arp_announce sysctls keep\n  the server from answering ARP for it.\n")
	case lab.ModeARPTables:
		p("\n  arptables mode: the IPv4 VIP sits on the NIC and an nftables arp table drops ARP\n  for it (IPv6 VIPs go on lo, where the kernel never answers NDP for them).\n")
	case lab.ModeFirewalld:
		p("\n  firewalld mode: the server never has the VIP at all (so it cannot answer ARP\n  for it); nftables redirects VIP:%d to its local port %d\n  and VIP:%d/udp to port %d.\n", lab.ServicePort, lab.RedirectPort, lab.DNSPort, lab.DNSRedirectPort)
	}

	for _, vip := range o.vips {
		if err := demoFamily(ctx, w, l, vip, o.requests, head); err != nil {
			return err
		}
		if o.queries > 0 {
			if err := demoDNS(ctx, w, l, vip, o.queries, head); err != nil {
				return err
			}
		}
	}
	p(`
Why this proves DSR: the client only ever talked to the VIP and only the
director answered its ARP/NDP, so every request went through the director (its
counter equals what the client sent). Yet different real servers answered, and
the replies, far larger than the requests, reached the client without a single
packet passing the director. That is direct server return, with real servers
configured by dsr-agent alone.
`)
	return ctx.Err()
}

func demoFamily(ctx context.Context, w io.Writer, l *lab.Lab, vip netip.Addr, requests int, head func(string)) error {
	p := func(format string, a ...any) { fmt.Fprintf(w, format, a...) }
	arpName := "ARP"
	if vip.Is6() {
		arpName = "NDP (Neighbour Solicitation)"
	}
	head(fmt.Sprintf("%s: who answers %s for the VIP %s?", famName(vip), arpName, vip))
	if err := l.FlushClientNeighbor(vip); err != nil {
		return err
	}
	pr, err := l.NewProber()
	if err != nil {
		return err
	}
	defer pr.Close()
	const probes = 10
	for range probes {
		if vip.Is6() {
			err = pr.SendNS()
		} else {
			err = pr.SendARP()
		}
		if err != nil {
			return err
		}
	}
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-time.After(200 * time.Millisecond):
	}
	ans, err := pr.Answers()
	if err != nil {
		return err
	}
	got := ans.ARP
	if vip.Is6() {
		got = ans.NA
	}
	p("  The client sent %d requests \"who has %s?\" to every host on the LAN.\n  Answers by sender:\n", probes, vip)
	bad := false
	for _, n := range l.Nodes()[1:] {
		c := got[n.MAC.String()]
		p("    %-9s %s  %d\n", n.Name, n.MAC, c)
		if n.Role == lab.RoleServer && c > 0 {
			bad = true
		}
	}
	if bad || got[l.Director.MAC.String()] == 0 {
		return fmt.Errorf("%s for %s: want answers from the director only, got %v", arpName, vip, got)
	}
	p("  Only the director answered, although every real server accepts traffic for the VIP.\n")

	head(fmt.Sprintf("%s: %d HTTP requests from the client to %s", famName(vip), requests, lab.VIPURL(vip)))
	snap := func() (c [4]lab.Counter, err error) {
		for i, get := range []func() (lab.Counter, error){
			func() (lab.Counter, error) { return l.ClientCounter(lab.CounterSent) },
			func() (lab.Counter, error) { return l.DirectorCounter(lab.CounterRequests) },
			func() (lab.Counter, error) { return l.ClientCounter(lab.CounterRecvd) },
			func() (lab.Counter, error) { return l.DirectorCounter(lab.CounterReplies) },
		} {
			if c[i], err = get(); err != nil {
				return c, err
			}
		}
		return c, nil
	}
	c0, err := snap()
	if err != nil {
		return err
	}
	hc := l.HTTPClient(5 * time.Second)
	per := map[string]int{}
	var line []string
	for i := range requests {
		name, _, err := l.Fetch(ctx, hc, vip)
		if err != nil {
			return fmt.Errorf("request %d: %w", i+1, err)
		}
		per[name]++
		line = append(line, name)
	}
	p("  Each request is a new TCP connection (new source port, so a new hash):\n")
	for i := 0; i < len(line); i += 10 {
		p("    %s\n", strings.Join(line[i:min(i+10, len(line))], " "))
	}
	names := make([]string, 0, len(per))
	for n := range per {
		names = append(names, n)
	}
	sort.Strings(names)
	for _, n := range names {
		p("    %s answered %d\n", n, per[n])
	}
	for _, rs := range l.Servers {
		if per[rs.Name] == 0 {
			return fmt.Errorf("%s answered none of %d requests", rs.Name, requests)
		}
	}
	// The last FIN/ACK may still be on its way to the director when the last
	// answer is in: give the counters a moment to settle.
	var d [4]lab.Counter
	for deadline := time.Now().Add(2 * time.Second); ; {
		c1, err := snap()
		if err != nil {
			return err
		}
		for i := range d {
			d[i] = c1[i].Sub(c0[i])
		}
		if d[0].Packets == d[1].Packets || time.Now().After(deadline) {
			break
		}
		time.Sleep(20 * time.Millisecond)
	}
	head(fmt.Sprintf("%s: what went where (nftables counters)", famName(vip)))
	p("    client  -> VIP   sent by the client          %8d packets %10d bytes\n", d[0].Packets, d[0].Bytes)
	p("    director         forwarded to real servers  %8d packets %10d bytes\n", d[1].Packets, d[1].Bytes)
	p("    VIP -> client    received by the client     %8d packets %10d bytes\n", d[2].Packets, d[2].Bytes)
	p("    director         saw of those replies       %8d packets %10d bytes\n", d[3].Packets, d[3].Bytes)
	if d[1].Packets != d[0].Packets || d[3].Packets != 0 {
		return fmt.Errorf("counters do not show DSR: sent %v, director forwarded %v, director saw replies %v", d[0], d[1], d[3])
	}
	mac, state, err := l.ClientNeighbor(vip)
	if err != nil {
		return err
	}
	p("  Client's neighbour table: %s lladdr %s %s  -> %s\n", vip, mac, state, l.NameOf(mac))
	if mac.String() != l.Director.MAC.String() {
		return fmt.Errorf("client's neighbour entry for %s is %s (%s), not the director", vip, mac, l.NameOf(mac))
	}
	return nil
}

// elideHeredocs shortens nft here-documents already shown for the first server.
func elideHeredocs(s string) string {
	var b strings.Builder
	in := false
	for _, line := range strings.SplitAfter(s, "\n") {
		switch {
		case !in && strings.HasSuffix(strings.TrimSpace(line), "<<'EOF'"):
			in = true
			b.WriteString(strings.TrimRight(line, "\n") + " ... (as for the first server, with this server's addresses)\n")
		case in && strings.TrimSpace(line) == "EOF":
			in = false
		case !in:
			b.WriteString(line)
		}
	}
	return b.String()
}

func indent(s, prefix string) string {
	s = strings.TrimRight(s, "\n")
	if s == "" {
		return ""
	}
	return prefix + strings.ReplaceAll(s, "\n", "\n"+prefix) + "\n"
}

// demoDNS sends DNS queries to the VIP and shows who answered and what
// passed the director.
func demoDNS(ctx context.Context, w io.Writer, l *lab.Lab, vip netip.Addr, queries int, head func(string)) error {
	p := func(format string, a ...any) { fmt.Fprintf(w, format, a...) }
	server := netip.AddrPortFrom(vip, lab.DNSPort)
	head(fmt.Sprintf("%s: %d DNS queries (UDP) to %s", famName(vip), queries, server))
	snap := func() (c [4]lab.Counter, err error) {
		for i, get := range []func() (lab.Counter, error){
			func() (lab.Counter, error) { return l.ClientCounter(lab.CounterSentUDP) },
			func() (lab.Counter, error) { return l.DirectorCounter(lab.CounterRequestsUDP) },
			func() (lab.Counter, error) { return l.ClientCounter(lab.CounterRecvdUDP) },
			func() (lab.Counter, error) { return l.DirectorCounter(lab.CounterRepliesUDP) },
		} {
			if c[i], err = get(); err != nil {
				return c, err
			}
		}
		return c, nil
	}
	c0, err := snap()
	if err != nil {
		return err
	}
	res, err := l.QueryDNS(ctx, server, queries, 3*time.Second)
	if err != nil {
		return err
	}
	p("  TXT %s from %d client sockets at once (each a new source port, so a new hash):\n", lab.WhoamiName, queries)
	per := map[string]int{}
	for _, r := range res {
		if r.Err != nil {
			return fmt.Errorf("DNS query from %s to %s: %w", r.Local, server, r.Err)
		}
		per[r.Server]++
		p("    %-22s <- %s  %q\n", r.Local, server, r.TXT)
	}
	for _, rs := range l.Servers {
		if per[rs.Name] == 0 {
			return fmt.Errorf("%s answered none of %d DNS queries", rs.Name, queries)
		}
	}
	c1, err := snap()
	if err != nil {
		return err
	}
	var d [4]lab.Counter
	for i := range d {
		d[i] = c1[i].Sub(c0[i])
	}
	p("    client  -> VIP   sent by the client          %8d packets %10d bytes\n", d[0].Packets, d[0].Bytes)
	p("    director         forwarded to real servers  %8d packets %10d bytes\n", d[1].Packets, d[1].Bytes)
	p("    VIP -> client    received by the client     %8d packets %10d bytes\n", d[2].Packets, d[2].Bytes)
	p("    director         saw of those replies       %8d packets %10d bytes\n", d[3].Packets, d[3].Bytes)
	if d[1].Packets != d[0].Packets || d[3].Packets != 0 || d[2].Packets != uint64(queries) {
		return fmt.Errorf("UDP counters do not show DSR: sent %v, director forwarded %v, client received %v, director saw replies %v", d[0], d[1], d[2], d[3])
	}
	p("  Every answer came from the VIP (the client's connected sockets accept nothing\n")
	p("  else), sent by the real server straight to the client. A UDP server on the\n")
	p("  wildcard without IP_PKTINFO would answer from its own address and the client\n")
	p("  would drop every answer (see TestUDPSourcePitfall in docs/lab.md).\n")
	return nil
}
