// Package tunnel owns the kernel side of L3 DSR (mode: tunnel): the
// decapsulation devices a director's IPIP or GUE packets arrive on, and the
// GUE receive port.
//
// The director (IPVS lb_kind TUN, Katran, Cloudflare's Unimog...) wraps each
// client packet, still addressed to the VIP, in an outer IP header addressed
// to the real server's own IP (IPIP), or in outer IP + UDP + a GUE header
// (GUE). The real server unwraps it on a tunnel device and, since the VIP is
// on lo (loopback mode's job), answers straight to the client from the VIP.
//
// What this package manages:
//   - IPv4: tunl0, the fallback device the ipip module creates in every network
//     namespace. An IPIP packet whose outer addresses match no configured
//     tunnel lands there; it only has to be up.
//   - IPv6: ip6tnl0, ip6_tunnel's fallback device (ip6ip6, any remote, any local;
//     a device dsr-agent creates when there is none is "mode any": ip6ip6 and ip4ip6).
//   - GUE: a fou socket (`ip fou add port 6080 gue`). fou strips the UDP and GUE
//     headers and hands the inner packet to the IP protocol its GUE header
//     names (IPPROTO_IPIP: ipip, so it too lands on tunl0). IPv4 and IPv6 fou
//     sockets are separate (one per address family and port).
//
// Modules are loaded with modprobe when the device is missing. A module is
// never unloaded: other tunnels may use it. With
// net.core.fb_tunnels_only_for_init_net set, a namespace other than the
// initial one gets no fallback device; then one with the fallback's
// parameters (no local, no remote: a wildcard receiver) is created under the
// same name, and owned.
//
// Ownership: Owned records what dsr-agent brought up, created or added;
// removal undoes only that. A tunnel or fou port someone else made is never
// touched, and a fou port on our number with another encapsulation is a
// conflict, not something to replace.
//
// The *netlink.Handle passed in must include unix.NETLINK_GENERIC when it is
// bound to another network namespace (netlink.NewHandleAt(ns,
// unix.NETLINK_ROUTE, unix.NETLINK_GENERIC)): the fou requests are generic
// netlink, and vishvananda/netlink sends a request for a family the handle
// lacks on a fresh socket in the calling thread's namespace. For the same
// reason a handle on another namespace goes with Step.ApplyIn(h, ns): adding a
// GUE port opens a socket of its own (see fouAdd); Step.Apply is for the
// caller's own namespace (the daemon's case).
package tunnel

import (
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"slices"
	"strings"
	"sync"

	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"
	"golang.org/x/sys/unix"

	"github.com/dsr-agent/dsr-agent/internal/nldump"
)

// Encap is the director's encapsulation (config tunnel.encap).
type Encap string

const (
	EncapIPIP Encap = "ipip"
	EncapGUE  Encap = "gue"
)

// Device names and the modules that create them.
const (
	DevIPv4    = "tunl0"
	DevIPv6    = "ip6tnl0"
	ModIPIP    = "ipip"
	ModIP6Tnl  = "ip6_tunnel"
	ModFou     = "fou"
	linkIPIP   = "ipip"   // netlink.Iptun.Type()
	linkIP6Tnl = "ip6tnl" // netlink.Ip6tnl.Type()
)

// Spec is what the configuration asks of this package.
type Spec struct {
	// IPv4 / IPv6: some VIP of that family is served (tunl0 / ip6tnl0).
	IPv4, IPv6 bool
	// GUEPort is the GUE receive port (encap gue), 0 for none (encap ipip).
	GUEPort uint16
}

// FouKey names a fou socket: the kernel keeps one per family and port.
type FouKey struct {
	Family int    `json:"family"` // 4 or 6
	Port   uint16 `json:"port"`
}

func (k FouKey) String() string { return fmt.Sprintf("%d/IPv%d", k.Port, k.Family) }

// ipFlag is ip(8)'s family option for k.
func (k FouKey) ipFlag() string {
	if k.Family == 6 {
		return "ip -6"
	}
	return "ip"
}

func (k FouKey) af() int {
	if k.Family == 6 {
		return unix.AF_INET6
	}
	return unix.AF_INET
}

// FouPort is a fou socket as the kernel lists it.
type FouPort struct {
	FouKey
	Encap    string // "gue" or "direct"
	Protocol int    // direct only: the IP protocol of the payload (4 = IPIP)
}

