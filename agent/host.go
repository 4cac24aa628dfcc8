package agent

import (
	"context"
	"errors"
	"fmt"
	"strings"

	"github.com/google/nftables"
	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"
	"golang.org/x/sys/unix"

	"github.com/dsr-agent/dsr-agent/anyip"
	"github.com/dsr-agent/dsr-agent/firewall"
	"github.com/dsr-agent/dsr-agent/firewalld"
	"github.com/dsr-agent/dsr-agent/listener"
	"github.com/dsr-agent/dsr-agent/loopback"
	"github.com/dsr-agent/dsr-agent/route"
	"github.com/dsr-agent/dsr-agent/sysctl"
)

// Host is the kernel state dsr-agent manages in one network namespace, plus
// the state dir that records what it owns.
type Host struct {
	nl     *netlink.Handle
	sysctl *sysctl.Proc
	addrs  *loopback.Manager
	tables *firewall.Manager
	store  *stateStore
	// diag reads the sockets that serve the VIP ports: opened by the first
	// status that needs it (apply never does), in nsFD (-1: our own).
	diag *listener.Diag
	nsFD int
	// ns is the namespace bound to (netns.None(): our own).
	ns netns.NsHandle
	// tunnel is mode tunnel's kernel (nil: the real one); tests replace it.
	tunnel tunnelKernel
	// inject, when set (tests only), runs before each kernel change of a
	// plan (i counts them from 0); an error fails that change as if the
	// kernel had refused it.
	inject func(i int, c Change) error
}

// OpenHost binds to the caller's own network namespace.
func OpenHost(stateDir string) (*Host, error) {
	return OpenHostAt(stateDir, netns.None())
}

// OpenHostAt binds to the network namespace ns (netns.None() for the
// caller's own); tests use it to run against a throwaway namespace.
func OpenHostAt(stateDir string, ns netns.NsHandle) (*Host, error) {
	var nl *netlink.Handle
	var conn *nftables.Conn
	var err error
	proc := sysctl.NewProc()
	if ns.IsOpen() {
		// NETLINK_GENERIC too: mode tunnel's fou requests would otherwise
		// go out on a socket of the calling thread's namespace.
		nl, err = netlink.NewHandleAt(ns, unix.NETLINK_ROUTE, unix.NETLINK_XFRM, unix.NETLINK_NETFILTER, unix.NETLINK_GENERIC)
		if err == nil {
			conn, err = firewall.Dial(int(ns))
		}
		proc.NS = ns
	} else {
		nl, err = netlink.NewHandle()
		if err == nil {
			conn, err = firewall.Dial(-1)
		}
	}
	if err != nil {
		if nl != nil {
			nl.Close()
		}
		return nil, fmt.Errorf("open netlink and nftables sockets: %w", err)
	}
	addrs, err := loopback.NewManager(nl, ns)
	if err != nil {
		nl.Close()
		_ = conn.CloseLasting()
		return nil, err
	}
	nsFD := -1
	if ns.IsOpen() {
		nsFD = int(ns)
	}
	return &Host{
		nl:     nl,
		sysctl: proc,
		addrs:  addrs,
		tables: &firewall.Manager{Conn: conn},
		store:  &stateStore{dir: stateDir},
		nsFD:   nsFD,
		ns:     ns,
	}, nil
}

// Close releases the netlink sockets.
func (h *Host) Close() {
	h.nl.Close()
	_ = h.addrs.Close()
	_ = h.tables.Conn.CloseLasting()
	if h.diag != nil {
		_ = h.diag.Close()
	}
	h.store.close()
}

// planned is a plan with the facts, desired state and surfaces it came from.
type planned struct {
	plan     *Plan
	facts    *Facts
	want     *Desired
	surfaces []surface
	// blocked is every surface's blocked(): what apply refuses before its
	// first change, and what fails the daemon's repair pass after the
	// other changes ran.
	blocked error
	// The sockets serving the VIP ports (status only: a listener is not a
	// kernel change, so plans never read them).
	listenersRead bool
	sockets       []listener.Socket
	listenerErr   error
	// proxy is what the kernel's proxy ARP/NDP would answer (status only).
	proxy proxyView
}

// plan reads the host once, resolves the config against it (validating the
// whole config before anything changes) and diffs every surface.
func (h *Host) plan(cfg *Config, moveAside bool) (*planned, error) {
	f, err := h.facts(moveAside)
	if err != nil {
		return nil, err
	}
	d, err := Resolve(cfg, f)
	if err != nil {
		return nil, err
	}
	return h.planWith(f, d)
}

