package anyip

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"strings"
	"sync"
	"syscall"
	"testing"

	"golang.org/x/sys/unix"

	"github.com/dsr-agent/dsr-agent/internal/netnstest"
)

// anyLab is a real server with an AnyIP /24 (and /64) on lo and a client on
// one cable; the client asks, with arping and NDP, who has addresses of the
// prefix.
type anyLab struct {
	server, client *netnstest.NS
	m              *Manager
}

var (
	prefix4 = pfx("198.51.100.0/24")
	prefix6 = pfx("2001:db8:100::/64")
	// spread4 and spread6: the first and last address of each prefix, and
	// some between.
	spread4 = []string{"198.51.100.0", "198.51.100.1", "198.51.100.77", "198.51.100.128", "198.51.100.200", "198.51.100.254", "198.51.100.255"}
	spread6 = []string{"2001:db8:100::", "2001:db8:100::1", "2001:db8:100:0:8000::1", "2001:db8:100:0:ffff:ffff:ffff:ffff"}
)

func newAnyLab(t *testing.T) *anyLab {
	t.Helper()
	server, client := netnstest.New(t), netnstest.New(t)
	netnstest.Connect(t, server, "eth0", []string{"192.0.2.21/24", "2001:db8:ff::21/64"}, client, "eth0", []string{"192.0.2.31/24", "2001:db8:ff::31/64"})
	l := &anyLab{server: server, client: client, m: &Manager{NL: server.Netlink}}
	for _, p := range []netip.Prefix{prefix4, prefix6} {
		if err := l.m.Add(p); err != nil {
			t.Fatal(err)
		}
	}
	return l
}

func (l *anyLab) arpIgnore(t *testing.T, v int) {
	t.Helper()
	l.server.Exec(t, "sysctl", "-qw", "net.ipv4.conf.all.arp_ignore=0", fmt.Sprintf("net.ipv4.conf.eth0.arp_ignore=%d", v))
}

// arpAnswered returns, of ips, those the client got an ARP reply for, asked
// all at once (arping exits 1 when nobody answers: an outcome, not an
// error). probe asks as an RFC 5227 probe (sender 0.0.0.0), which arp_process
// handles on its own path.
func (l *anyLab) arpAnswered(ips []string, probe bool) []string {
	var mu sync.Mutex
	var out []string
	var wg sync.WaitGroup
	for _, ip := range ips {
		wg.Add(1)
		go func() {
			defer wg.Done()
			// Thomas Habets' arping: -0 asks from 0.0.0.0, -r prints
			// the MACs that answered.
			args := []string{"-i", "eth0", "-c", "2", "-W", "0.1", "-w", "1", "-r", ip}
			if probe {
				args = append([]string{"-0"}, args...)
			}
			o, _ := l.client.ExecErr("arping", args...)
			if strings.TrimSpace(o) != "" {
				mu.Lock()
				out = append(out, ip)
				mu.Unlock()
			}
		}()
	}
	wg.Wait()
	return out
}

// TestAnyIPARP: a local route for a /24 on lo makes the whole /24 answered
// by ARP on the NIC at arp_ignore 0 (arp_process: the route lookup says
// RTN_LOCAL, nothing asks for an address), and none of it at 1, 2, 3 or 8
// (inet_confirm_addr finds no address equal to the target, on the NIC for
// 1 and 2, on any device for 3: a route is not an address). The server's own address is answered
// throughout: the silence is not a broken cable.
func TestAnyIPARP(t *testing.T) {
	l := newAnyLab(t)
	// Negative control: at 0 every address of the prefix is answered.
	l.arpIgnore(t, 0)
	if got := l.arpAnswered(spread4, false); len(got) != len(spread4) {
		t.Fatalf("negative control: at arp_ignore 0 only %v of %v answered; the test could not fail", got, spread4)
	}
	// An RFC 5227 probe (sender 0.0.0.0, what DHCP clients and
	// NetworkManager send before taking an address) takes its own path in
	// arp_process: the local table says RTN_LOCAL, and arp_ignore decides.
	if got := l.arpAnswered(spread4, true); len(got) != len(spread4) {
		t.Fatalf("negative control: at arp_ignore 0 probes for only %v of %v answered", got, spread4)
	}
	for _, v := range []int{1, 2, 3, 8} {
		t.Run(fmt.Sprintf("arp_ignore=%d", v), func(t *testing.T) {
			l.arpIgnore(t, v)
			if got := l.arpAnswered(spread4, false); len(got) != 0 {
				t.Errorf("ARP for %v answered", got)
			}
			if got := l.arpAnswered(spread4, true); len(got) != 0 {
				t.Errorf("RFC 5227 probes for %v answered", got)
			}
			// 8 answers nothing, not even the server's own address.
			if got := l.arpAnswered([]string{"192.0.2.21"}, false); (len(got) == 1) != (v != 8) {
				t.Errorf("ARP for the server's own address answered by %v at %d", got, v)
			}
		})
	}
	// And it is the route that answers at 0: without it, nothing.
	l.arpIgnore(t, 0)
	if err := l.m.Del(prefix4); err != nil {
		t.Fatal(err)
	}
	if got := l.arpAnswered(spread4, false); len(got) != 0 {
		t.Errorf("without the route, at arp_ignore 0, ARP for %v answered", got)
	}
}

