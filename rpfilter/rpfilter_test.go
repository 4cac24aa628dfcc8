package rpfilter

import (
	"bufio"
	"errors"
	"fmt"
	"maps"
	"net"
	"os"
	"reflect"
	"strconv"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/dsr-agent/dsr-agent/internal/netnstest"
	"github.com/dsr-agent/dsr-agent/sysctl"
)

func TestDecapsulationTable(t *testing.T) {
	var got []string
	for _, s := range Decapsulation([]string{"tunl0"}) {
		got = append(got, fmt.Sprintf("%s=%s judgedOnly=%v", s.Path, s.Value(), s.JudgedOnly))
	}
	want := []string{
		"net.ipv4.conf.all.rp_filter=2 judgedOnly=true",
		"net.ipv4.conf.tunl0.rp_filter=2 judgedOnly=false",
	}
	if !reflect.DeepEqual(got, want) {
		t.Fatalf("Decapsulation = %v, want %v", got, want)
	}
	// The state journal restores what it saved: it must know the key.
	if r := sysctl.RuleFor(sysctl.ConfPath("tunl0", "rp_filter"), []*sysctl.Rule{Rule}); r != Rule || r.Target != 2 {
		t.Fatalf("RuleFor(tunl0 rp_filter) = %+v, want the rp_filter rule", r)
	}
}

// TestNeededRPFilter judges every value 0..3, a larger one and a negative one
// on all × tunl0: the kernel drops a decapsulated packet whose source routes
// via another interface only when max(all, tunl0) is 1, and the fix is always
// tunl0=2 (max(1, 2) = 2), never a change to all.
func TestNeededRPFilter(t *testing.T) {
	vals := []string{"-1", "0", "1", "2", "3", "255"}
	for _, all := range vals {
		for _, dev := range vals {
			a, _ := strconv.Atoi(all)
			d, _ := strconv.Atoi(dev)
			wantWrite := max(a, d) == 1
			cur := map[string]string{
				sysctl.ConfPath("all", "rp_filter").Key():   all,
				sysctl.ConfPath("tunl0", "rp_filter").Key(): dev,
			}
			n := sysctl.Needed(Decapsulation([]string{"tunl0"}), cur)
			var got []string
			for _, v := range n {
				got = append(got, v.Setting.Path.String()+"="+v.Setting.Value())
			}
			var want []string
			if wantWrite {
				want = []string{"net.ipv4.conf.tunl0.rp_filter=2"}
			}
			if !reflect.DeepEqual(got, want) {
				t.Errorf("all=%s tunl0=%s: writes %v, want %v", all, dev, got, want)
			}
			// After the plan the kernel's value must accept.
			after := maps.Clone(cur)
			for _, v := range n {
				after[v.Setting.Path.Key()] = v.Setting.Value()
			}
			eff, ok := sysctl.Effective(after[sysctl.ConfPath("all", "rp_filter").Key()], after[sysctl.ConfPath("tunl0", "rp_filter").Key()])
			if !ok || eff == 1 {
				t.Errorf("all=%s tunl0=%s: after the plan max = %d, still strict", all, dev, eff)
			}
		}
	}
	// A missing or garbled "all" is never written; the device gets 2, which
	// is loose whatever all holds.
	for _, all := range []string{"", "x"} {
		n := sysctl.Needed(Decapsulation([]string{"tunl0"}), map[string]string{
			sysctl.ConfPath("all", "rp_filter").Key(): all, sysctl.ConfPath("tunl0", "rp_filter").Key(): "0",
		})
		if len(n) != 1 || n[0].Setting.Path.String() != "net.ipv4.conf.tunl0.rp_filter" {
			t.Errorf("all=%q: Needed = %v, want tunl0 only", all, n)
		}
	}
	// A missing device (the module not loaded yet) is reported, not skipped.
	n := sysctl.Needed(Decapsulation([]string{"tunl0"}), map[string]string{sysctl.ConfPath("all", "rp_filter").Key(): "0"})
	if len(n) != 1 || n[0].Reason != "missing" {
		t.Errorf("missing tunl0: Needed = %v", n)
	}
}

