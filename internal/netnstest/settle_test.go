package netnstest

import (
	"strings"
	"testing"
	"time"
)

// TestAddDummyReturnsSettled: what `ip addr` and `ip link` show right after
// AddDummy and Connect return is what they keep showing (the link-local
// address and the carrier came before the return, not after a snapshot).
func TestAddDummyReturnsSettled(t *testing.T) {
	ns, peer := New(t), New(t)
	ns.AddDummy(t, "eth9", "192.0.2.9/24")
	Connect(t, ns, "wire0", []string{"198.51.100.1/24"}, peer, "wire1", []string{"198.51.100.2/24"})
	for _, c := range []struct {
		ns   *NS
		link string
	}{{ns, "eth9"}, {ns, "wire0"}, {peer, "wire1"}} {
		addrs := c.ns.Exec(t, "ip", "-6", "-o", "addr", "show", "dev", c.link, "scope", "link")
		if !strings.Contains(addrs, "fe80::") || strings.Contains(addrs, "tentative") {
			t.Errorf("%s: link-local address not settled on return: %q", c.link, addrs)
		}
		if link := c.ns.Exec(t, "ip", "-o", "link", "show", "dev", c.link); !strings.Contains(link, "state UP") {
			t.Errorf("%s: not operationally up on return: %q", c.link, link)
		}
	}
}

// TestAwaitSettledWaitsForCarrier: a veth whose peer is still down has no
// carrier, so AwaitSettled must not return until the peer comes up; then the
// link is up with its link-local address.
func TestAwaitSettledWaitsForCarrier(t *testing.T) {
	ns := New(t)
	ns.Exec(t, "ip", "link", "add", "half0", "type", "veth", "peer", "name", "half1")
	ns.Exec(t, "ip", "link", "set", "half0", "up")
	returned := make(chan struct{})
	go func() {
		ns.AwaitSettled(t, "half0")
		close(returned)
	}()
	// The peer is down: nothing the kernel does on its own brings the
	// carrier, so a return here is a wrong answer however long we look.
	select {
	case <-returned:
		t.Fatal("AwaitSettled returned while the peer was down (no carrier)")
	case <-time.After(300 * time.Millisecond):
	}
	ns.Exec(t, "ip", "link", "set", "half1", "up")
	<-returned
	if link := ns.Exec(t, "ip", "-o", "link", "show", "dev", "half0"); !strings.Contains(link, "state UP") {
		t.Errorf("returned before half0 was up: %q", link)
	}
	if addrs := ns.Exec(t, "ip", "-6", "-o", "addr", "show", "dev", "half0", "scope", "link"); !strings.Contains(addrs, "fe80::") || strings.Contains(addrs, "tentative") {
		t.Errorf("returned before the link-local address was usable: %q", addrs)
	}
}
