package tunnel

import (
	"errors"
	"fmt"

	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"
	"golang.org/x/sys/unix"
)

// Kind says what a Step does: the label callers show and count steps by,
// and the order removals run in (fou sockets before devices). What the step
// does is not looked up by kind: the Step carries it.
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

// Step is one change, in the order Needed returns them. Like the agent's
// Change it carries its own action: its constructor sets the command it
// shows, what it does to the kernel and what it records in Owned.
type Step struct {
	Kind   Kind
	Module string // LoadModule
	Link   string // CreateLink, SetUp, SetDown, DeleteLink
	Fou    FouKey // AddFou, DelFou

	command string
	do      func(h *netlink.Handle, ns netns.NsHandle) error
	record  func(*Owned)
}

// Command renders the step as the command an admin would type.
func (s Step) Command() string { return s.command }

func (s Step) String() string { return s.command }

// Removal reports whether the step undoes something (safety order: the
// caller runs removals after VIPs leave, adds before they arrive).
func (s Step) Removal() bool { return s.Kind >= DelFou }

// Apply makes the change through h, a handle on the caller's namespace.
func (s Step) Apply(h *netlink.Handle) error { return s.ApplyIn(h, netns.None()) }

// ApplyIn makes the change through h, bound to the namespace ns (the
// fou add request is sent on a socket of its own, opened in ns).
func (s Step) ApplyIn(h *netlink.Handle, ns netns.NsHandle) error {
	if s.do == nil {
		return fmt.Errorf("tunnel step %+v has no action: steps come from Needed, Remove or LoadStep", s)
	}
	return s.do(h, ns)
}

// LoadStep loads module (see loadModule).
func LoadStep(module string) Step {
	return Step{Kind: LoadModule, Module: module, command: "modprobe " + module,
		do: func(h *netlink.Handle, _ netns.NsHandle) error { return loadModule(h, module) }}
}

// createLinkStep creates a device with its fallback device's parameters,
// for a namespace without one (fb_tunnels_only_for_init_net).
func createLinkStep(dev string) Step {
	cmd := "ip link add " + dev + " type ipip"
	// PMTU discovery on, as on the fallback device.
	link := func() netlink.Link { return &netlink.Iptun{LinkAttrs: netlink.LinkAttrs{Name: dev}, PMtuDisc: 1} }
	if dev == DevIPv6 {
		cmd = "ip -6 link add " + dev + " type ip6tnl mode any"
		// Proto 0 is "any" (ip6ip6 and ip4ip6), as on the fallback device.
		link = func() netlink.Link { return &netlink.Ip6tnl{LinkAttrs: netlink.LinkAttrs{Name: dev}} }
	}
	return Step{Kind: CreateLink, Link: dev, command: cmd,
		do: func(h *netlink.Handle, _ netns.NsHandle) error {
			// EEXIST is an error: a device that appeared since Observe is not ours.
			if err := h.LinkAdd(link()); err != nil {
				return fmt.Errorf("%s: %w", cmd, err)
			}
			return nil
		},
		record: func(o *Owned) { o.LinksCreated = addOnce(o.LinksCreated, dev) }}
}

func setUpStep(dev string) Step {
	cmd := "ip link set " + dev + " up"
	return Step{Kind: SetUp, Link: dev, command: cmd,
		do: onLink(dev, cmd, func(h *netlink.Handle, l netlink.Link) error { return h.LinkSetUp(l) },
			func(err error) error {
				return fmt.Errorf("%s: no %s device (its module is loaded: is net.core.fb_tunnels_only_for_init_net set? the next pass creates it): %w", cmd, dev, err)
			}),
		record: func(o *Owned) { o.LinksUp = addOnce(o.LinksUp, dev) }}
}

func setDownStep(dev string) Step {
	cmd := "ip link set " + dev + " down"
	return Step{Kind: SetDown, Link: dev, command: cmd,
		do:     onLink(dev, cmd, func(h *netlink.Handle, l netlink.Link) error { return h.LinkSetDown(l) }, goneAlready),
		record: func(o *Owned) { o.LinksUp = drop(o.LinksUp, dev) }}
}

func deleteLinkStep(dev string) Step {
	cmd := "ip link del " + dev
	return Step{Kind: DeleteLink, Link: dev, command: cmd,
		do: onLink(dev, cmd, func(h *netlink.Handle, l netlink.Link) error { return h.LinkDel(l) }, goneAlready),
		record: func(o *Owned) {
			o.LinksUp = drop(o.LinksUp, dev)
			o.LinksCreated = drop(o.LinksCreated, dev)
		}}
}

// goneAlready: a device to take down or delete that is not there leaves
// nothing to undo.
func goneAlready(error) error { return nil }

// onLink looks dev up and runs op on it; a missing device is missing(err).
func onLink(dev, cmd string, op func(*netlink.Handle, netlink.Link) error, missing func(error) error) func(*netlink.Handle, netns.NsHandle) error {
	return func(h *netlink.Handle, _ netns.NsHandle) error {
		l, err := h.LinkByName(dev)
		if err != nil {
			var nf netlink.LinkNotFoundError
			if errors.As(err, &nf) {
				return missing(err)
			}
			return fmt.Errorf("%s: look up link: %w", cmd, err)
		}
		if err := op(h, l); err != nil {
			return fmt.Errorf("%s: %w", cmd, err)
		}
		return nil
	}
}

func addFouStep(k FouKey) Step {
	cmd := fmt.Sprintf("%s fou add port %d gue", k.ipFlag(), k.Port)
	return Step{Kind: AddFou, Fou: k, command: cmd,
		do: func(_ *netlink.Handle, ns netns.NsHandle) error {
			// EALREADY (a socket that appeared since Observe) stays an error:
			// recording it as ours would delete someone else's port later.
			if err := fouAdd(ns, k); err != nil {
				return fmt.Errorf("%s: %w", cmd, err)
			}
			return nil
		},
		record: func(o *Owned) { o.FouPorts = addOnce(o.FouPorts, k) }}
}

func delFouStep(k FouKey) Step {
	cmd := fmt.Sprintf("%s fou del port %d", k.ipFlag(), k.Port)
	return Step{Kind: DelFou, Fou: k, command: cmd,
		do: func(h *netlink.Handle, _ netns.NsHandle) error {
			err := h.FouDel(netlink.Fou{Family: k.af(), Port: int(k.Port)})
			// The kernel answers EINVAL when no socket matches: already gone.
			if err != nil && !errors.Is(err, unix.EINVAL) && !errors.Is(err, unix.ENOENT) {
				return fmt.Errorf("%s: %w", cmd, err)
			}
			return nil
		},
		record: func(o *Owned) { o.FouPorts = drop(o.FouPorts, k) }}
}