// TestRPFilterProcInNamespace writes rp_filter through Proc in a throwaway
// namespace (a veth stands in for tunl0: no ipip module here) and reads the
// kernel's copy back; all is left as it was.
func TestRPFilterProcInNamespace(t *testing.T) {
	ns := netnstest.New(t)
	ns.AddDummy(t, "tun0")
	p := &sysctl.Proc{Root: "/proc/sys", NS: ns.Handle}
	dev := sysctl.ConfPath("tun0", "rp_filter")
	if err := p.Write(sysctl.ConfPath("all", "rp_filter"), "1"); err != nil {
		t.Fatal(err)
	}
	if err := p.Write(dev, "0"); err != nil {
		t.Fatal(err)
	}
	cur := map[string]string{}
	for _, s := range Decapsulation([]string{"tun0"}) {
		v, err := p.Read(s.Path)
		if err != nil {
			t.Fatal(err)
		}
		cur[s.Path.Key()] = v
	}
	for _, v := range sysctl.Needed(Decapsulation([]string{"tun0"}), cur) {
		if err := p.Write(v.Setting.Path, v.Setting.Value()); err != nil {
			t.Fatal(err)
		}
	}
	if got := ns.Sysctl(t, "net", "ipv4", "conf", "tun0", "rp_filter"); got != "2" {
		t.Fatalf("tun0 rp_filter = %s, want 2", got)
	}
	if got := ns.Sysctl(t, "net", "ipv4", "conf", "all", "rp_filter"); got != "1" {
		t.Fatalf("all rp_filter = %s, want 1 (never lowered)", got)
	}
	if _, err := p.Read(sysctl.ConfPath("nosuch0", "rp_filter")); !errors.Is(err, sysctl.ErrNotFound) {
		t.Fatalf("Read of a missing device: %v, want ErrNotFound", err)
	}
}

// TestRPFilterKernel is the packet-level proof of the rule, without ipip: a
// client sends UDP to a VIP on the server's lo over a veth (s0, the stand-in
// for tunl0), from a source the server routes via another interface (o0), as
// a decapsulated client packet is. Each case ends when the datagram arrives
// or the kernel counts it as IPReversePathFilter, whichever happens.
func TestRPFilterKernel(t *testing.T) {
	cases := []struct {
		name     string
		all, dev string
		// devCIDR is the device's only IPv4 address ("" for none). The VIP
		// /32 itself (tunl0 holding the VIP instead of lo) is enough.
		devCIDR  string
		accepted bool
	}{
		{"strict on the device drops (negative control)", "0", "1", "10.1.0.1/24", false},
		{"strict on all drops: max(all, dev)", "1", "0", "10.1.0.1/24", false},
		{"loose on the device overrides strict all", "1", "2", "10.1.0.1/24", true},
		{"3 behaves as loose", "1", "3", "10.1.0.1/24", true},
		{"off accepts", "0", "0", "10.1.0.1/24", true},
		{"loose on an address-less device drops", "1", "2", "", false},
		{"loose on an address-less device drops even with all off", "0", "2", "", false},
		{"off on an address-less device accepts", "0", "0", "", true},
		{"loose on a device holding only the VIP accepts", "1", "2", rpVIP + "/32", true},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			got := rpFilterDelivers(t, c.all, c.dev, c.devCIDR)
			if got != c.accepted {
				t.Fatalf("all=%s dev=%s address %q: delivered = %v, want %v", c.all, c.dev, c.devCIDR, got, c.accepted)
			}
		})
	}
}

const (
	rpVIP    = "10.99.0.1"
	rpClient = "198.51.100.7"
	rpPort   = 9999
)

// newRPLab builds the two namespaces: the client on c0, the server on s0
// (holding devCIDR, if any) with the VIP and the route back to the client
// out o0, and rp_filter all and s0 set.
func newRPLab(t *testing.T, all, dev, devCIDR string) (srv, cli *netnstest.NS) {
	srv, cli = netnstest.New(t), netnstest.New(t)
	var srvCIDRs []string
	if devCIDR != "" {
		srvCIDRs = []string{devCIDR}
	}
	netnstest.Connect(t, cli, "c0", []string{rpClient + "/24"}, srv, "s0", srvCIDRs)
	// The route back to the client leaves by another interface, as a
	// decapsulated client's does (via the default route, not tunl0).
	srv.AddDummy(t, "o0")
	srv.Exec(t, "ip", "route", "add", "198.51.100.0/24", "dev", "o0")
	if devCIDR != rpVIP+"/32" {
		srv.Exec(t, "ip", "addr", "add", rpVIP+"/32", "dev", "lo")
	}
	s0, err := srv.Netlink.LinkByName("s0")
	if err != nil {
		t.Fatal(err)
	}
	// No ARP: s0 may have no address, and rp_filter judges ARP too.
	cli.Exec(t, "ip", "route", "add", rpVIP+"/32", "dev", "c0")
	cli.Exec(t, "ip", "neigh", "replace", rpVIP, "lladdr", s0.Attrs().HardwareAddr.String(), "dev", "c0", "nud", "permanent")

	p := &sysctl.Proc{Root: "/proc/sys", NS: srv.Handle}
	for path, v := range map[string]string{"all": all, "s0": dev} {
		if err := p.Write(sysctl.ConfPath(path, "rp_filter"), v); err != nil {
			t.Fatal(err)
		}
	}
	return srv, cli
}

