package health

import (
	"context"
	"fmt"
	"net"
	"net/netip"
	"syscall"

	"golang.org/x/sys/unix"
)

// listenFreebind listens on addr with IP_FREEBIND (and IPV6_FREEBIND) set, so
// the health endpoint can bind the host's own IP before the network stack has
// configured it at boot: the socket starts answering as soon as the address
// appears, without a restart.
func listenFreebind(ctx context.Context, addr string) (net.Listener, error) {
	return listenSocket(ctx, addr, false)
}

func listenSocket(ctx context.Context, addr string, reusePort bool) (net.Listener, error) {
	lc := net.ListenConfig{Control: func(network, _ string, c syscall.RawConn) error {
		var serr error
		err := c.Control(func(fd uintptr) {
			if network == "tcp6" {
				serr = unix.SetsockoptInt(int(fd), unix.SOL_IPV6, unix.IPV6_FREEBIND, 1)
			} else {
				serr = unix.SetsockoptInt(int(fd), unix.SOL_IP, unix.IP_FREEBIND, 1)
			}
			if serr != nil {
				serr = fmt.Errorf("set freebind: %w", serr)
				return
			}
			if reusePort {
				if serr = unix.SetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_REUSEPORT, 1); serr != nil {
					serr = fmt.Errorf("set SO_REUSEPORT: %w", serr)
				}
			}
		})
		if err != nil {
			return err
		}
		return serr
	}}
	if reusePort {
		// Go listens with MPTCP by default where the kernel has it, and an
		// MPTCP socket refuses SO_ATTACH_REUSEPORT_CBPF (EOPNOTSUPP).
		lc.SetMultipathTCP(false)
	}
	ln, err := lc.Listen(ctx, listenNetwork(addr), addr)
	if err != nil {
		return nil, fmt.Errorf("listen on %s: %w", addr, err)
	}
	return ln, nil
}

func listenNetwork(addr string) string {
	if ap, err := netip.ParseAddrPort(addr); err == nil && ap.Addr().Is6() && !ap.Addr().Is4In6() {
		return "tcp6"
	}
	return "tcp4"
}

// fanoutSockets is how many sockets share the health port. A listening
// socket has one accept queue, first in first out: a host that reconnects
// as fast as it is reset keeps that queue full, and a director's
// connection waits behind all of its connections (2,000 of them: about a
// second here) however cheaply each is reset. With SO_REUSEPORT and a
// classic BPF program choosing the socket by a hash of the source address,
// each source is queued on one of fanoutSockets sockets: a flooding host
// fills its own queue, and a director whose address hashes elsewhere (15
// chances in 16) is accepted at once. A power of two (the hash keeps the
// top bits).
const fanoutSockets = 16

// listenFanout listens on addr with fanoutSockets sockets in one
// SO_REUSEPORT group steered by source address (listenFreebind's options
// otherwise). The kernel keeps a group to sockets of the same user, so
// another user cannot join it; a second listener of ours on the port (a
// restart overlapping the previous instance) shares it until that one
// closes.
func listenFanout(ctx context.Context, addr string) ([]net.Listener, error) {
	first, err := listenSocket(ctx, addr, true)
	if err != nil {
		return nil, err
	}
	lns := []net.Listener{first}
	fail := func(err error) ([]net.Listener, error) {
		for _, ln := range lns {
			ln.Close()
		}
		return nil, err
	}
	prog := sourceHashProg(listenNetwork(addr) == "tcp6", fanoutSockets)
	rc, err := first.(*net.TCPListener).SyscallConn()
	if err != nil {
		return fail(err)
	}
	var serr error
	if err := rc.Control(func(fd uintptr) {
		serr = unix.SetsockoptSockFprog(int(fd), unix.SOL_SOCKET, unix.SO_ATTACH_REUSEPORT_CBPF,
			&unix.SockFprog{Len: uint16(len(prog)), Filter: &prog[0]})
	}); err != nil {
		return fail(err)
	}
	if serr != nil {
		return fail(fmt.Errorf("attach the reuseport program on %s: %w", addr, serr))
	}
	// The others bind the port the first one got (addr may say port 0).
	bound := first.Addr().String()
	for len(lns) < fanoutSockets {
		ln, err := listenSocket(ctx, bound, true)
		if err != nil {
			return fail(err)
		}
		lns = append(lns, ln)
	}
	return lns, nil
}

// sourceHashProg is a classic BPF program for SO_ATTACH_REUSEPORT_CBPF: it
// returns the index of the socket (in the order they joined the group) for
// a connection's first packet, a Fibonacci hash of its IPv4 source address
// (IPv6: the four words of the address xored) reduced to n (a power of two)
// values. The packet data starts after the TCP header; the IP header is read
// at the kernel's negative offset SKF_NET_OFF.
func sourceHashProg(ipv6 bool, n int) []unix.SockFilter {
	const netOff = 0xfff00000 // SKF_NET_OFF, -0x100000 as a uint32
	ldw := func(off uint32) unix.SockFilter {
		return unix.SockFilter{Code: unix.BPF_LD | unix.BPF_W | unix.BPF_ABS, K: netOff + off}
	}
	var p []unix.SockFilter
	if ipv6 {
		p = append(p, ldw(8)) // ip6 saddr, first word
		for _, off := range []uint32{12, 16, 20} {
			p = append(p,
				unix.SockFilter{Code: unix.BPF_MISC | unix.BPF_TAX},
				ldw(off),
				unix.SockFilter{Code: unix.BPF_ALU | unix.BPF_XOR | unix.BPF_X})
		}
	} else {
		p = append(p, ldw(12)) // ip saddr
	}
	bits := uint32(0)
	for 1<<bits < n {
		bits++
	}
	return append(p,
		unix.SockFilter{Code: unix.BPF_ALU | unix.BPF_MUL | unix.BPF_K, K: 0x9e3779b1},
		unix.SockFilter{Code: unix.BPF_ALU | unix.BPF_RSH | unix.BPF_K, K: 32 - bits},
		unix.SockFilter{Code: unix.BPF_RET | unix.BPF_A})
}

// sourceAllowed reports whether remote (a "host:port" from the connection) is
// inside one of the prefixes; an empty list allows everyone.
func sourceAllowed(allowed []netip.Prefix, remote string) bool {
	if len(allowed) == 0 {
		return true
	}
	ap, err := netip.ParseAddrPort(remote)
	if err != nil {
		return false
	}
	a := ap.Addr().Unmap()
	for _, p := range allowed {
		if p.Contains(a) {
			return true
		}
	}
	return false
}
