package agent

import (
	"bufio"
	"net"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/dsr-agent/dsr-agent/internal/netnstest"
)

// serveBanner accepts on a TCP listener opened in ns and writes banner to
// each connection, until the test ends.
func serveBanner(t *testing.T, ns *netnstest.NS, addr, banner string) {
	t.Helper()
	var ln net.Listener
	var err error
	ns.Do(t, func() { ln, err = net.Listen("tcp", addr) })
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			_, _ = c.Write([]byte(banner + "\n"))
			c.Close()
		}
	}()
}

// dialBanner connects from ns and returns the first line it is sent.
func dialBanner(t *testing.T, ns *netnstest.NS, addr string) string {
	t.Helper()
	var line string
	var err error
	ns.Do(t, func() {
		var c net.Conn
		if c, err = net.DialTimeout("tcp", addr, 5*time.Second); err != nil {
			return
		}
		defer c.Close()
		_ = c.SetDeadline(time.Now().Add(5 * time.Second))
		line, err = bufio.NewReader(c).ReadString('\n')
	})
	if err != nil {
		t.Fatalf("connect %s: %v", addr, err)
	}
	return strings.TrimSpace(line)
}

// Issue 17.3's reasoning on the real kernel: firewalld mode's redirect is a
// map keyed on the VIP, so a VIP port equal to a port served on the host's
// own address, redirected elsewhere, leaves connections to that address
// alone (the config still refuses it for dsr-agent's own health port: the
// port would mean two things); a redirect whose local port is the health port would hand the
// VIP's clients to the health listener (invalid, TestOwnHealthTrafficIsNotRouted);
// and a return_via rule for the health port sends health's replies to the
// L7 LB, which is why listing it is invalid.
func TestOwnTrafficBesideRedirectsAndReturnViaKernel(t *testing.T) {
	host, director := netnstest.New(t), netnstest.New(t)
	netnstest.Connect(t, host, "eth0", []string{"198.51.100.21/24"}, director, "d0", []string{"198.51.100.2/24"})
	director.Exec(t, "ip", "route", "add", "192.0.2.10/32", "via", "198.51.100.21")
	serveBanner(t, host, "198.51.100.21:8558", "health")
	serveBanner(t, host, ":8080", "service")
	h, err := OpenHostAt(filepath.Join(t.TempDir(), "state"), host.Handle)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(h.Close)
	cfg := mustConfig(t, "mode: firewalld\ninterfaces: [eth0]\nvips: [{address: 192.0.2.10, ports: [{port: 8558, to_port: 8080}]}]\n")
	if _, err := h.Apply(cfg); err != nil {
		t.Fatal(err)
	}
	if got := dialBanner(t, director, "198.51.100.21:8558"); got != "health" {
		t.Errorf("the director's check of the host's own address reached %q, want the health listener", got)
	}
	if got := dialBanner(t, director, "192.0.2.10:8558"); got != "service" {
		t.Errorf("VIP:8558 reached %q, want the service on 8080", got)
	}
	// Without a health section the port is no listener of dsr-agent's, and
	// return_via may list it: then every reply from it goes via the LB,
	// the health endpoint's included, were it there.
	rv := mustConfig(t, "mode: loopback\ninterfaces: [eth0]\nvips: [{address: 192.0.2.10}]\nreturn_via: {gateway: 198.51.100.252, ports: [{port: 8558}]}\n")
	if _, err := h.Apply(rv); err != nil {
		t.Fatal(err)
	}
	if got := host.Exec(t, "ip", "route", "get", "198.51.100.2", "from", "198.51.100.21", "ipproto", "tcp", "sport", "8558"); !strings.Contains(got, "via 198.51.100.252") {
		t.Errorf("a reply from port 8558 to the on-link director: %s, want via the LB", got)
	}
}