// kernel is the host's real kernel, as the surfaces see it.
func (h *Host) kernel() kernel {
	var tk tunnelKernel = kernelTunnel{nl: h.nl, ns: h.ns}
	if h.tunnel != nil {
		tk = h.tunnel
	}
	return kernel{sysctls: h.sysctl, addrs: h.addrs, tables: h.tables, routes: &route.Manager{NL: h.nl}, tunnel: tk, anyip: &anyip.Manager{NL: h.nl}}
}

func (h *Host) planWith(f *Facts, d *Desired) (*planned, error) { return planOn(h.kernel(), f, d) }

// planOn observes and diffs every surface on k.
func planOn(k kernel, f *Facts, d *Desired) (*planned, error) {
	surfaces := newSurfaces(k, f)
	for _, s := range surfaces {
		if d.HandsOff {
			break // nothing will be diffed
		}
		if err := s.observe(d, f.Owned); err != nil {
			return nil, err
		}
	}
	var blocked []error
	for _, s := range surfaces {
		blocked = append(blocked, s.blocked())
	}
	return &planned{plan: planFrom(surfaces, d, f.Owned), facts: f, want: d, surfaces: surfaces, blocked: errors.Join(blocked...)}, nil
}

// notes are what the operator must hear beside the plan.
func (p *planned) notes(when noteWhen) []string {
	n := append(stateNotes(p.facts.Owned, when), p.want.Notes...)
	if p.want.HandsOff {
		n = append(n, handsOffNote(p.facts.Owned)...)
	}
	return n
}

// Resolve validates cfg against the host and returns what it asks for here
// (interfaces and health defaults filled in); cfg is not changed.
func (h *Host) Resolve(cfg *Config) (*Desired, error) {
	f, err := h.facts(false)
	if err != nil {
		return nil, err
	}
	return Resolve(cfg, f)
}

// Load reads the config file and the drop-ins of dir and checks them
// against the host as Apply does before its first change (the daemon's start and reload: a config
// apply would refuse is refused, and a reload keeps the running one).
func (h *Host) Load(path, dir string) (*Config, *Desired, error) {
	cfg, err := LoadConfig(path, dir)
	if err != nil {
		return nil, nil, err
	}
	p, err := h.plan(cfg, false)
	if err == nil {
		err = p.blocked
	}
	if err != nil {
		return nil, nil, err
	}
	return cfg, p.want, nil
}

// Firewalld resolves cfg and asks a running firewalld about it (see
// FirewalldFindings).
func (h *Host) Firewalld(ctx context.Context, cfg *Config) ([]firewalld.Finding, error) {
	f, err := h.facts(false)
	if err != nil {
		return nil, err
	}
	d, err := Resolve(cfg, f)
	if err != nil {
		return nil, err
	}
	return FirewalldFindings(ctx, d, f)
}

// Validate checks the config against the host (interfaces exist, VIPs are
// not the host's own addresses, listeners are).
func (h *Host) Validate(cfg *Config) error {
	_, err := h.Resolve(cfg)
	return err
}

// Plan computes what Apply would change, changing nothing.
func (h *Host) Plan(cfg *Config) (*Plan, error) {
	p, err := h.plan(cfg, false)
	if err == nil {
		err = p.blocked
	}
	if err != nil {
		return nil, err
	}
	p.plan.Notes = p.notes(noteApply)
	return p.plan, nil
}

// Apply converges the host to cfg and returns the changes it made (empty
// when already in sync). Everything that can fail without changing the
// host is checked against one snapshot before the first change: the config
// against the host, mode tunnel's modules, a foreign device or GUE port in
// the way, a foreign route in return_via's table. Such a refusal wraps
// ErrInvalidConfig (exit 2) and nothing has changed. A step that still
// fails stops the plan there, every VIP the config keeps still served (the
// phase order); the returned plan lists what was done.
func (h *Host) Apply(cfg *Config) (*Plan, error) {
	p, _, err := h.converge(cfg, nil, true)
	return p, err
}

