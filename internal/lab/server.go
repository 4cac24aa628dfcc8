package lab

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"github.com/vishvananda/netlink"
)

// ReplyPadding makes every HTTP answer much larger than its request, so the
// byte counters show at a glance which direction went through the director.
const ReplyPadding = 16 << 10

// Serve starts an HTTP server on every real server that names itself. The
// listening sockets are created inside each server's namespace; serving then
// runs in ordinary goroutines of this process. It listens on the wildcard
// address of ServicePort (loopback/arptables modes: the VIP is local) and of
// RedirectPort (firewalld mode: the redirect rewrites the destination to the
// NIC's primary address, so a VIP-bound listener would never see it).
// The servers stop when ctx ends.
func (l *Lab) Serve(ctx context.Context) error {
	for _, rs := range l.Servers {
		body := fmt.Sprintf("served-by %s %s\n", rs.Name, rs.IP4) + strings.Repeat(".", ReplyPadding) + "\n"
		srv := &http.Server{
			Handler: http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
				w.Header().Set("Content-Type", "text/plain")
				_, _ = w.Write([]byte(body))
			}),
			ReadHeaderTimeout: 5 * time.Second,
		}
		for _, port := range []int{ServicePort, RedirectPort} {
			var ln net.Listener
			err := rs.Do(func() error {
				var err error
				ln, err = net.Listen("tcp", fmt.Sprintf("[::]:%d", port))
				return err
			})
			if err != nil {
				return fmt.Errorf("%s: listen on port %d: %w", rs.Name, port, err)
			}
			go func() { _ = srv.Serve(ln) }()
		}
		go func() {
			<-ctx.Done()
			_ = srv.Close()
		}()
	}
	return nil
}

// Mode is a dsr-agent mode.
type Mode string

// dsr-agent modes.
const (
	ModeLoopback  Mode = "loopback"
	ModeARPTables Mode = "arptables"
	ModeFirewalld Mode = "firewalld"
)

// Modes lists every dsr-agent mode.
var Modes = []Mode{ModeLoopback, ModeARPTables, ModeFirewalld}

// Agent drives a dsr-agent binary inside real servers' namespaces, the way an
// operator would run it on a real host: `ip netns exec NS dsr-agent ...`.
type Agent struct {
	Bin string // path to dsr-agent
	Dir string // parent of the per-server config and state directories
}

// Result is one dsr-agent invocation.
type Result struct {
	Args     []string
	Output   string
	ExitCode int
	Took     time.Duration
}

// ConfigPath and StateDir are the per-server files the agent uses.
func (a *Agent) ConfigPath(rs *Node) string { return filepath.Join(a.Dir, rs.NS, "config.yaml") }

// StateDir is the server's --state-dir.
func (a *Agent) StateDir(rs *Node) string { return filepath.Join(a.Dir, rs.NS, "state") }

// Config renders a dsr-agent config for rs in the given mode with the VIPs:
// HTTP on ServicePort/tcp and DNS on DNSPort/udp (firewalld mode redirects
// them to RedirectPort and DNSRedirectPort).
func Config(mode Mode, vips ...netip.Addr) string {
	var b strings.Builder
	fmt.Fprintf(&b, "mode: %s\ninterfaces: [%s]\nvips:\n", mode, NIC)
	for _, v := range vips {
		fmt.Fprintf(&b, "  - address: %s\n    ports:\n", v)
		fmt.Fprintf(&b, "      - {port: %d, protocol: tcp, to_port: %d}\n", ServicePort, RedirectPort)
		fmt.Fprintf(&b, "      - {port: %d, protocol: udp, to_port: %d}\n", DNSPort, DNSRedirectPort)
	}
	return b.String()
}

// ConfigPrefix is Config of the single VIPs plus a whole prefix of VIPs
// (AnyIP) with the same ports.
func ConfigPrefix(mode Mode, prefix netip.Prefix, vips ...netip.Addr) string {
	one := strings.Replace(Config(mode, prefix.Addr()), "  - address: "+prefix.Addr().String(), "  - prefix: "+prefix.String(), 1)
	if len(vips) == 0 {
		return one
	}
	_, entry, _ := strings.Cut(one, "vips:\n")
	return Config(mode, vips...) + entry
}

// ApplyYAML writes rs's config file as given and runs `dsr-agent apply`.
func (a *Agent) ApplyYAML(ctx context.Context, rs *Node, yaml string) (Result, error) {
	if err := a.writeYAML(rs, yaml); err != nil {
		return Result{}, err
	}
	return a.Run(ctx, rs, "apply")
}

// WriteConfig writes rs's config file for mode and VIPs.
func (a *Agent) WriteConfig(rs *Node, mode Mode, vips ...netip.Addr) error {
	return a.writeYAML(rs, Config(mode, vips...))
}

func (a *Agent) writeYAML(rs *Node, yaml string) error {
	if err := os.MkdirAll(a.StateDir(rs), 0o700); err != nil {
		return fmt.Errorf("%s: state dir: %w", rs.Name, err)
	}
	// Written atomically so a concurrently starting agent never reads half a file.
	tmp := a.ConfigPath(rs) + ".tmp"
	if err := os.WriteFile(tmp, []byte(yaml), 0o600); err != nil {
		return fmt.Errorf("%s: write config: %w", rs.Name, err)
	}
	if err := os.Rename(tmp, a.ConfigPath(rs)); err != nil {
		return fmt.Errorf("%s: write config: %w", rs.Name, err)
	}
	return nil
}

