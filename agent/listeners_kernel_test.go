package agent

import (
	"net"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/dsr-agent/dsr-agent/internal/netnstest"
)

// listenerCfg serves 80/tcp and 53/udp on an IPv4 VIP and 443/tcp on an
// IPv6 one (loopback mode: the VIPs are on lo, the sockets see them as is).
const listenerCfg = "mode: loopback\ninterfaces: [eth0.100]\nvips:\n" +
	"  - {address: 192.0.2.10, ports: [{port: 80}, {port: 53, protocol: udp}]}\n" +
	"  - {address: '2001:db8::10', ports: [{port: 443}]}\n"

func listenerDiffs(r *Report) []string {
	var out []string
	for _, d := range r.Differences {
		if d.Kind == ListenerMissing {
			out = append(out, d.Subject)
		}
	}
	return out
}

// TestListenersKernel: status reads the real sockets of the namespace
// through sock_diag: a Go listener on the VIP, on the wildcard, dual-stack
// on [::], and on another address (the negative control: missing); a UDP
// server on the wildcard is present with a warning. apply neither reads nor
// "fixes" listeners.
func TestListenersKernel(t *testing.T) {
	th := newTestHostNoServices(t)
	th.listen("udp", ":53") // dual-stack wildcard
	th.apply(listenerCfg)
	r := th.status(listenerCfg)
	if got := listenerDiffs(r); !slices.Equal(got, []string{"192.0.2.10:80/tcp", "[2001:db8::10]:443/tcp"}) || r.InSync {
		t.Fatalf("no services yet: listener differences %q (in sync %v), want 80/tcp and 443/tcp\n%s", got, r.InSync, r)
	}
	if p := th.apply(listenerCfg); !p.Empty() {
		t.Fatalf("apply planned something for a missing listener:\n%s", p)
	}

	// The negative control: a service on the host's own address only.
	stop := th.listen("tcp4", "198.51.100.21:80")
	if got := listenerDiffs(th.status(listenerCfg)); !slices.Contains(got, "192.0.2.10:80/tcp") {
		t.Fatalf("a listener on another address counted for the VIP: %q", got)
	}
	stop()
	// On the VIP.
	stop = th.listen("tcp4", "192.0.2.10:80")
	if got := listenerDiffs(th.status(listenerCfg)); slices.Contains(got, "192.0.2.10:80/tcp") {
		t.Fatalf("listener on the VIP not seen: %q", got)
	}
	stop()
	// On the IPv4 wildcard.
	stop = th.listen("tcp4", "0.0.0.0:80")
	if got := listenerDiffs(th.status(listenerCfg)); slices.Contains(got, "192.0.2.10:80/tcp") {
		t.Fatalf("listener on 0.0.0.0 not seen: %q", got)
	}
	stop()
	// IPv6-only [::] serves the IPv6 VIP but not the IPv4 one.
	stop = th.listen("tcp6", "[::]:80")
	if got := listenerDiffs(th.status(listenerCfg)); !slices.Contains(got, "192.0.2.10:80/tcp") {
		t.Fatalf("a v6only [::]:80 counted for the IPv4 VIP: %q", got)
	}
	stop()
	// Dual-stack [::] (no IPV6_V6ONLY) serves both families.
	th.listen("tcp", ":80")
	th.listen("tcp6", "[::]:443")
	r = th.status(listenerCfg)
	if !r.InSync {
		t.Fatalf("dual-stack listeners: not in sync:\n%s", r)
	}
	// UDP on the wildcard: present, and the reply-source warning.
	var warned bool
	for _, w := range r.Warnings {
		warned = warned || strings.Contains(w, "192.0.2.10:53/udp is served by a socket on the wildcard")
	}
	if !warned {
		t.Fatalf("no warning for UDP on the wildcard: %q", r.Warnings)
	}
	for _, l := range r.Listeners {
		if !l.Present {
			t.Errorf("%s not present: %+v", l.Subject, l)
		}
	}
}