// rpFilterDelivers builds the two namespaces, sends one datagram and reports
// whether it was delivered (true) or dropped by rp_filter (false).
func rpFilterDelivers(t *testing.T, all, dev, devCIDR string) bool {
	srv, cli := newRPLab(t, all, dev, devCIDR)
	var err error
	var rfd int
	srv.Do(t, func() {
		rfd, err = udpSocket(rpVIP, rpPort)
	})
	if err != nil {
		t.Fatal(err)
	}
	defer unix.Close(rfd)
	before := rpCounter(t, srv)
	send := func() {
		t.Helper()
		var err error
		cli.Do(t, func() {
			var sfd int
			sfd, err = udpSocket(rpClient, 0)
			if err != nil {
				return
			}
			defer unix.Close(sfd)
			to := &unix.SockaddrInet4{Port: rpPort}
			copy(to.Addr[:], net.ParseIP(rpVIP).To4())
			err = unix.Sendto(sfd, []byte("decapsulated"), 0, to)
		})
		if err != nil {
			t.Fatalf("send: %v", err)
		}
	}
	// Either event ends the wait; the deadline only guards against a hang.
	// The datagram is sent again every 200 ms: a veth pair just created may
	// drop the first one before both ends are running (seen on a loaded
	// host), and a drop there is neither delivery nor rp_filter's.
	buf := make([]byte, 64)
	var lastSend time.Time
	for deadline := time.Now().Add(30 * time.Second); time.Now().Before(deadline); time.Sleep(5 * time.Millisecond) {
		if time.Since(lastSend) > 200*time.Millisecond {
			send()
			lastSend = time.Now()
		}
		n, _, rerr := unix.Recvfrom(rfd, buf, unix.MSG_DONTWAIT)
		if rerr == nil {
			if string(buf[:n]) != "decapsulated" {
				t.Fatalf("received %q", buf[:n])
			}
			if after := rpCounter(t, srv); after != before {
				t.Fatalf("delivered and counted as IPReversePathFilter (%d -> %d)", before, after)
			}
			return true
		}
		if !errors.Is(rerr, unix.EAGAIN) {
			t.Fatalf("recv: %v", rerr)
		}
		if after := rpCounter(t, srv); after > before {
			return false
		}
	}
	t.Fatal("the datagram was neither delivered nor counted as IPReversePathFilter")
	return false
}

func udpSocket(addr string, port int) (int, error) {
	fd, err := unix.Socket(unix.AF_INET, unix.SOCK_DGRAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return -1, fmt.Errorf("udp socket: %w", err)
	}
	sa := &unix.SockaddrInet4{Port: port}
	copy(sa.Addr[:], net.ParseIP(addr).To4())
	if err := unix.Bind(fd, sa); err != nil {
		unix.Close(fd)
		return -1, fmt.Errorf("bind %s:%d: %w", addr, port, err)
	}
	return fd, nil
}

// rpCounter is TcpExt IPReversePathFilter of the namespace: packets
// ip_rcv_finish dropped because fib_validate_source said -EXDEV.
func rpCounter(t *testing.T, ns *netnstest.NS) uint64 {
	t.Helper()
	var out uint64
	ns.Do(t, func() {
		f, err := os.Open("/proc/net/netstat")
		if err != nil {
			t.Fatal(err)
		}
		defer f.Close()
		var names []string
		sc := bufio.NewScanner(f)
		sc.Buffer(make([]byte, 64<<10), 1<<20)
		for sc.Scan() {
			fields := strings.Fields(sc.Text())
			if len(fields) == 0 || fields[0] != "TcpExt:" {
				continue
			}
			if names == nil {
				names = fields
				continue
			}
			for i, n := range names {
				if n == "IPReversePathFilter" && i < len(fields) {
					out, err = strconv.ParseUint(fields[i], 10, 64)
					if err != nil {
						t.Fatal(err)
					}
					return
				}
			}
		}
		t.Fatal("no TcpExt IPReversePathFilter in /proc/net/netstat")
	})
	return out
}