// Converge is Apply for the daemon: when a host fact the config depends on
// is briefly missing (a network manager reconfiguring the NIC deletes its
// own address, which arptables mode's real IP and health.listen resolve
// from), it keeps converging to last, the previous resolution, rather than
// leave the VIPs missing until the fact returns. It returns the desired
// state it converged to.
//
// Unlike Apply, a surface that cannot plan (a foreign route in return_via's
// table, a foreign GUE port, a module that cannot be loaded) does not stop
// the others: a running daemon keeps repairing the VIPs and their
// suppression, and reports that surface's error. A new config never gets
// here unchecked: Load, the daemon's start and reload, refuses what Apply
// would.
func (h *Host) Converge(cfg *Config, last *Desired) (*Plan, *Desired, error) {
	return h.converge(cfg, last, false)
}

func (h *Host) converge(cfg *Config, last *Desired, strict bool) (*Plan, *Desired, error) {
	unlock, err := h.store.lock()
	if err != nil {
		return nil, nil, err
	}
	defer unlock()
	f, err := h.facts(true)
	if err != nil {
		return nil, nil, err
	}
	d, rerr := Resolve(cfg, f)
	if rerr != nil {
		if last == nil || !errors.Is(rerr, ErrHostMismatch) {
			return nil, nil, rerr
		}
		d = last
	}
	p, err := h.planWith(f, d)
	if err != nil {
		return nil, nil, err
	}
	if strict && p.blocked != nil {
		return &Plan{Notes: p.notes(noteApply)}, nil, p.blocked
	}
	done, err := h.run(p)
	if rerr != nil {
		done.Notes = append(done.Notes, "kept the last resolution while the host does not match the config: "+firstErrLine(rerr))
	}
	return done, d, err
}

func firstErrLine(err error) string { return strings.Join(strings.Fields(err.Error()), " ") }

// run executes a plan with the ownership bookkeeping around it.
func (h *Host) run(p *planned) (*Plan, error) {
	st := p.facts.Owned
	pruned := forgetVanished(p.facts, p.want.Addrs)
	if st.Recovered != "" {
		adoptConfiguredVIPs(p.facts, p.want.Addrs)
	}
	done, err := h.execute(p.plan, st, pruned || st.Recovered != "")
	done.Notes = p.notes(noteApply)
	return done, errors.Join(err, p.blocked)
}

// Remove undoes everything dsr-agent owns: its addresses first (no instant
// with a VIP and no suppression), then its tables, then the saved sysctls.
func (h *Host) Remove() (*Plan, error) {
	unlock, err := h.store.lock()
	if err != nil {
		return nil, err
	}
	defer unlock()
	f, err := h.facts(true)
	if err != nil {
		return nil, err
	}
	p, err := h.planWith(f, &Desired{Tables: map[firewall.Family]firewall.Spec{}})
	if err != nil {
		return nil, err
	}
	pruned := forgetVanished(f, nil)
	done, err := h.execute(p.plan, f.Owned, pruned || f.Owned.Recovered != "")
	done.Notes = stateNotes(f.Owned, noteRemove)
	if err != nil {
		return done, err
	}
	if len(f.Owned.Addresses) == 0 && len(f.Owned.SavedSysctls) == 0 {
		if err := h.store.clear(); err != nil {
			return done, err
		}
	}
	return done, nil
}

// adoptConfiguredVIPs records as owned the configured VIPs already in place
// when the state file was lost: IPv6 addresses carry no label, so without
// this a later remove would leave them behind.
func adoptConfiguredVIPs(f *Facts, want []loopback.Addr) {
	present := map[OwnedAddr]bool{}
	for _, a := range f.Addrs {
		present[OwnedAddr{Link: a.Link, Prefix: a.Prefix.String()}] = true
	}
	for _, a := range want {
		if present[OwnedAddr{Link: a.Link, Prefix: a.Prefix.String()}] {
			f.Owned.addAddr(a.Link, a.Prefix.String())
		}
	}
}

// forgetVanished drops owned addresses that are neither present nor wanted
// (someone else deleted them after they stopped being wanted), so the state
// file does not grow stale entries.
func forgetVanished(f *Facts, want []loopback.Addr) (changed bool) {
	keep := map[OwnedAddr]bool{}
	for _, a := range f.Addrs {
		keep[OwnedAddr{Link: a.Link, Prefix: a.Prefix.String()}] = true
	}
	for _, a := range want {
		keep[OwnedAddr{Link: a.Link, Prefix: a.Prefix.String()}] = true
	}
	return f.Owned.keepAddrs(func(a OwnedAddr) bool { return keep[a] }) > 0
}