// TestListenersFirewalldKernel: in firewalld mode the redirect rewrites the
// destination to to_port on the incoming interface's primary address, so a
// service on that address or the wildcard counts, and one on the VIP does
// not; UDP on the wildcard is fine there (conntrack restores the VIP).
func TestListenersFirewalldKernel(t *testing.T) {
	th := newTestHost(t) // serves firewalldCfg's ports on the wildcard
	th.apply(firewalldCfg)
	r := th.status(firewalldCfg)
	if !r.InSync || len(r.Listeners) != 3 {
		t.Fatalf("firewalld ports on the wildcard: not in sync:\n%s", r)
	}
	for _, w := range r.Warnings {
		if strings.Contains(w, "wildcard") {
			t.Fatalf("UDP wildcard warning in firewalld mode: %s", w)
		}
	}
	// A fresh host: only specific addresses.
	th = newTestHostNoServices(t)
	th.apply(firewalldCfg)
	// The VIP is not on the host in this mode: a service can bind it only
	// non-locally (IP_FREEBIND, ip_nonlocal_bind), and gets nothing.
	th.ns.Exec(t, "sysctl", "-qw", "net.ipv4.ip_nonlocal_bind=1")
	th.listen("tcp4", "192.0.2.10:8080")  // on the VIP: the redirect never sends there
	th.listen("tcp4", "198.51.100.21:80") // the VIP's port, not to_port
	th.listen("udp4", "198.51.100.21:53")
	th.listen("tcp6", "[2001:db8:1::21]:443")
	if got := listenerDiffs(th.status(firewalldCfg)); !slices.Equal(got, []string{"192.0.2.10:80/tcp"}) {
		t.Fatalf("listener differences %q, want only 192.0.2.10:80/tcp", got)
	}
	th.listen("tcp4", "198.51.100.21:8080")
	if r := th.status(firewalldCfg); !r.InSync {
		t.Fatalf("service on the redirect's target: not in sync:\n%s", r)
	}
}

// TestListenersFollowTheRedirect: real connections through firewalld mode's
// redirect, from a client namespace, land where the check says a service
// must listen: a service on the address the check names is reached, one on
// another address of the same NIC (or on the VIP) is not, and the check says
// missing for exactly those. IPv4 (primary vs. secondary address) and IPv6
// (the kernel's pick among two global addresses).
func TestListenersFollowTheRedirect(t *testing.T) {
	th := newTestHostNoServices(t)
	th.ns.Exec(t, "sysctl", "-qw", "net.ipv4.ip_nonlocal_bind=1", "net.ipv6.ip_nonlocal_bind=1")
	client := netnstest.New(t)
	// Not 203.0.113.0/24: newTestHost's foreign ip filter table drops it.
	netnstest.Connect(t, th.ns, "cl0", []string{"100.64.0.1/24", "2001:db8:2::1/64"}, client, "eth0", []string{"100.64.0.2/24", "2001:db8:2::2/64"})
	// A secondary IPv4 address, and a second global IPv6 one (the kernel
	// lists the newest global first).
	th.ns.Exec(t, "ip", "addr", "add", "100.64.0.9/24", "dev", "cl0")
	th.ns.Exec(t, "ip", "addr", "add", "2001:db8:2::9/64", "dev", "cl0")
	client.Exec(t, "ip", "route", "add", "192.0.2.10/32", "via", "100.64.0.1")
	client.Exec(t, "ip", "-6", "route", "add", "2001:db8::10/128", "via", "2001:db8:2::1")
	// The LB-facing NIC is where the packets arrive: cl0 here.
	cfg := "mode: firewalld\ninterfaces: [cl0]\nvips: [{address: 192.0.2.10, ports: [{port: 80, to_port: 8080}]}, {address: '2001:db8::10', ports: [{port: 443, to_port: 8443}]}]\n"
	th.apply(cfg)
	reach := func(vip string) bool {
		var err error
		client.Do(t, func() {
			var c net.Conn
			if c, err = net.DialTimeout("tcp", vip, 300*time.Millisecond); err == nil {
				c.Close()
			}
		})
		return err == nil
	}
	for _, c := range []struct {
		vip, subject string
		right, wrong []string
	}{
		{"192.0.2.10:80", "192.0.2.10:80/tcp", []string{"100.64.0.1:8080", "0.0.0.0:8080", "[::]:8080"}, []string{"100.64.0.9:8080", "192.0.2.10:8080", "198.51.100.21:8080"}},
		{"[2001:db8::10]:443", "[2001:db8::10]:443/tcp", []string{"[2001:db8:2::9]:8443", "[::]:8443"}, []string{"[2001:db8:2::1]:8443", "[2001:db8::10]:8443"}},
	} {
		for _, w := range c.wrong {
			stop := th.listen("tcp", w)
			r := th.status(cfg)
			if got := listenerDiffs(r); !slices.Contains(got, c.subject) {
				t.Errorf("service on %s: the check counts it for %s\n%s", w, c.subject, r)
			}
			if reach(c.vip) {
				t.Errorf("service on %s: a client reached it through %s, but the check says missing", w, c.vip)
			}
			stop()
		}
		for _, r := range c.right {
			stop := th.listen("tcp", r)
			if got := listenerDiffs(th.status(cfg)); slices.Contains(got, c.subject) {
				t.Errorf("service on %s: the check says %s is missing", r, c.subject)
			}
			if !reach(c.vip) {
				t.Errorf("service on %s: no client reaches it through %s, but the check says present", r, c.vip)
			}
			stop()
		}
	}
}
