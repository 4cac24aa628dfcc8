package tunnel

import (
	"errors"
	"fmt"
	"slices"

	"golang.org/x/sys/unix"
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

// Owned is what dsr-agent made, for the caller to keep in its state file.
type Owned struct {
	// LinksUp: devices dsr-agent set up (they were down or absent).
	LinksUp []string `json:"links_up,omitempty"`
	// LinksCreated: devices dsr-agent created (no fallback device in this
	// namespace); removal deletes them.
	LinksCreated []string `json:"links_created,omitempty"`
	FouPorts     []FouKey `json:"fou_ports,omitempty"`
}

// Record updates owned after s was applied successfully.
func (o *Owned) Record(s Step) {
	if s.record != nil {
		s.record(o)
	}
}

// Empty reports whether nothing is owned.
func (o Owned) Empty() bool {
	return len(o.LinksUp) == 0 && len(o.LinksCreated) == 0 && len(o.FouPorts) == 0
}

func addOnce[T comparable](list []T, v T) []T {
	if slices.Contains(list, v) {
		return list
	}
	return append(list, v)
}

func drop[T comparable](list []T, v T) []T {
	return slices.DeleteFunc(list, func(x T) bool { return x == v })
}

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

// Needed returns the steps that bring obs to spec, given what dsr-agent owns
// (owned things the spec no longer wants are removed). It is pure. A foreign
// object in the way is a *ConflictError naming it; the steps returned with
// it are still the ones that can be taken.
func Needed(spec Spec, obs Observed, owned Owned) ([]Step, error) {
	var steps, removals []Step
	var errs []error
	loaded := map[string]bool{}
	load := func(m string) {
		if !obs.Modules[m] && !loaded[m] {
			loaded[m] = true
			steps = append(steps, LoadStep(m))
		}
	}
	for _, d := range devices {
		l, present := obs.Links[d.dev]
		if !d.want(spec) {
			if !present {
				continue
			}
			if slices.Contains(owned.LinksCreated, d.dev) {
				removals = append(removals, deleteLinkStep(d.dev))
			} else if slices.Contains(owned.LinksUp, d.dev) && l.Up {
				removals = append(removals, setDownStep(d.dev))
			}
			continue
		}
		switch {
		case present && l.Type != d.kind:
			errs = append(errs, &ConflictError{fmt.Sprintf("%s exists as a %s device, not %s: not dsr-agent's; rename or delete it", d.dev, l.Type, d.kind)})
		case present && l.Up:
		case present:
			steps = append(steps, setUpStep(d.dev))
		case !obs.Modules[d.module]:
			// Loading the module creates the fallback device (down).
			load(d.module)
			steps = append(steps, setUpStep(d.dev))
		default:
			// Module loaded, no fallback device: fb_tunnels_only_for_init_net.
			steps = append(steps, createLinkStep(d.dev), setUpStep(d.dev))
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
	for _, p := range obs.Fou {
		have[p.FouKey] = p
	}
	for _, k := range sortedKeys(want) {
		p, ok := have[k]
		switch {
		case !ok:
			load(ModFou)
			steps = append(steps, addFouStep(k))
		case p.Encap != "gue":
			errs = append(errs, &ConflictError{fmt.Sprintf("fou port %s exists with %s, not gue: not dsr-agent's; remove it (%s fou del port %d) or choose another tunnel.port",
				k, p.describe(), k.ipFlag(), k.Port)})
		}
	}
	for _, k := range owned.FouPorts {
		if _, ok := have[k]; ok && !want[k] {
			removals = append(removals, delFouStep(k))
		}
	}
	// Module loads come first (the other steps need them); removals last,
	// fou sockets before devices so nothing is unwrapped onto a device that
	// is going away (the Kind order).
	slices.SortStableFunc(steps, func(a, b Step) int { return b2i(a.Kind != LoadModule) - b2i(b.Kind != LoadModule) })
	slices.SortStableFunc(removals, func(a, b Step) int { return int(a.Kind) - int(b.Kind) })
	return append(steps, removals...), errors.Join(errs...)
}

// Remove returns the steps that undo what owned records (and obs still shows).
func Remove(obs Observed, owned Owned) []Step {
	steps, _ := Needed(Spec{}, obs, owned)
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