// ndpAnswered returns, of ips, those the client resolved by Neighbor
// Solicitation on eth0 (an on-link route makes a ping solicit them; an
// entry with a link-layer address means a Neighbor Advertisement came).
func (l *anyLab) ndpAnswered(t *testing.T, ips []string) []string {
	t.Helper()
	l.client.Exec(t, "ip", "-6", "neigh", "flush", "dev", "eth0")
	var wg sync.WaitGroup
	for _, ip := range ips {
		wg.Add(1)
		go func() {
			defer wg.Done()
			_, _ = l.client.ExecErr("ping", "-6", "-c", "1", "-W", "1", "-I", "eth0", ip)
		}()
	}
	wg.Wait()
	var out []string
	for _, ip := range ips {
		if strings.Contains(l.client.Exec(t, "ip", "-6", "neigh", "show", ip, "dev", "eth0"), "lladdr") {
			out = append(out, ip)
		}
	}
	return out
}

// TestAnyIPNDPSilent: the kernel never answers Neighbor Solicitation for an
// AnyIP IPv6 prefix: ndisc_recv_ns answers only for an address of the
// receiving device (ipv6_get_ifaddr, strict), its anycast addresses, or a
// proxy entry with forwarding and proxy_ndp on; a local route is none of
// these, whatever the sysctls. Controls: the server's own address is
// resolved, and a proxy entry for one address of the prefix is resolved, so
// the probe sees an answer where there is one.
func TestAnyIPNDPSilent(t *testing.T) {
	l := newAnyLab(t)
	l.client.Exec(t, "sysctl", "-qw", "net.ipv6.neigh.eth0.retrans_time_ms=100")
	l.client.Exec(t, "ip", "-6", "route", "add", prefix6.String(), "dev", "eth0")
	// arp_ignore is IPv4 only; with it at 0 there is still no answer.
	l.arpIgnore(t, 0)
	if got := l.ndpAnswered(t, append([]string{"2001:db8:ff::21"}, spread6...)); len(got) != 1 || got[0] != "2001:db8:ff::21" {
		t.Errorf("resolved by NDP: %v, want only the server's own 2001:db8:ff::21", got)
	}
	// Negative control: a proxy entry (forwarding and proxy_ndp on) makes
	// the server answer for an address of the prefix.
	// No proxy_delay: the answer to a multicast solicitation would
	// otherwise wait up to 0.8 s, after the client gave up.
	l.server.Exec(t, "sysctl", "-qw", "net.ipv6.conf.all.forwarding=1", "net.ipv6.conf.eth0.proxy_ndp=1", "net.ipv6.neigh.eth0.proxy_delay=0")
	l.server.Exec(t, "ip", "-6", "neigh", "add", "proxy", spread6[2], "dev", "eth0")
	if got := l.ndpAnswered(t, spread6[2:3]); len(got) != 1 {
		t.Fatalf("negative control: a proxy NDP entry for %s was not resolved; the test could not fail", spread6[2])
	}
}