// Run runs `dsr-agent --config F --state-dir D args...` inside rs's namespace.
// A non-zero exit is returned as an error that includes the output.
func (a *Agent) Run(ctx context.Context, rs *Node, args ...string) (Result, error) {
	full := append([]string{"netns", "exec", rs.NS, a.Bin, "--config", a.ConfigPath(rs), "--state-dir", a.StateDir(rs)}, args...)
	start := time.Now()
	cmd := exec.CommandContext(ctx, "ip", full...)
	// On cancellation (Ctrl-C) ask the agent to stop instead of killing it
	// in the middle of a change; kill only if it does not exit in time.
	cmd.Cancel = func() error { return cmd.Process.Signal(syscall.SIGTERM) }
	cmd.WaitDelay = 10 * time.Second
	out, err := cmd.CombinedOutput()
	r := Result{Args: append([]string{"ip"}, full...), Output: string(out), Took: time.Since(start)}
	if err != nil {
		var ee *exec.ExitError
		if errors.As(err, &ee) {
			r.ExitCode = ee.ExitCode()
		} else {
			r.ExitCode = -1
		}
		return r, fmt.Errorf("%s: dsr-agent %s: %w\n%s", rs.Name, strings.Join(args, " "), err, out)
	}
	return r, nil
}

// Apply writes the config for mode and runs `dsr-agent apply`.
func (a *Agent) Apply(ctx context.Context, rs *Node, mode Mode, vips ...netip.Addr) (Result, error) {
	if err := a.WriteConfig(rs, mode, vips...); err != nil {
		return Result{}, err
	}
	return a.Run(ctx, rs, "apply")
}

// Remove runs `dsr-agent remove`.
func (a *Agent) Remove(ctx context.Context, rs *Node) (Result, error) {
	return a.Run(ctx, rs, "remove")
}

// ConfigureByHand sets a real server up the way the old guides do, without
// dsr-agent: VIP/32 (/128) on lo, and, when suppress is true, arp_ignore=1 and
// arp_announce=2. With suppress false it is the classic mistake (ARP flux)
// the negative control needs.
func (l *Lab) ConfigureByHand(rs *Node, suppress bool, vips ...netip.Addr) error {
	if suppress {
		err := rs.Do(func() error {
			for _, iface := range []string{"all", NIC} {
				if err := writeSysctl([]string{"net", "ipv4", "conf", iface, "arp_ignore"}, "1"); err != nil {
					return err
				}
				if err := writeSysctl([]string{"net", "ipv4", "conf", iface, "arp_announce"}, "2"); err != nil {
					return err
				}
			}
			return nil
		})
		if err != nil {
			return err
		}
	}
	lo, err := rs.NL.LinkByName("lo")
	if err != nil {
		return fmt.Errorf("%s: lo: %w", rs.Name, err)
	}
	for _, v := range vips {
		if err := addAddr(rs, lo, netip.PrefixFrom(v, v.BitLen())); err != nil {
			return err
		}
	}
	return nil
}

// AddVIPToNIC puts a VIP straight on a real server's NIC with nothing else:
// the server then answers ARP/NDP for it (IPv6 negative control).
func (l *Lab) AddVIPToNIC(rs *Node, vip netip.Addr) error {
	nic, err := rs.Link()
	if err != nil {
		return err
	}
	return addAddr(rs, nic, netip.PrefixFrom(vip, vip.BitLen()))
}

// HasAddr reports whether addr is configured on any interface of n.
func HasAddr(n *Node, addr netip.Addr) (string, bool, error) {
	fam := netlink.FAMILY_V4
	if addr.Is6() {
		fam = netlink.FAMILY_V6
	}
	addrs, err := n.NL.AddrList(nil, fam)
	if err != nil {
		if errors.Is(err, netlink.ErrDumpInterrupted) {
			return HasAddr(n, addr)
		}
		return "", false, fmt.Errorf("%s: address list: %w", n.Name, err)
	}
	for _, a := range addrs {
		if ip, ok := netip.AddrFromSlice(a.IP); ok && ip.Unmap() == addr {
			link, err := n.NL.LinkByIndex(a.LinkIndex)
			if err != nil {
				return "?", true, nil
			}
			return link.Attrs().Name, true, nil
		}
	}
	return "", false, nil
}

// Sysctl reads a sysctl (by path components) inside n's namespace.
func (n *Node) Sysctl(components ...string) (string, error) {
	var v string
	err := n.Do(func() error {
		var err error
		v, err = readSysctl(components)
		return err
	})
	return v, err
}

// UnconfigureByHand undoes ConfigureByHand: VIPs off lo first (so there is no
// instant with the VIP and without suppression), then the sysctls back to 0.
func (l *Lab) UnconfigureByHand(rs *Node, vips ...netip.Addr) error {
	lo, err := rs.NL.LinkByName("lo")
	if err != nil {
		return fmt.Errorf("%s: lo: %w", rs.Name, err)
	}
	for _, v := range vips {
		a := &netlink.Addr{IPNet: &net.IPNet{IP: v.AsSlice(), Mask: net.CIDRMask(v.BitLen(), v.BitLen())}}
		if err := rs.NL.AddrDel(lo, a); err != nil {
			return fmt.Errorf("%s: ip addr del %s dev lo: %w", rs.Name, v, err)
		}
	}
	return rs.Do(func() error {
		for _, iface := range []string{"all", NIC} {
			for _, k := range []string{"arp_ignore", "arp_announce"} {
				if err := writeSysctl([]string{"net", "ipv4", "conf", iface, k}, "0"); err != nil {
					return err
				}
			}
		}
		return nil
	})
}
