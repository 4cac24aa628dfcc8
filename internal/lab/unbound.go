package lab

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"time"
)

// Unbound is Debian's unbound DNS server running in a real server's
// namespace (`ip netns exec NS unbound -d -c FILE`), answering WhoamiName TXT
// with the server's name from a local-data record.
type Unbound struct {
	Node    *Node
	Config  string // path of its config file
	LogPath string // its stderr
	cmd     *exec.Cmd
	done    chan struct{}
	waitErr error
}

// UnboundOptions shape an unbound instance.
type UnboundOptions struct {
	// Ports to listen on (default DNSPort). In firewalld mode: the redirect's
	// target port, DNSRedirectPort.
	Ports []int
	// Wildcard binds `interface: 0.0.0.0` and `::` *without*
	// interface-automatic: the classic DSR mistake (unbound then answers from
	// the kernel's choice of source address, not from the VIP). The default,
	// `interface-automatic: yes`, listens on the wildcard with IP_PKTINFO
	// and copies each query's destination address to the answer's source.
	Wildcard bool
	// Addresses, when set, binds unbound to exactly these addresses (for
	// example the VIP, which works where the VIP is a local address:
	// loopback and arptables modes) instead of the wildcard.
	Addresses []netip.Addr
}

// UnboundBinary finds unbound (Debian puts it in /usr/sbin, which a user's
// PATH may lack).
func UnboundBinary() (string, error) {
	if p, err := exec.LookPath("unbound"); err == nil {
		return p, nil
	}
	if _, err := os.Stat("/usr/sbin/unbound"); err == nil {
		return "/usr/sbin/unbound", nil
	}
	return "", errors.New("unbound not found (apt-get install unbound; it is in mk/lab.packages)")
}

// UnboundTestConfig is an unbound config for an instance that lives only
// as long as a test or the lab: in the foreground, without chroot,
// privilege drop, syslog, remote control or caches to speak of, UDP only,
// its files in dir. server are the instance's own `server:` lines
// (interfaces, port, address families, access control, zones), unindented.
func UnboundTestConfig(dir string, server ...string) string {
	var b strings.Builder
	b.WriteString("server:\n")
	for _, l := range server {
		b.WriteString("  " + l + "\n")
	}
	fmt.Fprintf(&b, `  do-udp: yes
  do-tcp: no
  do-daemonize: no
  chroot: ""
  username: ""
  directory: %q
  pidfile: ""
  use-syslog: no
  logfile: ""
  verbosity: 1
  num-threads: 1
  msg-cache-size: 1m
  rrset-cache-size: 1m
  module-config: "iterator"
remote-control:
  control-enable: no
`, dir)
	return b.String()
}

// UnboundConfig renders the config of rs's unbound (UnboundTestConfig)
// with an authoritative local zone with one TXT record naming the server.
func UnboundConfig(rs *Node, dir string, o UnboundOptions) string {
	ports := o.Ports
	if len(ports) == 0 {
		ports = []int{DNSPort}
	}
	var server []string
	switch {
	case len(o.Addresses) > 0:
		server = append(server, "# bound to given addresses: answers leave from the address the socket is bound to")
		for _, a := range o.Addresses {
			for _, p := range ports {
				server = append(server, fmt.Sprintf("interface: %s@%d", a, p))
			}
		}
	case o.Wildcard:
		server = append(server, "# WRONG for DSR: wildcard sockets without IP_PKTINFO answer from the host's own address")
		for _, p := range ports {
			server = append(server, fmt.Sprintf("interface: 0.0.0.0@%d", p), fmt.Sprintf("interface: ::@%d", p))
		}
	default:
		server = append(server, "# wildcard sockets with IP_PKTINFO: each answer leaves from the address its query was sent to (the VIP)",
			"interface-automatic: yes")
		ps := make([]string, len(ports))
		for i, p := range ports {
			ps[i] = fmt.Sprint(p)
		}
		server = append(server, fmt.Sprintf("interface-automatic-ports: %q", strings.Join(ps, " ")))
	}
	server = append(server,
		fmt.Sprintf("port: %d", ports[0]),
		"do-ip4: yes",
		"do-ip6: yes",
		"access-control: 0.0.0.0/0 allow",
		"access-control: ::/0 allow",
		`local-zone: "dsr.lab." static`,
		fmt.Sprintf(`local-data: 'whoami.dsr.lab. 0 IN TXT "%s"'`, whoami(rs, "unbound")))
	return UnboundTestConfig(dir, server...)
}

// StartUnbound writes the config into dir and starts unbound in rs's
// namespace; it returns once unbound answers a query on 127.0.0.1 (or the
// first of o.Addresses). Stop it
// (tests: t.Cleanup) before the lab is closed.
func StartUnbound(ctx context.Context, rs *Node, dir string, o UnboundOptions) (*Unbound, error) {
	bin, err := UnboundBinary()
	if err != nil {
		return nil, err
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, fmt.Errorf("%s: unbound dir: %w", rs.Name, err)
	}
	u := &Unbound{Node: rs, Config: filepath.Join(dir, "unbound.conf"), LogPath: filepath.Join(dir, "unbound.log"), done: make(chan struct{})}
	if err := os.WriteFile(u.Config, []byte(UnboundConfig(rs, dir, o)), 0o644); err != nil {
		return nil, fmt.Errorf("%s: unbound config: %w", rs.Name, err)
	}
	logf, err := os.Create(u.LogPath)
	if err != nil {
		return nil, fmt.Errorf("%s: unbound log: %w", rs.Name, err)
	}
	defer logf.Close()
	u.cmd = exec.Command("ip", "netns", "exec", rs.NS, bin, "-d", "-c", u.Config)
	u.cmd.Stdout, u.cmd.Stderr = logf, logf
	// If this process dies, unbound must not outlive it in a deleted namespace.
	u.cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := u.cmd.Start(); err != nil {
		return nil, fmt.Errorf("%s: start unbound: %w", rs.Name, err)
	}
	go func() {
		u.waitErr = u.cmd.Wait()
		close(u.done)
	}()
	port := DNSPort
	if len(o.Ports) > 0 {
		port = o.Ports[0]
	}
	ready := netip.MustParseAddr("127.0.0.1")
	if len(o.Addresses) > 0 {
		ready = o.Addresses[0]
	}
	if err := u.waitReady(ctx, netip.AddrPortFrom(ready, uint16(port))); err != nil {
		u.Stop()
		return nil, fmt.Errorf("%s: unbound: %w\n%s", rs.Name, err, u.Log())
	}
	return u, nil
}

func (u *Unbound) waitReady(ctx context.Context, addr netip.AddrPort) error {
	deadline := time.Now().Add(10 * time.Second)
	for {
		select {
		case <-u.done:
			return fmt.Errorf("exited during startup: %v", u.waitErr)
		default:
		}
		var r DNSResult
		err := u.Node.Do(func() error {
			r = queryFrom(addr, 200*time.Millisecond)
			return nil
		})
		if err != nil {
			return err
		}
		if r.Err == nil && r.Server == u.Node.Name {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("not answering on %s after 10s: %v", addr, r.Err)
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(20 * time.Millisecond):
		}
	}
}

// Log returns what unbound printed so far.
func (u *Unbound) Log() string {
	b, _ := os.ReadFile(u.LogPath)
	return string(b)
}

// Stop terminates unbound (SIGTERM, then SIGKILL after 5s). Idempotent.
func (u *Unbound) Stop() {
	select {
	case <-u.done:
		return
	default:
	}
	_ = u.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-u.done:
	case <-time.After(5 * time.Second):
		_ = u.cmd.Process.Kill()
		<-u.done
	}
}
