// Package arp owns the ARP-suppression sysctls of a DSR real server: the
// declarative table of what must be set, and reading/writing them under
// /proc/sys by path components (interface names may contain dots).
package arp

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"

	"github.com/vishvananda/netns"

	"github.com/dsr-agent/dsr-agent/internal/netnsutil"
)

// Rule is the kernel's verdict on the values of one ARP sysctl for a VIP held
// on lo (a global-scope address on another interface than the one the ARP
// arrives on or leaves by). The kernel uses max(all, iface) for both keys
// (IN_DEV_ARP_IGNORE, IN_DEV_ARP_ANNOUNCE in include/linux/inetdevice.h), so
// every value is judged as that effective value, and "a higher value is
// stricter" is false.
type Rule struct {
	Key string
	// Target is what dsr-agent writes when the value does not suppress.
	Target int
	// Suppresses reports whether the effective value keeps the kernel from
	// answering for (arp_ignore) or announcing (arp_announce) a VIP on lo.
	Suppresses func(v int) bool
	// Caveat is non-empty for a value that suppresses at a cost the operator
	// must hear about.
	Caveat func(v int) string
	// Decap marks a rule that guards decapsulated packets (tunnel mode), not
	// ARP: Suppression leaves it out, Decapsulation returns it.
	Decap bool
}

// Rules is the table of what really suppresses, with the kernel's reasons
// (net/ipv4/arp.c: arp_ignore() for replies, arp_solicit() for requests).
var Rules = []Rule{
	{
		// arp_ignore() switch on the effective value:
		//   0      reply for any local address, whatever interface holds it: answers.
		//   1      reply only if the target IP is on the receiving interface: a VIP
		//          on lo is never answered.
		//   2      as 1, and the sender must be in the target's subnet: never answered.
		//   3      inet_confirm_addr(..., RT_SCOPE_HOST): reply unless the address has
		//          host scope; a VIP on lo is global scope, so it IS answered.
		//   4..7   reserved, "case 4 ... 7: break" then reply: answers.
		//   8      "do not reply for all local addresses": never answered, but the
		//          host no longer answers for its own address either.
		//   >8     default case: reply: answers.
		Key: "arp_ignore", Target: 1,
		Suppresses: func(v int) bool { return v == 1 || v == 2 || v == 8 },
		Caveat: func(v int) string {
			if v == 8 {
				return "arp_ignore 8 answers ARP for nothing, not even this host's own address: neighbours reach it only through static or learned entries"
			}
			return ""
		},
	},
	{
		// arp_solicit() picks the sender IP of our ARP requests:
		//   0 (and the default case, so 3 and above): the packet's source if it is
		//          local, i.e. a VIP for replies sent from it: neighbours learn the VIP
		//          at this host's MAC.
		//   1      avoid a source outside the target's subnet: a VIP inside the
		//          NIC's subnet is still used.
		//   2      always the best address of the outgoing interface: never a VIP on lo.
		Key: "arp_announce", Target: 2,
		Suppresses: func(v int) bool { return v == 2 },
		Caveat:     func(int) string { return "" },
	},
	{
		// For rp_filter, Suppresses means "does not drop a decapsulated packet
		// whose source is routed via another interface" (a client of a VIP
		// reached over IPIP/GUE: the reply route to it is the default route,
		// not tunl0). The kernel (net/ipv4/fib_frontend.c) takes
		// r = IN_DEV_RPFILTER(idev) = max(all, dev) (IN_DEV_MAXCONF):
		//   0      fib_validate_source() accepts without a reverse lookup
		//          (unless the source is one of this host's own addresses).
		//   1      __fib_validate_source(): the route back to the source is not
		//          via dev, and "if (rpf == 1) goto e_rpf": dropped (-EXDEV,
		//          counted as IPReversePathFilter).
		//   2      loose: any route back to the source will do: accepted.
		//   >2     the code tests only "rpf == 1" and "rpf != 0", so 3, 255 and
		//          even negative values behave as 2 (the sysctl is a plain
		//          proc_dointvec: the kernel accepts any int).
		// Loose mode has a trap: when dev has no IPv4 address at all
		// ("if (no_addr) goto last_resort", then "if (rpf) goto e_rpf") every
		// non-zero value drops the packet. tunl0 must carry an IPv4 address
		// (the VIP /32 is enough: tunl0 is NOARP, so it is never announced)
		// for 2 to work; an address-less tunl0 needs 0 on the device and on
		// all (TestRPFilterKernel shows each case).
		Key: "rp_filter", Target: 2, Decap: true,
		Suppresses: func(v int) bool { return v != 1 },
		Caveat:     func(int) string { return "" },
	},
}

