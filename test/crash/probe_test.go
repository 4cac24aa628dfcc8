//go:build crash

package crash

import (
	"encoding/binary"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/dsr-agent/dsr-agent/internal/netnstest"
)

// arpProbe is a raw ARP socket on the segment side of the cable: it asks
// "who has VIP" as the router would, and watches the requests the host sends.
type arpProbe struct {
	fd      int
	ifindex int
	mac     net.HardwareAddr
	src     netip.Addr
}

func htons(v uint16) uint16 { return v<<8 | v>>8 }

func newARPProbe(ns *netnstest.NS, iface string, src netip.Addr) (*arpProbe, error) {
	link, err := ns.Netlink.LinkByName(iface)
	if err != nil {
		return nil, fmt.Errorf("probe link %s in %s: %w", iface, ns.Name, err)
	}
	p := &arpProbe{ifindex: link.Attrs().Index, mac: link.Attrs().HardwareAddr, src: src}
	err = netnstest.Within(ns.Handle, func() error {
		fd, err := unix.Socket(unix.AF_PACKET, unix.SOCK_RAW, int(htons(unix.ETH_P_ARP)))
		if err != nil {
			return fmt.Errorf("packet socket: %w", err)
		}
		p.fd = fd
		return unix.Bind(fd, &unix.SockaddrLinklayer{Protocol: htons(unix.ETH_P_ARP), Ifindex: p.ifindex})
	})
	if err != nil {
		if p.fd > 0 {
			unix.Close(p.fd)
		}
		return nil, fmt.Errorf("probe on %s in %s: %w", iface, ns.Name, err)
	}
	return p, nil
}

func (p *arpProbe) Close() { unix.Close(p.fd) }

// arpPacket is the part of an Ethernet/IPv4 ARP packet the probe reads.
type arpPacket struct {
	op       uint16
	sha      net.HardwareAddr
	spa, tpa netip.Addr
}

// next returns the next ARP packet before deadline (ok false: none).
func (p *arpProbe) next(deadline time.Time) (arpPacket, bool, error) {
	buf := make([]byte, 1600)
	for {
		left := time.Until(deadline)
		if left <= 0 {
			return arpPacket{}, false, nil
		}
		tv := unix.NsecToTimeval(left.Nanoseconds())
		if err := unix.SetsockoptTimeval(p.fd, unix.SOL_SOCKET, unix.SO_RCVTIMEO, &tv); err != nil {
			return arpPacket{}, false, fmt.Errorf("set receive timeout: %w", err)
		}
		n, _, err := unix.Recvfrom(p.fd, buf, 0)
		if errors.Is(err, unix.EAGAIN) || errors.Is(err, unix.EINTR) {
			continue
		}
		if err != nil {
			return arpPacket{}, false, fmt.Errorf("receive ARP: %w", err)
		}
		// The packet socket (SOCK_RAW) delivers the Ethernet header.
		b := buf[:n]
		if len(b) < 14+28 || binary.BigEndian.Uint16(b[12:]) != unix.ETH_P_ARP {
			continue
		}
		a := b[14:]
		if binary.BigEndian.Uint16(a[0:]) != 1 || binary.BigEndian.Uint16(a[2:]) != unix.ETH_P_IP || a[4] != 6 || a[5] != 4 {
			continue
		}
		return arpPacket{
			op:  binary.BigEndian.Uint16(a[6:]),
			sha: net.HardwareAddr(append([]byte{}, a[8:14]...)),
			spa: netip.AddrFrom4([4]byte(a[14:18])),
			tpa: netip.AddrFrom4([4]byte(a[24:28])),
		}, true, nil
	}
}

// ask broadcasts "who has target" and reports whether the host answered
// within wait, and with which sender address: any reply to the probe counts,
// also one whose sender an output rule rewrote (the kernel did answer).
func (p *arpProbe) ask(target netip.Addr, wait time.Duration) (bool, netip.Addr, error) {
	f := make([]byte, 14+28)
	copy(f[0:6], []byte{0xff, 0xff, 0xff, 0xff, 0xff, 0xff})
	copy(f[6:12], p.mac)
	binary.BigEndian.PutUint16(f[12:], unix.ETH_P_ARP)
	a := f[14:]
	binary.BigEndian.PutUint16(a[0:], 1)
	binary.BigEndian.PutUint16(a[2:], unix.ETH_P_IP)
	a[4], a[5] = 6, 4
	binary.BigEndian.PutUint16(a[6:], 1) // request
	copy(a[8:14], p.mac)
	src, dst := p.src.As4(), target.As4()
	copy(a[14:18], src[:])
	copy(a[24:28], dst[:])
	to := &unix.SockaddrLinklayer{Protocol: htons(unix.ETH_P_ARP), Ifindex: p.ifindex, Halen: 6}
	copy(to.Addr[:], f[0:6])
	if err := unix.Sendto(p.fd, f, 0, to); err != nil {
		return false, netip.Addr{}, fmt.Errorf("send ARP request for %s: %w", target, err)
	}
	deadline := time.Now().Add(wait)
	for {
		pkt, ok, err := p.next(deadline)
		if err != nil || !ok {
			return false, netip.Addr{}, err
		}
		if pkt.op == 2 && pkt.tpa == p.src {
			return true, pkt.spa, nil
		}
	}
}

