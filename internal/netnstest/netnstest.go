// Package netnstest gives each kernel-touching test its own throwaway network
// namespace, so tests exercise the real kernel without touching the host.
package netnstest

import (
	"crypto/rand"
	"encoding/hex"
	"os"
	"os/exec"
	"strings"
	"testing"

	"github.com/google/nftables"
	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"

	"github.com/dsr-agent/dsr-agent/internal/netnsutil"
)

// RequireRootEnv, when set to 1 (CI does), turns a skipped root-only test into
// a failure: a green run must mean the kernel tests actually ran.
const RequireRootEnv = "DSR_AGENT_REQUIRE_ROOT"

// RequireRoot skips the test when not root, or fails it when RequireRootEnv=1.
func RequireRoot(t testing.TB) {
	t.Helper()
	if os.Geteuid() == 0 {
		return
	}
	if os.Getenv(RequireRootEnv) == "1" {
		t.Fatalf("test needs root (network namespaces) and %s=1 forbids skipping", RequireRootEnv)
	}
	t.Skip("needs root to create network namespaces")
}

// NS is a named network namespace that lives for one test.
type NS struct {
	Name   string
	Handle netns.NsHandle
	// Netlink is a handle bound to the namespace.
	Netlink *netlink.Handle
}

// UniqueName returns prefix plus random hex, short enough for netns and
// interface names (IFNAMSIZ is 16).
func UniqueName(prefix string) string {
	b := make([]byte, 4)
	_, _ = rand.Read(b)
	return prefix + hex.EncodeToString(b)
}

// New creates a fresh named namespace with lo up and registers its deletion.
func New(t testing.TB) *NS {
	t.Helper()
	RequireRoot(t)
	name := UniqueName("dsrt-")
	h, err := netnsutil.NewNamed(name)
	if err != nil {
		t.Fatalf("create netns %s: %v", name, err)
	}
	ns := &NS{Name: name, Handle: h}
	t.Cleanup(func() {
		if ns.Netlink != nil {
			ns.Netlink.Close()
		}
		_ = h.Close()
		if err := netns.DeleteNamed(name); err != nil {
			t.Errorf("delete netns %s: %v", name, err)
		}
	})
	nl, err := netlink.NewHandleAt(h)
	if err != nil {
		t.Fatalf("netlink handle in %s: %v", name, err)
	}
	ns.Netlink = nl
	lo, err := nl.LinkByName("lo")
	if err != nil {
		t.Fatalf("lo in %s: %v", name, err)
	}
	// A fresh namespace has lo down; addresses on it would not be local.
	if err := nl.LinkSetUp(lo); err != nil {
		t.Fatalf("set lo up in %s: %v", name, err)
	}
	// No IPv6 duplicate address detection: addresses are usable at once and
	// their flags do not change under a test's feet ("tentative").
	ns.Do(t, func() {
		for _, f := range []string{"all", "default"} {
			if err := os.WriteFile("/proc/sys/net/ipv6/conf/"+f+"/accept_dad", []byte("0"), 0); err != nil {
				t.Fatalf("disable DAD in %s: %v", name, err)
			}
		}
	})
	return ns
}

// NFT returns an nftables connection bound to the namespace.
func (ns *NS) NFT(t testing.TB) *nftables.Conn {
	t.Helper()
	c, err := nftables.New(nftables.WithNetNSFd(int(ns.Handle)))
	if err != nil {
		t.Fatalf("nftables conn in %s: %v", ns.Name, err)
	}
	return c
}

// Do runs fn on an OS thread switched into the namespace, for APIs that follow
// the calling thread's namespace (/proc/sys/net, sockets).
func (ns *NS) Do(t testing.TB, fn func()) {
	t.Helper()
	if err := Within(ns.Handle, func() error { fn(); return nil }); err != nil {
		t.Fatalf("in netns %s: %v", ns.Name, err)
	}
}

// Within runs fn on an OS thread inside the namespace h.
func Within(h netns.NsHandle, fn func() error) error { return netnsutil.Within(h, fn) }

// Exec runs a command inside the namespace (ip netns exec) and returns its
// combined output; it fails the test on a non-zero exit.
func (ns *NS) Exec(t testing.TB, name string, args ...string) string {
	t.Helper()
	out, err := ns.ExecErr(name, args...)
	if err != nil {
		t.Fatalf("%s %s in %s: %v\n%s", name, strings.Join(args, " "), ns.Name, err, out)
	}
	return out
}