// Setting is one sysctl dsr-agent wants to suppress ARP, judged by Rule.
type Setting struct {
	Path Path
	Rule *Rule
	// Inherited marks a value that counts only through max(all, value):
	// "default", which interfaces created later start from. It is written
	// only when that maximum would not suppress; "all" and the LB-facing
	// interfaces must suppress by their own value, as the RHEL guide sets
	// them, so the intent is visible on each.
	Inherited bool
	// JudgedOnly marks a value that is read, so the settings after it are
	// judged by max(it, theirs), but never written: "all" for rp_filter,
	// where the device's own value fixes the maximum alone (max(1, 2) = 2),
	// and lowering "all" would loosen every interface of the host.
	JudgedOnly bool
}

// Value is what dsr-agent writes.
func (s Setting) Value() string { return strconv.Itoa(s.Rule.Target) }

// Suppression returns the settings for "all", "default" and each LB-facing
// interface, in a stable order ("all" first, since the others are judged
// against it).
func Suppression(ifaces []string) []Setting {
	var out []Setting
	for _, iface := range append([]string{"all", "default"}, ifaces...) {
		for i := range Rules {
			if Rules[i].Decap {
				continue
			}
			out = append(out, Setting{Path: ConfPath(iface, Rules[i].Key), Rule: &Rules[i], Inherited: iface == "default"})
		}
	}
	return out
}

// Decapsulation returns the settings that keep the kernel from dropping
// packets decapsulated onto devs (tunl0: IPIP and GUE both land there): "all"
// first, judged but never written, then each device, written to 2 (loose)
// when max(all, device) is 1 (strict). Loose mode accepts only on a device
// that holds an IPv4 address (the VIP /32 will do); on an address-less one
// the kernel drops under any non-zero value (see the rp_filter rule), which
// these settings cannot express: the caller must give the device an address.
func Decapsulation(devs []string) []Setting {
	var out []Setting
	for i := range Rules {
		if !Rules[i].Decap {
			continue
		}
		out = append(out, Setting{Path: ConfPath("all", Rules[i].Key), Rule: &Rules[i], JudgedOnly: true})
		for _, d := range devs {
			out = append(out, Setting{Path: ConfPath(d, Rules[i].Key), Rule: &Rules[i]})
		}
	}
	return out
}

// RuleFor is the rule of a sysctl of the table (nil for any other path).
func RuleFor(p Path) *Rule {
	if len(p) == 0 {
		return nil
	}
	for i := range Rules {
		if Rules[i].Key == p[len(p)-1] {
			return &Rules[i]
		}
	}
	return nil
}

// Effective is the value the kernel uses for an interface: max(all, iface).
// Values that are not numbers count as unknown (ok false).
func Effective(all, iface string) (v int, ok bool) {
	a, err1 := strconv.Atoi(all)
	i, err2 := strconv.Atoi(iface)
	if err1 != nil || err2 != nil {
		return 0, false
	}
	return max(a, i), true
}

// Needed is the pure judgement of the current values (cur: by Path.Key, ""
// when missing): the settings to write, each with the reason, in the order
// of want. "all" is judged first, and the others against the value "all"
// will have.
func Needed(want []Setting, cur map[string]string) []Verdict {
	allAfter := map[string]string{} // rule key -> value of all after the plan
	var out []Verdict
	for _, s := range want {
		c := cur[s.Path.Key()]
		iface := s.Path[len(s.Path)-2]
		v, err := strconv.Atoi(c)
		var reason string
		switch {
		case s.JudgedOnly:
			// Recorded below as the value "all" keeps; never written. A
			// missing or garbled one only makes the devices unjudgeable,
			// and so written.
		case c == "":
			reason = "missing"
		case err != nil:
			reason = fmt.Sprintf("is %q, want %s", c, s.Value())
		case s.Inherited:
			eff, ok := Effective(allAfter[s.Rule.Key], c)
			if !ok || !s.Rule.Suppresses(eff) {
				reason = fmt.Sprintf("is %s, want %s (interfaces created later would use max(all, default) = %d)", c, s.Value(), eff)
			}
		case s.Rule.Decap:
			if a, ok := allAfter[s.Rule.Key]; ok {
				eff, ok := Effective(a, c)
				switch {
				case !ok:
					reason = fmt.Sprintf("is %s, want %s (all is %q: only the device's own %s makes max(all, %s) loose)", c, s.Value(), a, s.Value(), iface)
				case !s.Rule.Suppresses(eff):
					reason = fmt.Sprintf("is %s, want %s (max(all, %s) = %d drops decapsulated packets)", c, s.Value(), iface, eff)
				}
			} else if !s.Rule.Suppresses(v) {
				reason = fmt.Sprintf("is %s, want %s", c, s.Value())
			}
		case !s.Rule.Suppresses(v):
			reason = fmt.Sprintf("is %s, want %s", c, s.Value())
		}
		if iface == "all" {
			allAfter[s.Rule.Key] = c
			if reason != "" {
				allAfter[s.Rule.Key] = s.Value()
			}
		}
		if reason != "" {
			out = append(out, Verdict{Setting: s, Reason: reason})
		}
	}
	return out
}