func (p FouPort) describe() string {
	if p.Encap == "direct" {
		return fmt.Sprintf("encap direct ipproto %d", p.Protocol)
	}
	return "encap " + p.Encap
}

// Link is a tunnel device as observed.
type Link struct {
	Name string
	Type string // netlink kind: "ipip", "ip6tnl"
	Up   bool   // administratively up (IFF_UP)
}

// State is the kernel as Observe found it.
type State struct {
	Modules map[string]bool // loaded or built in, by module name
	Links   map[string]Link // the tunnel devices present, by name
	Fou     []FouPort       // every fou socket (empty when fou is not loaded)
}

// Owned is what dsr-agent made, for the caller to keep in its state file.
type Owned struct {
	// LinksUp: devices dsr-agent set up (they were down or absent).
	LinksUp []string `json:"links_up,omitempty"`
	// LinksCreated: devices dsr-agent created (no fallback device in this
	// namespace); removal deletes them.
	LinksCreated []string `json:"links_created,omitempty"`
	FouPorts     []FouKey `json:"fou_ports,omitempty"`
}

// Kind is what a Step does.
type Kind int

const (
	LoadModule Kind = iota
	CreateLink
	SetUp
	AddFou
	DelFou
	SetDown
	DeleteLink
)

// Step is one change, in the order Needed returns them.
type Step struct {
	Kind   Kind
	Module string // LoadModule
	Link   string // CreateLink, SetUp, SetDown, DeleteLink
	Fou    FouKey // AddFou, DelFou
}

// Command renders the step as the command an admin would type.
func (s Step) Command() string {
	switch s.Kind {
	case LoadModule:
		return "modprobe " + s.Module
	case CreateLink:
		if s.Link == DevIPv6 {
			return "ip -6 link add " + s.Link + " type ip6tnl mode any"
		}
		return "ip link add " + s.Link + " type ipip"
	case SetUp:
		return "ip link set " + s.Link + " up"
	case SetDown:
		return "ip link set " + s.Link + " down"
	case DeleteLink:
		return "ip link del " + s.Link
	case AddFou:
		return fmt.Sprintf("%s fou add port %d gue", s.Fou.ipFlag(), s.Fou.Port)
	case DelFou:
		return fmt.Sprintf("%s fou del port %d", s.Fou.ipFlag(), s.Fou.Port)
	}
	return fmt.Sprintf("unknown tunnel step %d", s.Kind)
}

func (s Step) String() string { return s.Command() }

// Removal reports whether the step undoes something (safety order: the
// caller runs removals after VIPs leave, adds before they arrive).
func (s Step) Removal() bool { return s.Kind >= DelFou }

// devices maps each family to its device and module.
var devices = []struct {
	want   func(Spec) bool
	dev    string
	module string
	kind   string
}{
	{func(s Spec) bool { return s.IPv4 }, DevIPv4, ModIPIP, linkIPIP},
	{func(s Spec) bool { return s.IPv6 }, DevIPv6, ModIP6Tnl, linkIP6Tnl},
}

// ConflictError is a device or fou port that is in the way and not ours.
type ConflictError struct{ What string }

func (e *ConflictError) Error() string { return e.What }