// TestAnyIPAcceptsTCP: the point of AnyIP. A TCP connection to any address
// of the prefix, routed to the server by its own address (as a director
// does), is accepted by a wildcard listener with that address as its local
// end. A listener bound inside the prefix: IPv4 binds without help (bind
// asks the FIB, which says local); IPv6 needs IP_FREEBIND (bind asks the
// address list, which has no such address).
func TestAnyIPAcceptsTCP(t *testing.T) {
	l := newAnyLab(t)
	l.arpIgnore(t, 1)
	l.client.Exec(t, "ip", "route", "add", prefix4.String(), "via", "192.0.2.21")
	l.client.Exec(t, "ip", "-6", "route", "add", prefix6.String(), "via", "2001:db8:ff::21")
	t.Run("wildcard", func(t *testing.T) {
		for _, c := range []struct{ network, wild string }{{"tcp4", "0.0.0.0:8080"}, {"tcp6", "[::]:8080"}} {
			ln := l.listen(t, c.network, c.wild, false)
			ips := spread4
			if c.network == "tcp6" {
				ips = spread6
			}
			for _, ip := range ips {
				if got := l.connect(t, ln, c.network, ip, 8080); got != ip {
					t.Errorf("connection to %s accepted with local address %s", ip, got)
				}
			}
			ln.Close()
		}
	})
	t.Run("bound-inside", func(t *testing.T) {
		// IPv4: the FIB says local, bind accepts it as it is.
		ln := l.listen(t, "tcp4", "198.51.100.77:8081", false)
		if got := l.connect(t, ln, "tcp4", "198.51.100.77", 8081); got != "198.51.100.77" {
			t.Errorf("accepted with local address %s", got)
		}
		ln.Close()
		// IPv6: bind without IP_FREEBIND fails (the negative control)...
		var lc net.ListenConfig
		var err error
		l.server.Do(t, func() {
			var ln net.Listener
			if ln, err = lc.Listen(context.Background(), "tcp6", "[2001:db8:100::77]:8081"); err == nil {
				ln.Close()
			}
		})
		if !errors.Is(err, syscall.EADDRNOTAVAIL) {
			t.Errorf("IPv6 bind inside the prefix without IP_FREEBIND: %v, want EADDRNOTAVAIL", err)
		}
		// ...and with it, the listener serves the address.
		ln = l.listen(t, "tcp6", "[2001:db8:100::77]:8081", true)
		if got := l.connect(t, ln, "tcp6", "2001:db8:100::77", 8081); got != "2001:db8:100::77" {
			t.Errorf("accepted with local address %s", got)
		}
		ln.Close()
	})
}

func (l *anyLab) listen(t *testing.T, network, addr string, freebind bool) net.Listener {
	t.Helper()
	lc := net.ListenConfig{}
	if freebind {
		lc.Control = func(_, _ string, c syscall.RawConn) error {
			var serr error
			err := c.Control(func(fd uintptr) {
				serr = unix.SetsockoptInt(int(fd), unix.SOL_IPV6, unix.IPV6_FREEBIND, 1)
			})
			if err != nil {
				return err
			}
			return serr
		}
	}
	var ln net.Listener
	l.server.Do(t, func() {
		var err error
		if ln, err = lc.Listen(context.Background(), network, addr); err != nil {
			t.Fatalf("listen %s %s: %v", network, addr, err)
		}
	})
	return ln
}

// connect dials ip:port from the client and returns the local address of
// the connection the server accepted.
func (l *anyLab) connect(t *testing.T, ln net.Listener, network, ip string, port int) string {
	t.Helper()
	accepted := make(chan string, 1)
	go func() {
		c, err := ln.Accept()
		if err != nil {
			accepted <- "accept: " + err.Error()
			return
		}
		accepted <- c.LocalAddr().(*net.TCPAddr).AddrPort().Addr().Unmap().String()
		c.Close()
	}()
	l.client.Do(t, func() {
		d := net.Dialer{Timeout: 5e9}
		c, err := d.Dial(network, net.JoinHostPort(ip, fmt.Sprint(port)))
		if err != nil {
			t.Fatalf("dial %s: %v", ip, err)
		}
		c.Close()
	})
	return <-accepted
}

// TestAnyIPARPAnnounce: a reply from an address of the prefix makes the
// server ARP for the client, and at arp_announce 0 with that address as
// sender (arp_solicit: inet_addr_type_dev_table says RTN_LOCAL for it, a
// route is enough), so the client learns a VIP at the server's MAC; at 2
// the server's own address is the sender.
func TestAnyIPARPAnnounce(t *testing.T) {
	l := newAnyLab(t)
	l.arpIgnore(t, 1)
	l.client.Exec(t, "ip", "route", "add", prefix4.String(), "via", "192.0.2.21")
	learns := func(v int) bool {
		l.server.Exec(t, "sysctl", "-qw", "net.ipv4.conf.all.arp_announce=0", fmt.Sprintf("net.ipv4.conf.eth0.arp_announce=%d", v))
		l.client.Exec(t, "ip", "neigh", "flush", "dev", "eth0")
		l.server.Exec(t, "ip", "neigh", "flush", "dev", "eth0")
		// ping waits for the reply, so the server's ARP request (and the
		// client's entry for its sender) came before it returns.
		l.server.Exec(t, "ping", "-c", "1", "-W", "2", "-I", "198.51.100.77", "192.0.2.31")
		return strings.Contains(l.client.Exec(t, "ip", "neigh", "show", "dev", "eth0"), "198.51.100.77")
	}
	if !learns(0) {
		t.Fatal("negative control: at arp_announce 0 the client did not learn 198.51.100.77; the test could not fail")
	}
	if learns(2) {
		t.Error("at arp_announce 2 the client learned 198.51.100.77 from the server's ARP")
	}
}