// Verdict is a setting whose current value must be replaced, and why.
type Verdict struct {
	Setting Setting
	Reason  string
}

// Caveats lists what the effective values on the given interfaces cost even
// though they suppress (arp_ignore 8), given the values after a plan.
func Caveats(ifaces []string, after map[string]string) []string {
	var out []string
	for _, iface := range ifaces {
		for i := range Rules {
			r := &Rules[i]
			eff, ok := Effective(after[ConfPath("all", r.Key).Key()], after[ConfPath(iface, r.Key).Key()])
			if !ok {
				continue
			}
			if c := r.Caveat(eff); c != "" {
				out = append(out, fmt.Sprintf("%s: %s", iface, c))
			}
		}
	}
	return out
}

// Path is a sysctl name as components below /proc/sys.
type Path []string

// String renders the path the way sysctl(8) accepts it: dotted, unless a
// component contains a dot (eth0.100), then with slashes.
func (p Path) String() string {
	for _, c := range p {
		if strings.Contains(c, ".") {
			return strings.Join(p, "/")
		}
	}
	return strings.Join(p, ".")
}

// Key is a stable map key for the path (slash-joined, unambiguous).
func (p Path) Key() string { return strings.Join(p, "/") }

// ParseKey is the inverse of Key.
func ParseKey(key string) Path { return Path(strings.Split(key, "/")) }

// ConfPath is net/ipv4/conf/<iface>/<key>.
func ConfPath(iface, key string) Path { return Path{"net", "ipv4", "conf", iface, key} }

// Proc reads and writes sysctls under /proc/sys. /proc/sys/net follows the
// network namespace of the calling thread, so when NS is set every access is
// made from a thread switched into that namespace.
type Proc struct {
	// Root is /proc/sys unless a test points it elsewhere.
	Root string
	// NS, when not -1, is the network namespace to access.
	NS netns.NsHandle
}

// NewProc accesses the sysctls of the caller's own network namespace.
func NewProc() *Proc { return &Proc{Root: "/proc/sys", NS: -1} }

// ErrNotFound reports a sysctl that does not exist (e.g. the interface is gone).
var ErrNotFound = errors.New("sysctl not found")

func (p *Proc) file(path Path) (string, error) {
	if len(path) == 0 {
		return "", errors.New("empty sysctl path")
	}
	for _, c := range path {
		if c == "" || c == "." || c == ".." || strings.Contains(c, "/") {
			return "", fmt.Errorf("sysctl path component %q: not a plain name", c)
		}
	}
	return filepath.Join(append([]string{p.Root}, path...)...), nil
}

func (p *Proc) do(fn func() error) error {
	if p.NS == -1 {
		return fn()
	}
	return netnsutil.Within(p.NS, fn)
}

// Read returns the current value, trimmed.
func (p *Proc) Read(path Path) (string, error) {
	f, err := p.file(path)
	if err != nil {
		return "", err
	}
	var val string
	err = p.do(func() error {
		b, err := os.ReadFile(f)
		if err != nil {
			if errors.Is(err, os.ErrNotExist) {
				return fmt.Errorf("read sysctl %s: %w", path, ErrNotFound)
			}
			return fmt.Errorf("read sysctl %s: %w", path, err)
		}
		val = strings.TrimSpace(string(b))
		return nil
	})
	return val, err
}

// Write sets the value.
func (p *Proc) Write(path Path, value string) error {
	f, err := p.file(path)
	if err != nil {
		return err
	}
	return p.do(func() error {
		// O_WRONLY without O_CREATE: a missing sysctl must not become a file.
		fh, err := os.OpenFile(f, os.O_WRONLY, 0)
		if err != nil {
			if errors.Is(err, os.ErrNotExist) {
				return fmt.Errorf("write sysctl %s: %w", path, ErrNotFound)
			}
			return fmt.Errorf("write sysctl %s=%s: %w", path, value, err)
		}
		_, werr := fh.WriteString(value)
		cerr := fh.Close()
		if werr != nil {
			return fmt.Errorf("write sysctl %s=%s: %w", path, value, werr)
		}
		if cerr != nil {
			return fmt.Errorf("write sysctl %s=%s: %w", path, value, cerr)
		}
		return nil
	})
}