// Needed returns the steps that bring st to spec, given what dsr-agent owns
// (owned things the spec no longer wants are removed). It is pure. A foreign
// object in the way is a *ConflictError naming it; the steps returned with
// it are still the ones that can be taken.
func Needed(spec Spec, st State, owned Owned) ([]Step, error) {
	var steps, removals []Step
	var errs []error
	loaded := map[string]bool{}
	load := func(m string) {
		if !st.Modules[m] && !loaded[m] {
			loaded[m] = true
			steps = append(steps, Step{Kind: LoadModule, Module: m})
		}
	}
	for _, d := range devices {
		l, present := st.Links[d.dev]
		if !d.want(spec) {
			if !present {
				continue
			}
			if slices.Contains(owned.LinksCreated, d.dev) {
				removals = append(removals, Step{Kind: DeleteLink, Link: d.dev})
			} else if slices.Contains(owned.LinksUp, d.dev) && l.Up {
				removals = append(removals, Step{Kind: SetDown, Link: d.dev})
			}
			continue
		}
		switch {
		case present && l.Type != d.kind:
			errs = append(errs, &ConflictError{fmt.Sprintf("%s exists as a %s device, not %s: not dsr-agent's; rename or delete it", d.dev, l.Type, d.kind)})
		case present && l.Up:
		case present:
			steps = append(steps, Step{Kind: SetUp, Link: d.dev})
		case !st.Modules[d.module]:
			// Loading the module creates the fallback device (down).
			load(d.module)
			steps = append(steps, Step{Kind: SetUp, Link: d.dev})
		default:
			// Module loaded, no fallback device: fb_tunnels_only_for_init_net.
			steps = append(steps, Step{Kind: CreateLink, Link: d.dev}, Step{Kind: SetUp, Link: d.dev})
		}
	}

	want := map[FouKey]bool{}
	if spec.GUEPort != 0 {
		if spec.IPv4 {
			want[FouKey{4, spec.GUEPort}] = true
		}
		if spec.IPv6 {
			want[FouKey{6, spec.GUEPort}] = true
		}
	}
	have := map[FouKey]FouPort{}
	for _, p := range st.Fou {
		have[p.FouKey] = p
	}
	for _, k := range sortedKeys(want) {
		p, ok := have[k]
		switch {
		case !ok:
			load(ModFou)
			steps = append(steps, Step{Kind: AddFou, Fou: k})
		case p.Encap != "gue":
			errs = append(errs, &ConflictError{fmt.Sprintf("fou port %s exists with %s, not gue: not dsr-agent's; remove it (%s fou del port %d) or choose another tunnel.port",
				k, p.describe(), k.ipFlag(), k.Port)})
		}
	}
	for _, k := range owned.FouPorts {
		if _, ok := have[k]; ok && !want[k] {
			removals = append(removals, Step{Kind: DelFou, Fou: k})
		}
	}
	// Module loads come first (the other steps need them); removals last,
	// fou sockets before devices so nothing is unwrapped onto a device that
	// is going away.
	slices.SortStableFunc(steps, func(a, b Step) int { return b2i(a.Kind != LoadModule) - b2i(b.Kind != LoadModule) })
	slices.SortStableFunc(removals, func(a, b Step) int { return int(a.Kind) - int(b.Kind) })
	return append(steps, removals...), errors.Join(errs...)
}

// Remove returns the steps that undo what owned records (and st still shows).
func Remove(st State, owned Owned) []Step {
	steps, _ := Needed(Spec{}, st, owned)
	return steps
}

func b2i(b bool) int {
	if b {
		return 1
	}
	return 0
}

func sortedKeys(m map[FouKey]bool) []FouKey {
	ks := make([]FouKey, 0, len(m))
	for k := range m {
		ks = append(ks, k)
	}
	slices.SortFunc(ks, func(a, b FouKey) int {
		if a.Family != b.Family {
			return a.Family - b.Family
		}
		return int(a.Port) - int(b.Port)
	})
	return ks
}

// Record updates owned after s was applied successfully.
func (o *Owned) Record(s Step) {
	add := func(list []string, v string) []string {
		if slices.Contains(list, v) {
			return list
		}
		return append(list, v)
	}
	drop := func(list []string, v string) []string {
		return slices.DeleteFunc(list, func(x string) bool { return x == v })
	}
	switch s.Kind {
	case CreateLink:
		o.LinksCreated = add(o.LinksCreated, s.Link)
	case SetUp:
		o.LinksUp = add(o.LinksUp, s.Link)
	case SetDown:
		o.LinksUp = drop(o.LinksUp, s.Link)
	case DeleteLink:
		o.LinksUp = drop(o.LinksUp, s.Link)
		o.LinksCreated = drop(o.LinksCreated, s.Link)
	case AddFou:
		if !slices.Contains(o.FouPorts, s.Fou) {
			o.FouPorts = append(o.FouPorts, s.Fou)
		}
	case DelFou:
		o.FouPorts = slices.DeleteFunc(o.FouPorts, func(k FouKey) bool { return k == s.Fou })
	}
}

// Empty reports whether nothing is owned.
func (o Owned) Empty() bool {
	return len(o.LinksUp) == 0 && len(o.LinksCreated) == 0 && len(o.FouPorts) == 0
}

