package tunnel

import (
	"errors"
	"fmt"
	"net"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"

	"github.com/dsr-agent/dsr-agent/internal/nldump"
)

// Observed is the kernel's tunnel side as Observe found it: modules,
// devices, fou sockets.
type Observed struct {
	Modules map[string]bool // loaded or built in, by module name
	Links   map[string]Link // the tunnel devices present, by name
	Fou     []FouPort       // every fou socket (empty when fou is not loaded)
}

// Link is a tunnel device as observed.
type Link struct {
	Name string
	Type string // netlink kind: "ipip", "ip6tnl"
	Up   bool   // administratively up (IFF_UP)
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

// Observe reads the modules, the two tunnel devices and the fou sockets: two
// link requests and, when fou is loaded, one fou dump. It never loads a
// module (a fou request would autoload fou: the genl family lookup does).
func Observe(h *netlink.Handle) (Observed, error) {
	obs := Observed{Modules: map[string]bool{}, Links: map[string]Link{}}
	for _, m := range []string{ModIPIP, ModIP6Tnl, ModFou} {
		obs.Modules[m] = ModuleLoaded(m)
	}
	for _, d := range devices {
		l, err := h.LinkByName(d.dev)
		if err != nil {
			var nf netlink.LinkNotFoundError
			if errors.As(err, &nf) {
				continue
			}
			return obs, fmt.Errorf("look up %s: %w", d.dev, err)
		}
		obs.Links[d.dev] = Link{Name: d.dev, Type: l.Type(), Up: l.Attrs().Flags&net.FlagUp != 0}
	}
	if !obs.Modules[ModFou] {
		return obs, nil
	}
	ports, err := ListFou(h)
	if err != nil {
		return obs, err
	}
	obs.Fou = ports
	return obs, nil
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
