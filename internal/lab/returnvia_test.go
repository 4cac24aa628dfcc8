//go:build e2e

package lab_test

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/dsr-agent/dsr-agent/internal/netnstest"
)

// The L7 return path with a real transparent proxy: HAProxy from Debian
// (`source 0.0.0.0 usesrc clientip`, IPv6 `source :: usesrc clientip`) on the
// server segment, the client in another subnet behind a router that is the
// real server's default route. Dual stack, the same shape in both families:
//
//	client 10.88.1.10 ── router 10.88.1.1 | 10.88.2.1 (br0) ── LB 10.88.2.252 (HAProxy :80)
//	       fd88:1::10           fd88:1::1 | fd88:2::1       │         fd88:2::252
//	                                                       └── rs 10.88.2.21 (HTTP :8080)
//	                                                              fd88:2::21
//
// HAProxy connects to rs:8080 with the client's address as source, so the
// server's replies must go back through the LB. The LB does not forward
// (ip_forward 0): a packet that crosses it as a router is dropped, so a
// connection the server opens itself works only if it does not take the LB.
// The same holds for IPv6 (forwarding 0 on the LB, on in the router).
// netnstest.New turns DAD off (all and default) before any link exists here;
// the addresses also carry nodad.
type l7Lab struct {
	client, router, lb, rs *netnstest.NS
	agent                  string
	dir                    string
}