// Observe reads the modules, the two tunnel devices and the fou sockets: two
// link requests and, when fou is loaded, one fou dump. It never loads a
// module (a fou request would autoload fou: the genl family lookup does).
func Observe(h *netlink.Handle) (State, error) {
	st := State{Modules: map[string]bool{}, Links: map[string]Link{}}
	for _, m := range []string{ModIPIP, ModIP6Tnl, ModFou} {
		st.Modules[m] = ModuleLoaded(m)
	}
	for _, d := range devices {
		l, err := h.LinkByName(d.dev)
		if err != nil {
			var nf netlink.LinkNotFoundError
			if errors.As(err, &nf) {
				continue
			}
			return st, fmt.Errorf("look up %s: %w", d.dev, err)
		}
		st.Links[d.dev] = Link{Name: d.dev, Type: l.Type(), Up: l.Attrs().Flags&net.FlagUp != 0}
	}
	if !st.Modules[ModFou] {
		return st, nil
	}
	ports, err := ListFou(h)
	if err != nil {
		return st, err
	}
	st.Fou = ports
	return st, nil
}

// ListFou dumps the namespace's fou sockets (both families: the kernel's
// dump ignores the family attribute).
func ListFou(h *netlink.Handle) ([]FouPort, error) {
	fs, err := nldump.Retry(func() ([]netlink.Fou, error) { return h.FouList(unix.AF_UNSPEC) })
	if err != nil {
		return nil, fmt.Errorf("ip fou show: %w", err)
	}
	out := make([]FouPort, 0, len(fs))
	for _, f := range fs {
		p := FouPort{FouKey: FouKey{Family: 4, Port: uint16(f.Port)}, Protocol: f.Protocol}
		if f.Family == unix.AF_INET6 {
			p.Family = 6
		}
		switch f.EncapType {
		case netlink.FOU_ENCAP_GUE:
			p.Encap = "gue"
		case netlink.FOU_ENCAP_DIRECT:
			p.Encap = "direct"
		default:
			p.Encap = fmt.Sprintf("type-%d", f.EncapType)
		}
		out = append(out, p)
	}
	return out, nil
}

// ModuleLoaded reports whether a module is loaded or built into the kernel.
// /sys/module/NAME exists for loaded modules and for built-in ones with
// parameters; modules.builtin lists the rest.
func ModuleLoaded(name string) bool {
	if _, err := os.Stat("/sys/module/" + name); err == nil {
		return true
	}
	if builtinModules()[name] {
		return true
	}
	// A built-in fou without parameters has no /sys/module entry, and the
	// unit hides modules.builtin: ask generic netlink for its families (a
	// dump, which never loads a module).
	return name == ModFou && genlFamilyPresent("fou")
}

func genlFamilyPresent(name string) bool {
	fams, err := netlink.GenlFamilyList()
	if err != nil {
		return false
	}
	for _, f := range fams {
		if f.Name == name {
			return true
		}
	}
	return false
}

// builtinModules is modules.builtin, read once: the fou poll asks every
// second, and the file does not change while the kernel runs.
var builtinModules = sync.OnceValue(func() map[string]bool {
	out := map[string]bool{}
	var u unix.Utsname
	if unix.Uname(&u) != nil {
		return out
	}
	b, err := os.ReadFile("/lib/modules/" + unix.ByteSliceToString(u.Release[:]) + "/modules.builtin")
	if err != nil {
		return out
	}
	for _, l := range strings.Split(string(b), "\n") {
		if i := strings.LastIndex(l, "/"); i >= 0 && strings.HasSuffix(l, ".ko") {
			out[strings.TrimSuffix(l[i+1:], ".ko")] = true
		}
	}
	return out
})

// probeLink is the name of the device briefly created to make the kernel
// load a tunnel module (the module's own fallback device then appears).
const probeLink = "dsr-probe0"

// autoload makes the kernel load a tunnel module through its alias
// (rtnl-link-ipip, rtnl-link-ip6tnl): a link of the module's kind, created
// and at once deleted. fou has no such alias (fou_core.c declares no
// MODULE_ALIAS_GENL_FAMILY), so only modprobe loads it; the packaged unit
// does that outside its sandbox (ExecStartPre=+dsr-agent prepare).
func autoload(h *netlink.Handle, module string) error {
	var l netlink.Link
	switch module {
	case ModIPIP:
		l = &netlink.Iptun{LinkAttrs: netlink.LinkAttrs{Name: probeLink}}
	case ModIP6Tnl:
		l = &netlink.Ip6tnl{LinkAttrs: netlink.LinkAttrs{Name: probeLink}}
	default:
		return fmt.Errorf("no on-demand load for module %s", module)
	}
	add, del := netlink.LinkAdd, netlink.LinkDel // nil h: the caller's namespace
	if h != nil {
		add, del = h.LinkAdd, h.LinkDel
	}
	err := add(l)
	if errors.Is(err, unix.EEXIST) {
		// The module loaded, and its fallback device (no local, no remote,
		// the probe's own parameters) already takes that slot:
		// newlink only gets that far once the kind exists.
		return nil
	}
	if err != nil {
		return fmt.Errorf("ip link add %s type %s: %w", probeLink, l.Type(), err)
	}
	return del(l)
}