// senderFor waits for the host's ARP request for target and returns the
// sender address it used.
func (p *arpProbe) senderFor(target netip.Addr, wait time.Duration) (netip.Addr, error) {
	deadline := time.Now().Add(wait)
	for {
		pkt, ok, err := p.next(deadline)
		if err != nil {
			return netip.Addr{}, err
		}
		if !ok {
			return netip.Addr{}, fmt.Errorf("no ARP request for %s within %v", target, wait)
		}
		if pkt.op == 1 && pkt.tpa == target {
			return pkt.spa, nil
		}
	}
}

// solicitFrom makes the host resolve target with src as the packet's
// source: one UDP datagram from src, sent inside the host's namespace.
func solicitFrom(ns *netnstest.NS, src, target netip.Addr) error {
	return netnstest.Within(ns.Handle, func() error {
		c, err := net.DialUDP("udp4", &net.UDPAddr{IP: src.AsSlice()}, &net.UDPAddr{IP: target.AsSlice(), Port: 9})
		if err != nil {
			return fmt.Errorf("udp from %s to %s: %w", src, target, err)
		}
		defer c.Close()
		if _, err := c.Write([]byte("x")); err != nil {
			return fmt.Errorf("udp from %s to %s: %w", src, target, err)
		}
		return nil
	})
}

// arpTableText is the ARP filter as dsr-agent's design describes it
// (DESIGN.md: a set, a map, an input drop and an output rewrite).
func arpTableText(vips []netip.Addr, flags string, inputPrefix string) string {
	var set, m []string
	for _, v := range vips {
		set = append(set, v.String())
		m = append(m, v.String()+" : "+realIP)
	}
	return fmt.Sprintf(`table arp dsr-agent {
	%s
	set vips { type ipv4_addr; elements = { %s } }
	map vip2real { type ipv4_addr : ipv4_addr; elements = { %s } }
	chain input {
		type filter hook input priority filter; policy accept;
		%s
		arp htype 1 arp ptype ip arp hlen 6 arp plen 4 arp daddr ip @vips counter drop
	}
	chain output {
		type filter hook output priority filter; policy accept;
		arp htype 1 arp ptype ip arp hlen 6 arp plen 4 arp saddr ip @vips counter arp saddr ip set arp saddr ip map @vip2real
	}
}
`, flags, strings.Join(set, ", "), strings.Join(m, ", "), inputPrefix)
}