func newL7Lab(t *testing.T) *l7Lab {
	t.Helper()
	netnstest.RequireRoot(t)
	if _, err := exec.LookPath("haproxy"); err != nil {
		if os.Getenv("DSR_AGENT_REQUIRE_ROOT") == "1" {
			t.Fatal("haproxy not installed (mk/lab.packages)")
		}
		t.Skip("haproxy not installed")
	}
	l := &l7Lab{client: netnstest.New(t), router: netnstest.New(t), lb: netnstest.New(t), rs: netnstest.New(t),
		agent: netnstest.AgentBinary(t), dir: t.TempDir()}
	sh := func(ns *netnstest.NS, cmd string) {
		t.Helper()
		ns.Exec(t, "sh", "-ec", cmd)
	}
	// Cables: client-router, and the server segment (br0 in the router).
	cable := func(a *netnstest.NS, aName string, b *netnstest.NS, bName string) {
		t.Helper()
		out, err := exec.Command("ip", "link", "add", aName, "netns", a.Name, "type", "veth", "peer", "name", bName, "netns", b.Name).CombinedOutput()
		if err != nil {
			t.Fatalf("veth %s-%s: %v %s", aName, bName, err, out)
		}
	}
	cable(l.client, "eth0", l.router, "c0")
	cable(l.lb, "eth0", l.router, "lb0")
	cable(l.rs, "eth0", l.router, "rs0")
	sh(l.router, `sysctl -qw net.ipv4.ip_forward=1
		sysctl -qw net.ipv6.conf.all.forwarding=1
		ip link add br0 type bridge; ip link set br0 up
		for p in lb0 rs0; do ip link set $p master br0; ip link set $p up; done
		ip addr add 10.88.2.1/24 dev br0
		ip -6 addr add fd88:2::1/64 dev br0 nodad
		ip addr add 10.88.1.1/24 dev c0; ip link set c0 up
		ip -6 addr add fd88:1::1/64 dev c0 nodad
		# Count what the router forwards from the server's port 8080.
		nft add table ip count
		nft add chain ip count forwarded '{ type filter hook forward priority 0; }'
		# (oifname: with br_netfilter loaded, frames bridged to the LB pass
		# this hook too.)
		nft add rule ip count forwarded oifname c0 ip saddr 10.88.2.21 tcp sport 8080 counter
		nft add table ip6 count
		nft add chain ip6 count forwarded '{ type filter hook forward priority 0; }'
		nft add rule ip6 count forwarded oifname c0 ip6 saddr fd88:2::21 tcp sport 8080 counter`)
	sh(l.client, `ip addr add 10.88.1.10/24 dev eth0; ip link set eth0 up; ip route add default via 10.88.1.1
		ip -6 addr add fd88:1::10/64 dev eth0 nodad; ip -6 route add default via fd88:1::1`)
	sh(l.rs, `ip addr add 10.88.2.21/24 dev eth0; ip link set eth0 up; ip route add default via 10.88.2.1
		ip -6 addr add fd88:2::21/64 dev eth0 nodad; ip -6 route add default via fd88:2::1`)
	// The LB: HAProxy's transparent connections need their replies, which
	// are addressed to the client, delivered to the local socket.
	sh(l.lb, `ip addr add 10.88.2.252/24 dev eth0; ip link set eth0 up; ip route add default via 10.88.2.1
		sysctl -qw net.ipv4.ip_forward=0
		ip rule add fwmark 1 lookup 100; ip route add local 0.0.0.0/0 dev lo table 100
		nft add table ip transparent_lb
		nft add chain ip transparent_lb prerouting_ '{ type filter hook prerouting priority mangle; }'
		nft add rule ip transparent_lb prerouting_ ip saddr 10.88.2.21 tcp sport 8080 counter
		nft add rule ip transparent_lb prerouting_ socket transparent 1 meta mark set 1
		ip -6 addr add fd88:2::252/64 dev eth0 nodad; ip -6 route add default via fd88:2::1
		sysctl -qw net.ipv6.conf.all.forwarding=0
		ip -6 rule add fwmark 1 lookup 100; ip -6 route add local ::/0 dev lo table 100
		nft add table ip6 transparent_lb
		nft add chain ip6 transparent_lb prerouting_ '{ type filter hook prerouting priority mangle; }'
		nft add rule ip6 transparent_lb prerouting_ ip6 saddr fd88:2::21 tcp sport 8080 counter
		nft add rule ip6 transparent_lb prerouting_ socket transparent 1 meta mark set 1`)
	// HAProxy 2.6 reads a bare "source ::" as address ":" and port "":
	// the IPv6 wildcard needs its brackets.
	cfg := filepath.Join(l.dir, "haproxy.cfg")
	if err := os.WriteFile(cfg, []byte(`global
  log stderr format short local0 notice
defaults
  mode http
  log global
  timeout connect 2s
  timeout client 5s
  timeout server 5s
frontend web
  bind 10.88.2.252:80
  default_backend servers
backend servers
  server rs 10.88.2.21:8080 source 0.0.0.0 usesrc clientip
frontend web6
  bind [fd88:2::252]:80
  default_backend servers6
backend servers6
  server rs6 [fd88:2::21]:8080 source [::] usesrc clientip
`), 0o644); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	hp := exec.CommandContext(ctx, "ip", "netns", "exec", l.lb.Name, "haproxy", "-db", "-f", cfg)
	hp.Stdout, hp.Stderr = io.Discard, io.Discard
	if err := hp.Start(); err != nil {
		t.Fatalf("haproxy: %v", err)
	}
	t.Cleanup(func() { cancel(); _ = hp.Wait() })
	for _, addr := range []string{"10.88.2.252:80", "[fd88:2::252]:80"} {
		for deadline := time.Now().Add(20 * time.Second); ; {
			var err error
			l.lb.Do(t, func() {
				var c net.Conn
				if c, err = net.DialTimeout("tcp", addr, time.Second); err == nil {
					c.Close()
				}
			})
			if err == nil {
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("haproxy does not listen on %s: %v", addr, err)
			}
			time.Sleep(50 * time.Millisecond)
		}
	}
	// The real server: says which client address it sees.
	var ln net.Listener
	l.rs.Do(t, func() {
		var err error
		if ln, err = net.Listen("tcp", ":8080"); err != nil {
			t.Fatal(err)
		}
	})
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		fmt.Fprintf(w, "rs saw %s\n", r.RemoteAddr)
	})}
	go func() { _ = srv.Serve(ln) }()
	t.Cleanup(func() { srv.Close() })
	// The client's own service, for a connection the server opens.
	var cln net.Listener
	l.client.Do(t, func() {
		var err error
		if cln, err = net.Listen("tcp", ":8080"); err != nil {
			t.Fatal(err)
		}
	})
	go func() {
		for {
			c, err := cln.Accept()
			if err != nil {
				return
			}
			_, _ = c.Write([]byte("client\n"))
			c.Close()
		}
	}()
	t.Cleanup(func() { cln.Close() })
	return l
}

