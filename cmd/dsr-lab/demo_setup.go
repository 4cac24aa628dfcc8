package main

// Setting the demo up: the lab, its explanation, and dsr-agent applied on
// each real server (and torn down again at the end).

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"time"

	"github.com/dsr-agent/dsr-agent/internal/lab"
)

// narrator writes the demo's text: numbered headings (bold on a terminal)
// and what is under them.
type narrator struct {
	w    io.Writer
	step int
	bold bool
}

func newNarrator(w io.Writer) *narrator {
	n := &narrator{w: w}
	if f, ok := w.(*os.File); ok {
		if st, err := f.Stat(); err == nil && st.Mode()&os.ModeCharDevice != 0 {
			n.bold = true
		}
	}
	return n
}

func (n *narrator) p(format string, a ...any) { fmt.Fprintf(n.w, format, a...) }

func (n *narrator) head(title string) {
	n.step++
	if n.bold {
		n.p("\n\033[1m[%d] %s\033[0m\n", n.step, title)
	} else {
		n.p("\n[%d] %s\n", n.step, title)
	}
}

// demoRun is one demo: its options, the lab and what must be undone.
type demoRun struct {
	o        demoOpts
	out      *narrator
	l        *lab.Lab
	agent    *lab.Agent
	tmp      string
	applied  []*lab.Node
	unbounds []*lab.Unbound
}

func demo(ctx context.Context, w io.Writer, o demoOpts, log *slog.Logger) error {
	d := &demoRun{o: o, out: newNarrator(w)}
	d.intro()
	d.out.head("Building the lab: one bridge, a client, the director and the real servers")
	if err := d.build(ctx, log); err != nil {
		return err
	}
	defer d.teardown()
	d.showTopology(ctx)
	if err := d.configure(ctx); err != nil {
		return err
	}
	for _, vip := range d.o.vips {
		if err := demoFamily(ctx, d.out, d.l, vip, d.o.requests); err != nil {
			return err
		}
		if d.o.queries > 0 {
			if err := demoDNS(ctx, d.out, d.l, vip, d.o.queries); err != nil {
				return err
			}
		}
	}
	conclude(d.out)
	return ctx.Err()
}

func (d *demoRun) intro() {
	fams := make([]string, 0, len(d.o.vips))
	for _, v := range d.o.vips {
		fams = append(fams, famName(v)+" "+v.String())
	}
	d.out.p(`=== dsr-agent lab: Direct Server Return, end to end (mode %s, VIP %s) ===

In DSR (LVS "direct routing") a load balancer, the director, owns a virtual IP
(VIP). Clients send requests to the VIP; the director does not proxy them: it
only rewrites the destination MAC address and hands the unchanged IP packet to
a real server. Each real server also accepts the VIP as a local address and
answers the client directly, from the VIP, without passing the director again.
The catch: a real server that has the VIP must never answer ARP (IPv6: NDP) for
it, or clients send their requests to it directly ("ARP flux"). Configuring
that safely is dsr-agent's job. Everything below runs in throwaway network
namespaces on this machine; the host's own network is not touched.
`, d.o.mode, strings.Join(fams, ", "))
}

// build creates the lab and the directory of the agents' configs and state.
func (d *demoRun) build(ctx context.Context, log *slog.Logger) error {
	l, err := lab.New(ctx, lab.Options{Servers: d.o.servers, Log: log})
	if err != nil {
		return fmt.Errorf("build lab: %w", err)
	}
	tmp, err := os.MkdirTemp("", "dsr-lab-demo-")
	if err != nil {
		_ = l.Close()
		return fmt.Errorf("temp dir: %w", err)
	}
	d.l, d.tmp = l, tmp
	d.agent = &lab.Agent{Bin: d.o.agent, Dir: tmp}
	return nil
}

// teardown stops unbound, runs dsr-agent remove where apply ran and deletes
// the lab.
func (d *demoRun) teardown() {
	p := d.out.p
	d.out.head("Tearing down")
	// A fresh context: teardown must run even after Ctrl-C.
	tctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	for _, u := range d.unbounds {
		u.Stop()
	}
	if len(d.unbounds) > 0 {
		p("  stopped unbound on %d real servers\n", len(d.unbounds))
	}
	for _, rs := range d.applied {
		if r, err := d.agent.Remove(tctx, rs); err != nil {
			p("  %s: dsr-agent remove failed: %v\n", rs.Name, err)
		} else {
			p("  %s: dsr-agent remove\n%s", rs.Name, indent(r.Output, "      "))
		}
	}
	if err := d.l.Close(); err != nil {
		p("  deleting namespaces: %v\n", err)
	} else {
		p("  deleted the lab's %d network namespaces (their interfaces, addresses and rules went with them)\n", len(d.l.Nodes())+1)
	}
	os.RemoveAll(d.tmp)
}

// showTopology lists the nodes and the director's load-balancing chain.
func (d *demoRun) showTopology(ctx context.Context) {
	p, l := d.out.p, d.l
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
}

// configure starts the real servers' services and applies dsr-agent on each.
func (d *demoRun) configure(ctx context.Context) error {
	p := d.out.p
	d.out.head(fmt.Sprintf("Configuring each real server with dsr-agent (mode %s)", d.o.mode))
	if err := d.l.Serve(ctx); err != nil {
		return err
	}
	p("  Each real server runs a small HTTP server that names itself (port %d; port %d for\n", lab.ServicePort, lab.RedirectPort)
	p("  firewalld mode's redirect).\n")
	if err := d.startDNS(ctx); err != nil {
		return err
	}
	p("  Then, inside each server's namespace:\n")
	for i, rs := range d.l.Servers {
		if err := d.agent.WriteConfig(rs, d.o.mode, d.o.vips...); err != nil {
			return err
		}
		if i == 0 {
			p("\n  config (%s):\n%s", d.agent.ConfigPath(rs), indent(lab.Config(d.o.mode, d.o.vips...), "    "))
		}
		p("\n  $ ip netns exec %s %s --config %s --state-dir %s apply\n", rs.NS, d.o.agent, d.agent.ConfigPath(rs), d.agent.StateDir(rs))
		r, err := d.agent.Run(ctx, rs, "apply")
		d.applied = append(d.applied, rs)
		if err != nil {
			return err
		}
		if i == 0 {
			p("%s", indent(r.Output, "    "))
		} else {
			p("%s", indent(elideHeredocs(r.Output), "    "))
		}
	}
	explainMode(d.out, d.o.mode)
	return nil
}

// startDNS starts unbound on every real server, or turns the DNS part off
// (queries 0) when unbound is not installed.
func (d *demoRun) startDNS(ctx context.Context) error {
	p := d.out.p
	if d.o.queries > 0 {
		if _, err := lab.UnboundBinary(); err != nil {
			p("  No DNS part: %v\n", err)
			d.o.queries = 0
		}
	}
	if d.o.queries == 0 {
		return nil
	}
	port := lab.DNSPort
	if d.o.mode == lab.ModeFirewalld {
		port = lab.DNSRedirectPort
	}
	for _, rs := range d.l.Servers {
		u, err := lab.StartUnbound(ctx, rs, filepath.Join(d.tmp, rs.NS, "unbound"), lab.UnboundOptions{Ports: []int{port}})
		if err != nil {
			return err
		}
		d.unbounds = append(d.unbounds, u)
	}
	p("  And unbound, Debian's DNS server, on UDP port %d, answering TXT %s with the\n", port, lab.WhoamiName)
	p("  server's name. It listens on the wildcard with `interface-automatic: yes`\n")
	p("  (IP_PKTINFO), so each answer leaves from the address its query was sent to.\n")
	return nil
}