// ExecErr is Exec returning the error instead of failing the test.
func (ns *NS) ExecErr(name string, args ...string) (string, error) {
	full := append([]string{"netns", "exec", ns.Name, name}, args...)
	out, err := exec.Command("ip", full...).CombinedOutput()
	return string(out), err
}

// Sysctl reads /proc/sys/<path> inside the namespace, path given by components.
func (ns *NS) Sysctl(t testing.TB, components ...string) string {
	t.Helper()
	var val string
	ns.Do(t, func() {
		b, err := os.ReadFile("/proc/sys/" + strings.Join(components, "/"))
		if err != nil {
			t.Fatalf("read sysctl %v: %v", components, err)
		}
		val = strings.TrimSpace(string(b))
	})
	return val
}

// AddDummy creates an up stand-in NIC with the given addresses (CIDR
// strings) and returns it once settled (AwaitSettled). This kernel has no dummy or vlan drivers, so it is
// one end of a veth pair whose peer (random name) stays in the namespace, up.
func (ns *NS) AddDummy(t testing.TB, name string, cidrs ...string) netlink.Link {
	t.Helper()
	peer := UniqueName("p")
	v := &netlink.Veth{LinkAttrs: netlink.LinkAttrs{Name: name}, PeerName: peer}
	if err := ns.Netlink.LinkAdd(v); err != nil {
		t.Fatalf("add veth %s/%s: %v", name, peer, err)
	}
	link, err := ns.Netlink.LinkByName(name)
	if err != nil {
		t.Fatalf("link %s: %v", name, err)
	}
	for _, c := range cidrs {
		a, err := netlink.ParseAddr(c)
		if err != nil {
			t.Fatalf("parse %s: %v", c, err)
		}
		if err := ns.Netlink.AddrAdd(link, a); err != nil {
			t.Fatalf("add %s to %s: %v", c, name, err)
		}
	}
	for _, n := range []string{name, peer} {
		l, err := ns.Netlink.LinkByName(n)
		if err != nil {
			t.Fatalf("link %s: %v", n, err)
		}
		if err := ns.Netlink.LinkSetUp(l); err != nil {
			t.Fatalf("set %s up: %v", n, err)
		}
	}
	ns.AwaitSettled(t, name)
	return link
}

// Connect creates a veth pair with one end (name, addresses cidrs) in ns and
// the other (peerName, peerCIDRs) in peer, both up and settled
// (AwaitSettled): a cable between two test hosts.
func Connect(t testing.TB, ns *NS, name string, cidrs []string, peer *NS, peerName string, peerCIDRs []string) {
	t.Helper()
	tmp := UniqueName("v")
	v := &netlink.Veth{LinkAttrs: netlink.LinkAttrs{Name: name}, PeerName: tmp}
	if err := ns.Netlink.LinkAdd(v); err != nil {
		t.Fatalf("add veth %s: %v", name, err)
	}
	pl, err := ns.Netlink.LinkByName(tmp)
	if err != nil {
		t.Fatal(err)
	}
	if err := ns.Netlink.LinkSetNsFd(pl, int(peer.Handle)); err != nil {
		t.Fatalf("move %s to %s: %v", tmp, peer.Name, err)
	}
	pl, err = peer.Netlink.LinkByName(tmp)
	if err != nil {
		t.Fatal(err)
	}
	if err := peer.Netlink.LinkSetName(pl, peerName); err != nil {
		t.Fatalf("rename %s to %s: %v", tmp, peerName, err)
	}
	for _, side := range []struct {
		ns    *NS
		name  string
		cidrs []string
	}{{ns, name, cidrs}, {peer, peerName, peerCIDRs}} {
		l, err := side.ns.Netlink.LinkByName(side.name)
		if err != nil {
			t.Fatal(err)
		}
		for _, c := range side.cidrs {
			a, err := netlink.ParseAddr(c)
			if err != nil {
				t.Fatal(err)
			}
			if err := side.ns.Netlink.AddrAdd(l, a); err != nil {
				t.Fatalf("add %s to %s: %v", c, side.name, err)
			}
		}
		if err := side.ns.Netlink.LinkSetUp(l); err != nil {
			t.Fatal(err)
		}
	}
	ns.AwaitSettled(t, name)
	peer.AwaitSettled(t, peerName)
}
