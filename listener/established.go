package listener

import (
	"encoding/binary"
	"errors"
	"fmt"
	"net/netip"

	"github.com/mdlayher/netlink"
	"golang.org/x/sys/unix"

	"github.com/dsr-agent/dsr-agent/internal/inet"
)

// The inet_diag filter language (include/uapi/linux/inet_diag.h,
// net/ipv4/inet_diag.c: inet_diag_bc_run, inet_diag_bc_audit). A program is
// a list of ops {code u8, yes u8, no u16}; each op jumps yes or no bytes
// forward; landing exactly on the end accepts the socket, jumping past it
// rejects it. The audit walks the yes path and checks every no target.
const (
	inetDiagReqBytecode = 1 // INET_DIAG_REQ_BYTECODE

	bcJmp   = 1 // INET_DIAG_BC_JMP: always takes no
	bcSCond = 7 // INET_DIAG_BC_S_COND: local address/prefix and port

	tcpEstablished = 1

	sizeofBcOp     = 4
	sizeofHostcond = 8 // family u8, prefix_len u8, pad, port int32; then the address
)

// maxBytecode keeps the program within one netlink attribute (its length
// is 16 bits). Beyond it (thousands of VIPs) the count matches in user
// space instead.
const maxBytecode = 60000

// CountEstablished counts the established TCP connections, IPv4 and IPv6,
// whose local address is in one of addrs (a VIP's host prefix, or a whole
// prefix served by an AnyIP route) or whose local port is one of ports
// (firewalld mode: a redirect rewrites the VIP to the host's own address,
// so the redirect's target port is what marks the VIP's traffic). An IPv4
// address also matches the v4-mapped connections of a dual-stack socket.
//
// The kernel filters (an inet_diag program): only the matching sockets
// are copied out, so a server with many unrelated connections costs little.
// Nothing to match counts 0 without a dump.
func (d *Diag) CountEstablished(addrs []netip.Prefix, ports []uint16) (int, error) {
	if len(addrs) == 0 && len(ports) == 0 {
		return 0, nil
	}
	prog := matchProgram(addrs, ports)
	if len(prog) > maxBytecode {
		return d.countEstablished(nil, matchFunc(addrs, ports))
	}
	return d.countEstablished(prog, nil)
}

// countEstablished dumps the established TCP sockets of both families,
// filtered by prog in the kernel and/or by match here.
func (d *Diag) countEstablished(prog []byte, match func(netip.Addr, uint16) bool) (int, error) {
	n := 0
	for _, fam := range []uint8{unix.AF_INET, unix.AF_INET6} {
		var c int
		var err error
		for i := 0; ; i++ {
			c, err = d.countOnce(fam, prog, match)
			if !errors.Is(err, errInterrupted) || i == maxRetries {
				break
			}
		}
		if err != nil {
			return 0, err
		}
		n += c
	}
	return n, nil
}

func (d *Diag) countOnce(family uint8, prog []byte, match func(netip.Addr, uint16) bool) (int, error) {
	req := make([]byte, sizeofReq)
	req[0], req[1] = family, unix.IPPROTO_TCP
	binary.NativeEndian.PutUint32(req[4:], 1<<tcpEstablished)
	if prog != nil {
		ae := netlink.NewAttributeEncoder()
		ae.Bytes(inetDiagReqBytecode, prog)
		attrs, err := ae.Encode()
		if err != nil {
			return 0, fmt.Errorf("sock_diag: encode filter: %w", err)
		}
		req = append(req, attrs...)
	}
	fam := "ipv4"
	if family == unix.AF_INET6 {
		fam = "ipv6"
	}
	msgs, err := d.conn.Execute(netlink.Message{
		Header: netlink.Header{Type: unix.SOCK_DIAG_BY_FAMILY, Flags: netlink.Request | netlink.Dump},
		Data:   req,
	})
	if err != nil {
		return 0, fmt.Errorf("sock_diag dump established tcp %s: %w", fam, err)
	}
	n := 0
	interrupted := false
	for _, m := range msgs {
		if m.Header.Flags&netlink.DumpInterrupted != 0 {
			interrupted = true
		}
		s, ok := parse(inet.TCP, m.Data)
		if ok && (match == nil || match(s.Addr, s.Port)) {
			n++
		}
	}
	if interrupted {
		return n, fmt.Errorf("sock_diag dump established tcp %s: %w", fam, errInterrupted)
	}
	return n, nil
}

// matchProgram is "local address is in one of addrs, or local port is one of
// ports". Each condition is followed by a jump to the end (accept) that it
// skips when it does not match; the last op jumps past the end (reject).
// Jumping forward from each condition keeps every yes (8 bits) small
// however many conditions there are; the long jumps use no (16 bits).
func matchProgram(addrs []netip.Prefix, ports []uint16) []byte {
	var conds [][]byte
	for _, pf := range addrs {
		a := pf.Addr().Unmap()
		fam := byte(unix.AF_INET)
		if a.Is6() {
			fam = unix.AF_INET6
		}
		conds = append(conds, hostcond(fam, byte(pf.Bits()), -1, a.AsSlice()))
	}
	for _, p := range ports {
		conds = append(conds, hostcond(unix.AF_UNSPEC, 0, int32(p), nil))
	}
	total := sizeofBcOp // the final reject
	for _, c := range conds {
		total += len(c) + sizeofBcOp
	}
	prog := make([]byte, 0, total)
	for _, c := range conds {
		// The condition: yes continues to its accept jump, no skips it.
		c[1] = byte(len(c))
		binary.NativeEndian.PutUint16(c[2:], uint16(len(c)+sizeofBcOp))
		prog = append(prog, c...)
		// The accept jump lands exactly on the end.
		prog = appendOp(prog, bcJmp, sizeofBcOp, uint16(total-len(prog)))
	}
	// Nothing matched: jump one op past the end.
	return appendOp(prog, bcJmp, sizeofBcOp, 2*sizeofBcOp)
}

// hostcond is an S_COND op (yes/no filled in by the caller) and its
// struct inet_diag_hostcond; port -1 is any port, prefix 0 any address.
func hostcond(family, prefix byte, port int32, addr []byte) []byte {
	b := make([]byte, sizeofBcOp+sizeofHostcond, sizeofBcOp+sizeofHostcond+len(addr))
	b[0] = bcSCond
	b[4], b[5] = family, prefix
	binary.NativeEndian.PutUint32(b[8:], uint32(port))
	return append(b, addr...)
}

func appendOp(b []byte, code, yes byte, no uint16) []byte {
	b = append(b, code, yes, 0, 0)
	binary.NativeEndian.PutUint16(b[len(b)-2:], no)
	return b
}

// matchFunc is matchProgram in user space, for programs too big for the
// kernel.
func matchFunc(addrs []netip.Prefix, ports []uint16) func(netip.Addr, uint16) bool {
	// Host prefixes (single VIPs, the many) by map; wider ones by scan.
	as := make(map[netip.Addr]bool, len(addrs))
	var wide []netip.Prefix
	for _, pf := range addrs {
		if a := pf.Addr().Unmap(); pf.Bits() == a.BitLen() {
			as[a] = true
		} else {
			wide = append(wide, netip.PrefixFrom(a, pf.Bits()))
		}
	}
	ps := make(map[uint16]bool, len(ports))
	for _, p := range ports {
		ps[p] = true
	}
	return func(a netip.Addr, p uint16) bool {
		a = a.Unmap()
		if as[a] || ps[p] {
			return true
		}
		for _, pf := range wide {
			if pf.Contains(a) {
				return true
			}
		}
		return false
	}
}
