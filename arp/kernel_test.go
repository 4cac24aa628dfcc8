package arp

import (
	"net"
	"net/netip"
	"strconv"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/dsr-agent/dsr-agent/internal/ndprobe"
	"github.com/dsr-agent/dsr-agent/internal/netnstest"
	"github.com/dsr-agent/dsr-agent/sysctl"
)

// The ARP lab: a client and a server on one cable (eth0 both sides), the
// VIP on the server's lo inside eth0's subnet (where arp_announce 1 still
// uses it). barrier is a proxy neighbour entry on the server, routed out
// another device: the kernel answers it through its non-local branch,
// which arp_ignore never consults, so every probe ends on its answer, even
// under arp_ignore 8.
const (
	labCli     = "198.51.100.10"
	labSrv     = "198.51.100.21"
	labVIP     = "198.51.100.100"
	labBarrier = "192.0.2.99"
)

type arpLab struct {
	srv, cli *netnstest.NS
	proc     *sysctl.Proc
	probe    *ndprobe.Probe
	srvMAC   string
}

func newARPLab(t *testing.T) *arpLab {
	t.Helper()
	srv, cli := netnstest.New(t), netnstest.New(t)
	netnstest.Connect(t, cli, "eth0", []string{labCli + "/24"}, srv, "eth0", []string{labSrv + "/24"})
	srv.Exec(t, "ip", "addr", "add", labVIP+"/32", "dev", "lo")
	srv.AddDummy(t, "o0")
	srv.Exec(t, "ip", "route", "add", labBarrier+"/32", "dev", "o0")
	srv.Exec(t, "ip", "neigh", "add", "proxy", labBarrier, "dev", "eth0")
	l := &arpLab{srv: srv, cli: cli, proc: &sysctl.Proc{Root: "/proc/sys", NS: srv.Handle}}
	for path, v := range map[string]string{
		// The proxy branch needs the receiving interface to forward; 0
		// delay answers at once, so the barrier's answer follows the VIP's.
		"net/ipv4/conf/eth0/forwarding": "1", "net/ipv4/neigh/eth0/proxy_delay": "0",
		// A new namespace inherits the host's "all": keep the reverse-path
		// check out of the way of the client's requests.
		"net/ipv4/conf/all/rp_filter": "0", "net/ipv4/conf/eth0/rp_filter": "0",
	} {
		l.write(t, path, v)
	}
	eth0, err := srv.Netlink.LinkByName("eth0")
	if err != nil {
		t.Fatal(err)
	}
	l.srvMAC = eth0.Attrs().HardwareAddr.String()
	l.probe, err = ndprobe.Open(cli.Handle, "eth0", netip.MustParseAddr(labCli), netip.Addr{}, 50*time.Millisecond)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { l.probe.Close() })
	return l
}

func (l *arpLab) write(t *testing.T, path, v string) {
	t.Helper()
	if err := l.proc.Write(sysctl.ParseKey(path), v); err != nil {
		t.Fatal(err)
	}
}

// values are the effective values judged: every one the kernel names, the
// reserved ones, one above the last and the extremes of a plain int.
var values = []int{-1, 0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 255}

// placements puts v on "all" or on the interface, the other 0: the kernel
// reads max(all, eth0) either way (for v < 0, max is 0: the other one).
var placements = []struct {
	name      string
	all, eth0 func(v int) string
}{
	{"all", strconv.Itoa, func(int) string { return "0" }},
	{"eth0", func(int) string { return "0" }, strconv.Itoa},
}

// effective is what the kernel judges: max(all, eth0).
func effective(v int) int { return max(v, 0) }

// TestIgnoreMatchesKernel asks the kernel, value by value, whether it
// answers ARP for a VIP on lo, and holds Ignore.Accepts to the answer.
func TestIgnoreMatchesKernel(t *testing.T) {
	l := newARPLab(t)
	l.write(t, "net/ipv4/conf/all/arp_announce", "2")
	vip, barrier := netip.MustParseAddr(labVIP), netip.MustParseAddr(labBarrier)
	for _, p := range placements {
		for _, v := range values {
			l.write(t, "net/ipv4/conf/all/arp_ignore", p.all(v))
			l.write(t, "net/ipv4/conf/eth0/arp_ignore", p.eth0(v))
			got, err := l.probe.Ask(vip, barrier, 0)
			if err != nil {
				t.Fatalf("arp_ignore %d on %s: %v", v, p.name, err)
			}
			if answered := len(got) > 0; answered == Ignore.Accepts(effective(v)) {
				t.Errorf("arp_ignore %d on %s: kernel answered %v for the VIP on lo, Accepts(max(all, eth0)) = %v", v, p.name, got, Ignore.Accepts(effective(v)))
			}
		}
	}
}

// TestAnnounceMatchesKernel makes the server send from the VIP to a
// neighbour it has to resolve, value by value, and holds Announce.Accepts
// to the sender address of the ARP request the kernel sends: the VIP
// leaks it.
func TestAnnounceMatchesKernel(t *testing.T) {
	l := newARPLab(t)
	l.write(t, "net/ipv4/conf/all/arp_ignore", "1")
	cli := netip.MustParseAddr(labCli)
	for _, p := range placements {
		for _, v := range values {
			l.write(t, "net/ipv4/conf/all/arp_announce", p.all(v))
			l.write(t, "net/ipv4/conf/eth0/arp_announce", p.eth0(v))
			l.srv.Exec(t, "ip", "neigh", "flush", "dev", "eth0")
			l.probe.Drain()
			l.sendFromVIP(t)
			var sender netip.Addr
			err := l.probe.Read(time.Now().Add(5*time.Second), func(f []byte) bool {
				s, target, mac, ok := ndprobe.Request(f)
				if ok && target == cli && mac == l.srvMAC {
					sender = s
					return true
				}
				return false
			}, nil)
			if err != nil {
				t.Fatalf("arp_announce %d on %s: no ARP request from the server: %v", v, p.name, err)
			}
			if leaks := sender.String() == labVIP; leaks == Announce.Accepts(effective(v)) {
				t.Errorf("arp_announce %d on %s: the server asks with sender %s, Accepts(max(all, eth0)) = %v", v, p.name, sender, Announce.Accepts(effective(v)))
			}
		}
	}
}

// sendFromVIP sends one UDP datagram from the VIP to the client: the
// server must resolve the client's MAC first.
func (l *arpLab) sendFromVIP(t *testing.T) {
	t.Helper()
	var err error
	l.srv.Do(t, func() {
		var fd int
		fd, err = unix.Socket(unix.AF_INET, unix.SOCK_DGRAM|unix.SOCK_CLOEXEC, 0)
		if err != nil {
			return
		}
		defer unix.Close(fd)
		from := &unix.SockaddrInet4{}
		copy(from.Addr[:], net.ParseIP(labVIP).To4())
		if err = unix.Bind(fd, from); err != nil {
			return
		}
		to := &unix.SockaddrInet4{Port: 9}
		copy(to.Addr[:], net.ParseIP(labCli).To4())
		err = unix.Sendto(fd, []byte("announce"), 0, to)
	})
	if err != nil {
		t.Fatalf("send from the VIP: %v", err)
	}
}