// TestOracleNegativeControl proves the oracle can fail, and that it agrees
// with the kernel: each case builds a host by hand (no dsr-agent), asks the
// oracle, and then asks the kernel itself — an ARP request for the VIP from
// the segment (answered?) and an ARP request the host sends for a packet
// from the VIP (which sender address?).
func TestOracleNegativeControl(t *testing.T) {
	h := newHost(t, 4)
	probe, err := newARPProbe(h.seg, "seg0", netip.MustParseAddr(gatewayIP))
	if err != nil {
		t.Fatal(err)
	}
	defer probe.Close()
	vip, other := h.vips[0], h.vips[1]
	type sysctls struct{ allIgnore, nicIgnore, allAnnounce, nicAnnounce int }
	good := sysctls{1, 1, 2, 2}
	cases := []struct {
		name  string
		on    string // interface the VIP is put on
		sys   sysctls
		table string // nft text for table arp dsr-agent, "" none
		// what the kernel does, and so what the oracle must report
		answered, vipSender bool
	}{
		{name: "lo, all sysctls 0", on: "lo", sys: sysctls{0, 0, 0, 0}, answered: true, vipSender: true},
		{name: "lo, suppressed (1/2)", on: "lo", sys: good},
		{name: "lo, arp_ignore all=3 raises eth0's 1", on: "lo", sys: sysctls{3, 1, 2, 2}, answered: true},
		{name: "lo, arp_ignore eth0=3", on: "lo", sys: sysctls{1, 3, 2, 2}, answered: true},
		{name: "lo, arp_ignore all=4", on: "lo", sys: sysctls{4, 1, 2, 2}, answered: true},
		{name: "lo, arp_ignore all=9", on: "lo", sys: sysctls{9, 1, 2, 2}, answered: true},
		{name: "lo, arp_ignore eth0=2", on: "lo", sys: sysctls{0, 2, 2, 2}},
		{name: "lo, arp_ignore eth0=8", on: "lo", sys: sysctls{0, 8, 2, 2}},
		{name: "lo, arp_ignore all=1 eth0=0 (max rule)", on: "lo", sys: sysctls{1, 0, 0, 2}},
		{name: "lo, arp_announce all=3 raises eth0's 2", on: "lo", sys: sysctls{1, 1, 3, 2}, vipSender: true},
		{name: "lo, arp_announce eth0=3", on: "lo", sys: sysctls{1, 1, 2, 3}, vipSender: true},
		{name: "NIC, suppression sysctls but no table", on: nic, sys: good, answered: true},
		{name: "NIC, table in force, sysctls 0", on: nic, sys: sysctls{}, table: arpTableText(h.vips, "", "")},
		{name: "NIC, table dormant", on: nic, sys: sysctls{}, table: arpTableText(h.vips, "flags dormant", ""), answered: true, vipSender: true},
		{name: "NIC, table without this VIP", on: nic, sys: sysctls{}, table: arpTableText([]netip.Addr{other}, "", ""), answered: true, vipSender: true},
		{name: "NIC, table with an accept before the drop", on: nic, sys: sysctls{}, table: arpTableText(h.vips, "", "arp htype 1 accept"), answered: true},
	}
	for i, c := range cases {
		// Reset: no VIP, no table, sysctls as the case wants.
		for _, l := range []string{"lo", nic} {
			_, _ = h.ns.ExecErr("ip", "addr", "del", vip.String()+"/32", "dev", l)
		}
		_, _ = h.ns.ExecErr("nft", "delete", "table", "arp", "dsr-agent")
		for _, s := range []struct {
			v    int
			path string
		}{
			{c.sys.allIgnore, "all/arp_ignore"}, {c.sys.nicIgnore, nic + "/arp_ignore"},
			{c.sys.allAnnounce, "all/arp_announce"}, {c.sys.nicAnnounce, nic + "/arp_announce"},
		} {
			if err := writeSysctl(h.ns, fmt.Sprint(s.v), append([]string{"net", "ipv4", "conf"}, strings.Split(s.path, "/")...)...); err != nil {
				t.Fatal(err)
			}
		}
		if c.table != "" {
			if _, err := nftIn(h.ns, c.table, "-f", "-"); err != nil {
				t.Fatalf("%s: %v", c.name, err)
			}
		}
		if v := h.view(); len(v.violations(lb)) != 0 {
			t.Fatalf("%s: the oracle reports a host without the VIP: %v", c.name, v.violations(lb))
		}
		h.ns.Exec(t, "ip", "addr", "add", vip.String()+"/32", "dev", c.on)

		// The oracle.
		v := h.view()
		bad := v.violations(lb)
		var gotAnswered, gotSender bool
		for _, b := range bad {
			gotAnswered = gotAnswered || strings.Contains(b, " answered on ")
			gotSender = gotSender || strings.Contains(b, " may be ARP sender ")
		}
		if gotAnswered != c.answered || gotSender != c.vipSender {
			t.Errorf("%s: oracle reports answered=%v vip-sender=%v, want %v %v (%s)\n  %s",
				c.name, gotAnswered, gotSender, c.answered, c.vipSender, v.summary(nic), strings.Join(bad, "\n  "))
		}

		// The kernel.
		answered, replySender, err := probe.ask(vip, 300*time.Millisecond)
		if err != nil {
			t.Fatalf("%s: %v", c.name, err)
		}
		target := netip.AddrFrom4([4]byte{198, 51, 100, byte(150 + i)})
		if err := solicitFrom(h.ns, vip, target); err != nil {
			t.Fatalf("%s: %v", c.name, err)
		}
		sender, err := probe.senderFor(target, time.Second)
		if err != nil {
			t.Fatalf("%s: %v", c.name, err)
		}
		if answered != c.answered || (sender == vip) != c.vipSender {
			t.Errorf("%s: the kernel answered=%v, ARP sender %s; the case expects answered=%v vip-sender=%v (the oracle's rules are wrong for this kernel)",
				c.name, answered, sender, c.answered, c.vipSender)
		}
		reply := "no reply"
		if answered {
			reply = "reply from " + replySender.String()
		}
		t.Logf("%-45s oracle: answered=%-5v vip-sender=%-5v kernel: %-26s request sender %s", c.name, gotAnswered, gotSender, reply, sender)
	}
}