// get sends GET / to addr from inside ns (the socket is made on the
// namespace's thread; http.Client would dial from another one) and returns
// the body of a 200.
func get(t *testing.T, ns *netnstest.NS, addr string) (string, error) {
	t.Helper()
	var body string
	var err error
	ns.Do(t, func() {
		var c net.Conn
		if c, err = net.DialTimeout("tcp", addr, 4*time.Second); err != nil {
			return
		}
		defer c.Close()
		_ = c.SetDeadline(time.Now().Add(6 * time.Second))
		if _, err = io.WriteString(c, "GET / HTTP/1.0\r\nHost: l7\r\n\r\n"); err != nil {
			return
		}
		var resp *http.Response
		if resp, err = http.ReadResponse(bufio.NewReader(c), nil); err != nil {
			return
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		body = string(b)
		if resp.StatusCode != 200 {
			err = fmt.Errorf("HTTP %d: %s", resp.StatusCode, strings.TrimSpace(body))
		}
	})
	return body, err
}

// dial opens a TCP connection from ns and reads the first line.
func dial(t *testing.T, ns *netnstest.NS, addr string) (string, error) {
	t.Helper()
	var line string
	var err error
	ns.Do(t, func() {
		var c net.Conn
		c, err = net.DialTimeout("tcp", addr, 3*time.Second)
		if err != nil {
			return
		}
		defer c.Close()
		_ = c.SetReadDeadline(time.Now().Add(3 * time.Second))
		b := make([]byte, 64)
		n, rerr := c.Read(b)
		line, err = strings.TrimSpace(string(b[:n])), rerr
	})
	return line, err
}

func (l *l7Lab) apply(t *testing.T, yaml string) string {
	t.Helper()
	cfg := filepath.Join(l.dir, "config.yaml")
	if err := os.WriteFile(cfg, []byte(yaml), 0o644); err != nil {
		t.Fatal(err)
	}
	return l.rs.Exec(t, l.agent, "--config", cfg, "--state-dir", filepath.Join(l.dir, "state"), "apply")
}

// packets reads an nft counter's packet count from a table's only counter.
func packets(t *testing.T, ns *netnstest.NS, family, table, chain string) int {
	t.Helper()
	out := ns.Exec(t, "nft", "list", "chain", family, table, chain)
	i := strings.Index(out, "counter packets ")
	if i < 0 {
		t.Fatalf("no counter in %s %s %s:\n%s", family, table, chain, out)
	}
	n, err := strconv.Atoi(strings.Fields(out[i+len("counter packets "):])[0])
	if err != nil {
		t.Fatal(err)
	}
	return n
}

func TestReturnViaTransparentProxy(t *testing.T) {
	l := newL7Lab(t)
	const url = "10.88.2.252:80"

	base := "mode: loopback\ninterfaces: [eth0]\nvips: [{address: 10.88.2.100}]\n"
	out := l.apply(t, base+"return_via: {gateway: 10.88.2.252, ports: [{port: 8080}]}\n")
	if !strings.Contains(out, "ip rule add priority 8558 from 10.88.2.21 ipproto tcp sport 8080 lookup 8558 proto 213") {
		t.Fatalf("apply output:\n%s", out)
	}
	routerBefore, lbBefore := packets(t, l.router, "ip", "count", "forwarded"), packets(t, l.lb, "ip", "transparent_lb", "prerouting_")
	for i := 0; i < 5; i++ {
		body, err := get(t, l.client, url)
		if err != nil {
			t.Fatalf("through the transparent LB with return_via: %v", err)
		}
		// The server sees the client's own address, not the LB's.
		if !strings.HasPrefix(body, "rs saw 10.88.1.10:") {
			t.Fatalf("server saw %q, want the client 10.88.1.10", body)
		}
	}
	if n := packets(t, l.router, "ip", "count", "forwarded"); n != routerBefore {
		t.Errorf("%d replies from port 8080 went via the router instead of the LB\n%s", n-routerBefore, l.router.Exec(t, "nft", "list", "ruleset"))
	}
	if n := packets(t, l.lb, "ip", "transparent_lb", "prerouting_"); n <= lbBefore {
		t.Errorf("no reply from port 8080 reached the LB (%d before, %d after)", lbBefore, n)
	}

	// A connection the server opens itself (to port 8080 too: the rule
	// matches the source port) keeps the normal default route: the LB does
	// not forward, so it would fail through it.
	if line, err := dial(t, l.rs, "10.88.1.10:8080"); err != nil || line != "client" {
		t.Fatalf("the server's own connection: %q, %v", line, err)
	}

	// The daemon keeps it: a rule deleted by hand (or by a network
	// manager rewriting the policy database) is back at once.
	ctx, cancel := context.WithCancel(context.Background())
	daemon := exec.CommandContext(ctx, "ip", "netns", "exec", l.rs.Name, l.agent, "--config", filepath.Join(l.dir, "config.yaml"),
		"--state-dir", filepath.Join(l.dir, "state"), "run")
	daemon.Stdout, daemon.Stderr = io.Discard, io.Discard
	if err := daemon.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() { cancel(); _ = daemon.Wait() }()
	ruleOf8080 := []string{"rule", "del", "priority", "8558", "from", "10.88.2.21", "ipproto", "tcp", "sport", "8080", "lookup", "8558"}
	waitFor(t, "the daemon to start", func() bool {
		out, _ := l.rs.ExecErr(l.agent, "--config", filepath.Join(l.dir, "config.yaml"), "--state-dir", filepath.Join(l.dir, "state"), "apply")
		return strings.Contains(out, "systemctl reload")
	})
	l.rs.Exec(t, "ip", ruleOf8080...)
	waitFor(t, "the daemon to restore the deleted rule", func() bool {
		return strings.Contains(l.rs.Exec(t, "ip", "rule", "show"), "from 10.88.2.21 ipproto tcp sport 8080 lookup 8558")
	})
	if _, err := get(t, l.client, url); err != nil {
		t.Fatalf("after the daemon's repair: %v", err)
	}
	cancel()
	_ = daemon.Wait()

	// The seed's whole default route, for contrast: the L7 path works, and
	// the server's own connections now go through the LB and die there.
	l.apply(t, base+"return_via: {gateway: 10.88.2.252}\n")
	if _, err := get(t, l.client, url); err != nil {
		t.Fatalf("whole default route: the L7 path fails: %v", err)
	}
	if line, err := dial(t, l.rs, "10.88.1.10:8080"); err == nil {
		t.Fatalf("whole default route: the server's own connection did not go via the LB (got %q): the lab cannot tell the two apart", line)
	}

	// remove restores the negative control's host.
	l.rs.Exec(t, l.agent, "--config", filepath.Join(l.dir, "config.yaml"), "--state-dir", filepath.Join(l.dir, "state"), "remove")
	if got := l.rs.Exec(t, "ip", "rule", "show"); strings.Contains(got, "8558") {
		t.Errorf("rules left after remove:\n%s", got)
	}
	// Negative control, after remove (it leaves half-open connections
	// behind, so it runs last): without return_via the server answers the
	// client's address by its default route (the router), the client
	// resets that unexpected SYN-ACK, HAProxy never connects.
	routerBefore = packets(t, l.router, "ip", "count", "forwarded")
	if body, err := get(t, l.client, url); err == nil {
		t.Fatalf("negative control: the L7 LB worked without return_via (%q): the lab does not test the return path", body)
	} else {
		t.Logf("negative control, as expected: %v", err)
	}
	if n := packets(t, l.router, "ip", "count", "forwarded"); n == routerBefore {
		t.Fatal("negative control: no reply of the server crossed the router: the failure has another cause")
	}

}

// The same proof for IPv6 (gateway6), in the same dual-stack lab: HAProxy's
// [fd88:2::252]:80 connects to [fd88:2::21]:8080 from the client's IPv6
// address; the LB delivers the replies to its transparent socket by its
// ip6 fwmark rule and does not forward IPv6.
func TestReturnViaTransparentProxyIPv6(t *testing.T) {
	l := newL7Lab(t)
	const url6, url4 = "[fd88:2::252]:80", "10.88.2.252:80"
	cfg, state := filepath.Join(l.dir, "config.yaml"), filepath.Join(l.dir, "state")

	base := "mode: loopback\ninterfaces: [eth0]\nvips: [{address: 10.88.2.100}]\n"
	out := l.apply(t, base+"return_via: {gateway: 10.88.2.252, gateway6: 'fd88:2::252', ports: [{port: 8080}]}\n")
	for _, want := range []string{
		"ip -6 route replace default via fd88:2::252 dev eth0 table 8558 proto 213",
		"ip -6 rule add priority 8558 from fd88:2::21 ipproto tcp sport 8080 lookup 8558 proto 213",
		"ip rule add priority 8558 from 10.88.2.21 ipproto tcp sport 8080 lookup 8558 proto 213",
	} {
		if !strings.Contains(out, want) {
			t.Fatalf("apply output lacks %q:\n%s", want, out)
		}
	}
	if out, err := l.rs.ExecErr(l.agent, "--config", cfg, "--state-dir", state, "status"); err != nil {
		t.Errorf("status right after apply: %v\n%s", err, out)
	}
	routerBefore, lbBefore := packets(t, l.router, "ip6", "count", "forwarded"), packets(t, l.lb, "ip6", "transparent_lb", "prerouting_")
	for i := 0; i < 5; i++ {
		body, err := get(t, l.client, url6)
		if err != nil {
			rules, _ := l.rs.ExecErr("ip", "-6", "rule", "show")
			routes, _ := l.rs.ExecErr("ip", "-6", "route", "show", "table", "8558")
			t.Fatalf("IPv6 through the transparent LB with return_via: %v\nrs: ip -6 rule\n%s\nrs: ip -6 route show table 8558\n%s", err, rules, routes)
		}
		// The server sees the client's own IPv6 address, not the LB's.
		if !strings.HasPrefix(body, "rs saw [fd88:1::10]:") {
			t.Fatalf("server saw %q, want the client [fd88:1::10]", body)
		}
	}
	if n := packets(t, l.router, "ip6", "count", "forwarded"); n != routerBefore {
		t.Errorf("%d IPv6 replies from port 8080 went via the router instead of the LB\n%s", n-routerBefore, l.router.Exec(t, "nft", "list", "ruleset"))
	}
	if n := packets(t, l.lb, "ip6", "transparent_lb", "prerouting_"); n <= lbBefore {
		t.Errorf("no IPv6 reply from port 8080 reached the LB (%d before, %d after)", lbBefore, n)
	}
	// gateway beside gateway6: the IPv4 path is kept too.
	if body, err := get(t, l.client, url4); err != nil || !strings.HasPrefix(body, "rs saw 10.88.1.10:") {
		t.Fatalf("IPv4 beside IPv6: %q, %v", body, err)
	}

	// The server's own IPv6 connection (to the client's port 8080) keeps
	// the main table: the LB does not forward IPv6, so it would die there.
	if line, err := dial(t, l.rs, "[fd88:1::10]:8080"); err != nil || line != "client" {
		t.Fatalf("the server's own IPv6 connection: %q, %v", line, err)
	}

	// The daemon repairs an IPv6 rule deleted by hand.
	ctx, cancel := context.WithCancel(context.Background())
	daemon := exec.CommandContext(ctx, "ip", "netns", "exec", l.rs.Name, l.agent, "--config", cfg, "--state-dir", state, "run")
	daemon.Stdout, daemon.Stderr = io.Discard, io.Discard
	if err := daemon.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() { cancel(); _ = daemon.Wait() }()
	waitFor(t, "the daemon to start", func() bool {
		out, _ := l.rs.ExecErr(l.agent, "--config", cfg, "--state-dir", state, "apply")
		return strings.Contains(out, "systemctl reload")
	})
	l.rs.Exec(t, "ip", "-6", "rule", "del", "priority", "8558", "from", "fd88:2::21", "ipproto", "tcp", "sport", "8080", "lookup", "8558")
	waitFor(t, "the daemon to restore the deleted IPv6 rule", func() bool {
		return strings.Contains(l.rs.Exec(t, "ip", "-6", "rule", "show"), "from fd88:2::21 ipproto tcp sport 8080 lookup 8558")
	})
	if _, err := get(t, l.client, url6); err != nil {
		t.Fatalf("IPv6 after the daemon's repair: %v", err)
	}
	cancel()
	_ = daemon.Wait()

	l.rs.Exec(t, l.agent, "--config", cfg, "--state-dir", state, "remove")
	if got := l.rs.Exec(t, "ip", "-6", "rule", "show"); strings.Contains(got, "8558") {
		t.Errorf("IPv6 rules left after remove:\n%s", got)
	}
	if got := l.rs.Exec(t, "ip", "-6", "route", "show", "table", "all", "proto", "213"); strings.TrimSpace(got) != "" {
		t.Errorf("IPv6 routes left after remove:\n%s", got)
	}
	// Negative control, last: without return_via the server answers the
	// client's IPv6 address by its default route (the router).
	routerBefore = packets(t, l.router, "ip6", "count", "forwarded")
	if body, err := get(t, l.client, url6); err == nil {
		t.Fatalf("negative control: the IPv6 L7 LB worked without return_via (%q): the lab does not test the return path", body)
	} else {
		t.Logf("IPv6 negative control, as expected: %v", err)
	}
	if n := packets(t, l.router, "ip6", "count", "forwarded"); n == routerBefore {
		t.Fatal("IPv6 negative control: no reply of the server crossed the router: the failure has another cause")
	}
}

func waitFor(t *testing.T, what string, ok func() bool) {
	t.Helper()
	for deadline := time.Now().Add(20 * time.Second); !ok(); time.Sleep(20 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
	}
}