// Modprobe is the command LoadModule runs (a variable for tests).
var Modprobe = "modprobe"

// Apply makes the change through h, a handle on the caller's namespace.
func (s Step) Apply(h *netlink.Handle) error { return s.ApplyIn(h, netns.None()) }

// ApplyIn makes the change through h, bound to the namespace ns (the
// fou add request is sent on a socket of its own, opened in ns).
func (s Step) ApplyIn(h *netlink.Handle, ns netns.NsHandle) error {
	switch s.Kind {
	case LoadModule:
		// First ask the kernel to load it on demand, as `ip link add ...
		// type ipip` does: request_module runs in the kernel, so it also
		// works from the hardened unit (ProtectKernelModules, no
		// CAP_SYS_MODULE), where modprobe itself is refused.
		// A link of its kind or its netlink family exists now: loaded (or
		// built in, which /sys/module does not always show).
		if autoload(h, s.Module) == nil {
			return nil
		}
		out, err := exec.Command(Modprobe, s.Module).CombinedOutput()
		if err == nil {
			return nil
		}
		if errors.Is(err, exec.ErrNotFound) {
			return fmt.Errorf("load the %s module: no %s (kmod) on PATH: %w", s.Module, Modprobe, err)
		}
		msg := strings.TrimSpace(string(out))
		if strings.Contains(msg, "not found") {
			return fmt.Errorf("kernel has no %s module (modprobe %s: %s): %w", s.Module, s.Module, msg, err)
		}
		return fmt.Errorf("modprobe %s: %s: %w", s.Module, msg, err)
	case CreateLink:
		var l netlink.Link
		if s.Link == DevIPv6 {
			// Proto 0 is "any" (ip6ip6 and ip4ip6), as on the fallback device.
			l = &netlink.Ip6tnl{LinkAttrs: netlink.LinkAttrs{Name: s.Link}}
		} else {
			// PMTU discovery on, as on the fallback device.
			l = &netlink.Iptun{LinkAttrs: netlink.LinkAttrs{Name: s.Link}, PMtuDisc: 1}
		}
		// EEXIST is an error: a device that appeared since Observe is not ours.
		if err := h.LinkAdd(l); err != nil {
			return fmt.Errorf("%s: %w", s.Command(), err)
		}
		return nil
	case SetUp, SetDown, DeleteLink:
		l, err := h.LinkByName(s.Link)
		if err != nil {
			var nf netlink.LinkNotFoundError
			if errors.As(err, &nf) {
				if s.Kind == SetUp {
					return fmt.Errorf("%s: no %s device (its module is loaded: is net.core.fb_tunnels_only_for_init_net set? the next pass creates it): %w", s.Command(), s.Link, err)
				}
				return nil // gone already: nothing to undo
			}
			return fmt.Errorf("%s: look up link: %w", s.Command(), err)
		}
		switch s.Kind {
		case SetUp:
			err = h.LinkSetUp(l)
		case SetDown:
			err = h.LinkSetDown(l)
		default:
			err = h.LinkDel(l)
		}
		if err != nil {
			return fmt.Errorf("%s: %w", s.Command(), err)
		}
		return nil
	case AddFou:
		// EALREADY (a socket that appeared since Observe) stays an error:
		// recording it as ours would delete someone else's port later.
		if err := fouAdd(ns, s.Fou); err != nil {
			return fmt.Errorf("%s: %w", s.Command(), err)
		}
		return nil
	case DelFou:
		err := h.FouDel(netlink.Fou{Family: s.Fou.af(), Port: int(s.Fou.Port)})
		// The kernel answers EINVAL when no socket matches: already gone.
		if err != nil && !errors.Is(err, unix.EINVAL) && !errors.Is(err, unix.ENOENT) {
			return fmt.Errorf("%s: %w", s.Command(), err)
		}
		return nil
	}
	return fmt.Errorf("unknown tunnel step %d", s.Kind)
}
