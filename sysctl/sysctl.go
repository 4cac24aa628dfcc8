// Package sysctl is the mechanism for kernel parameters under /proc/sys:
// naming them by path components (interface names may contain dots),
// reading and writing them in a chosen network namespace, watching them for
// changes the kernel does not announce, and judging per-interface values the
// way the kernel combines them. Which values are right is policy and lives
// with its owner (arp/ for ARP suppression, rpfilter/ for the reverse-path
// filter of decapsulating devices).
package sysctl

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"

	"github.com/vishvananda/netns"

	"github.com/dsr-agent/dsr-agent/internal/netnsutil"
)

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

// Conf6Path is net/ipv6/conf/<iface>/<key>.
func Conf6Path(iface, key string) Path { return Path{"net", "ipv6", "conf", iface, key} }

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
