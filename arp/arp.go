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

// suppression is what a loopback-mode real server needs on "all" and on each
// LB-facing interface. The kernel takes max(all, iface) for both keys, so
// "all" alone would do; the per-interface entries make the intent visible to
// anyone reading the interface's own values, as the RHEL guide does.
var suppression = []struct {
	key, value string
	why        string
}{
	// 1: answer ARP only for addresses configured on the interface the
	// request came in on; VIPs live on lo, so they are never answered.
	{"arp_ignore", "1", "answer ARP only for addresses on the receiving interface"},
	// 2: always use the outgoing interface's own address as the sender IP of
	// our ARP requests, never a VIP (which would teach neighbours the VIP).
	{"arp_announce", "2", "never use a VIP as the sender of ARP requests"},
}

// Setting is one sysctl with the value dsr-agent wants.
type Setting struct {
	Path  Path
	Value string
	Why   string
}

// SatisfiedBy reports whether the current value is at least as strict as
// the wanted one. For both keys a higher value is stricter (arp_ignore 2, 3
// or 8 answer even less than 1), and an operator's stricter choice stays.
func (s Setting) SatisfiedBy(cur string) bool {
	want, err1 := strconv.Atoi(s.Value)
	have, err2 := strconv.Atoi(cur)
	if err1 != nil || err2 != nil {
		return cur == s.Value
	}
	return have >= want
}

// ValueFor is the value dsr-agent writes to a sysctl of its table ("" for
// any other path).
func ValueFor(p Path) string {
	if len(p) == 0 {
		return ""
	}
	for _, s := range suppression {
		if s.key == p[len(p)-1] {
			return s.value
		}
	}
	return ""
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

// Suppression returns the settings for "all" and each interface, in a stable
// order ("all" first).
func Suppression(ifaces []string) []Setting {
	var out []Setting
	for _, iface := range append([]string{"all"}, ifaces...) {
		for _, s := range suppression {
			out = append(out, Setting{Path: ConfPath(iface, s.key), Value: s.value, Why: s.why})
		}
	}
	return out
}

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

// WatchPaths are the sysctls whose values decide whether the kernel answers
// ARP for a VIP on the given LB-facing interfaces: the kernel takes
// max(all, iface), and interfaces created later start from "default". A
// daemon polls these (the kernel sends no netconf notification for them).
func WatchPaths(ifaces []string) []Path {
	var out []Path
	for _, iface := range append([]string{"all", "default"}, ifaces...) {
		for _, s := range suppression {
			out = append(out, ConfPath(iface, s.key))
		}
	}
	return out
}
