package loopback

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"net/netip"
	"sync"

	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"
	"golang.org/x/sys/unix"

	"github.com/dsr-agent/dsr-agent/internal/netnsutil"
)

// rtnl is one rtnetlink socket for adding and deleting addresses: a request,
// then its ack, through buffers kept between calls. Applying 10,000 VIPs is
// 10,000 of these round trips, and the kernel's own work per address is what
// must dominate them (as it does for `ip -batch`): vishvananda/netlink spends
// a getsockname(2), a 64 KiB buffer cleared on the stack and a few
// allocations on each one (the profile in bench/RESULTS.md, issue 19).
//
// Hand-written rather than github.com/mdlayher/netlink (a dependency of
// listener/ and firewall/) for the same reason: its Conn.Execute marshals
// each request into a new buffer, and its Receive makes a page-sized buffer,
// peeks (MSG_PEEK) before it reads, so two recvmsg(2) an answer, copies it
// into a []syscall.NetlinkMessage and a []Message and validates it against
// the request. The same 1,000 adds through it (a scratch benchmark beside
// BenchmarkAdd, 2026-12-07): 45,090 allocations and 6.3 MB, ~100 ms,
// against 37, 8 KB and ~48 ms here. What it would save is ~60 lines of
// framing (messages, recv) and attribute encoding.
type rtnl struct {
	mu  sync.Mutex
	fd  int
	seq uint32
	req []byte
	rcv []byte
}

// openRTNL opens the socket in the network namespace ns (the caller's own
// when ns is not open): a netlink socket stays in the namespace it was
// created in.
func openRTNL(ns netns.NsHandle) (*rtnl, error) {
	fd, err := openRoute(ns, 0)
	if err != nil {
		return nil, err
	}
	// The kernel sizes a dump's messages to the reader's buffer, up to 32 KiB.
	return &rtnl{fd: fd, req: make([]byte, 0, 128), rcv: make([]byte, 32<<10)}, nil
}

// openRoute opens and binds a NETLINK_ROUTE socket (SOCK_CLOEXEC and
// flags) in the network namespace ns, the caller's own when ns is not open:
// a netlink socket stays in the namespace it was created in.
func openRoute(ns netns.NsHandle, flags int) (int, error) {
	fd := -1
	open := func() error {
		var err error
		fd, err = unix.Socket(unix.AF_NETLINK, unix.SOCK_RAW|unix.SOCK_CLOEXEC|flags, unix.NETLINK_ROUTE)
		return err
	}
	var err error
	if ns.IsOpen() {
		err = netnsutil.Within(ns, open)
	} else {
		err = open()
	}
	if err != nil {
		if fd >= 0 {
			_ = unix.Close(fd)
		}
		return -1, fmt.Errorf("open rtnetlink socket: %w", err)
	}
	if err := unix.Bind(fd, &unix.SockaddrNetlink{Family: unix.AF_NETLINK}); err != nil {
		_ = unix.Close(fd)
		return -1, fmt.Errorf("bind rtnetlink socket: %w", err)
	}
	return fd, nil
}

func (r *rtnl) close() error { return unix.Close(r.fd) }

const (
	sizeofNlmsghdr  = unix.SizeofNlMsghdr
	sizeofIfaddrmsg = unix.SizeofIfAddrmsg
)

// addr sends one RTM_NEWADDR or RTM_DELADDR for p on the interface index and
// waits for the kernel's answer: the same message ip(8) and
// vishvananda/netlink send (IFA_LOCAL and IFA_ADDRESS both the address, the
// IPv4 label, IFA_F_NODAD in the header's flags for IPv6 additions).
func (r *rtnl) addr(typ uint16, flags uint16, index int, p netip.Prefix, label string) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.seq++
	ip := p.Addr()
	family, ifaFlags := byte(unix.AF_INET), byte(0)
	if ip.Is6() {
		family = unix.AF_INET6
		if typ == unix.RTM_NEWADDR {
			// No duplicate address detection: the VIP is deliberately
			// shared with the director and the other real servers.
			ifaFlags = unix.IFA_F_NODAD
		}
	}
	ne := binary.NativeEndian
	b := r.req[:sizeofNlmsghdr]
	ne.PutUint16(b[4:], typ)
	ne.PutUint16(b[6:], flags|unix.NLM_F_REQUEST|unix.NLM_F_ACK)
	ne.PutUint32(b[8:], r.seq)
	ne.PutUint32(b[12:], 0)
	b = append(b, family, byte(p.Bits()), ifaFlags, 0)
	b = ne.AppendUint32(b, uint32(index))
	raw := ip.AsSlice()
	b = appendAttr(b, unix.IFA_LOCAL, raw)
	b = appendAttr(b, unix.IFA_ADDRESS, raw)
	if ip.Is4() && label != "" && typ == unix.RTM_NEWADDR {
		b = appendAttr(b, unix.IFA_LABEL, append([]byte(label), 0))
	}
	ne.PutUint32(b[0:], uint32(len(b)))
	r.req = b[:0]
	if _, err := unix.Write(r.fd, b); err != nil {
		return err
	}
	return r.ack()
}

// appendAttr appends one rtattr, padded to 4 bytes.
func appendAttr(b []byte, typ uint16, data []byte) []byte {
	ne := binary.NativeEndian
	b = ne.AppendUint16(b, uint16(unix.SizeofRtAttr+len(data)))
	b = ne.AppendUint16(b, typ)
	b = append(b, data...)
	for len(b)%4 != 0 {
		b = append(b, 0)
	}
	return b
}

// ack reads until the kernel's answer to the request r.seq: nil, or its
// errno (the type vishvananda/netlink returns, so errors.Is works alike).
func (r *rtnl) ack() error {
	return r.recv(func(h header, body []byte) (bool, error) {
		if h.seq != r.seq || h.typ != unix.NLMSG_ERROR {
			return false, nil
		}
		if len(body) < 4 {
			return true, errors.New("netlink: short error message")
		}
		return true, errnoOf(body)
	})
}

// header is the part of a netlink message header the readers look at.
type header struct {
	typ, flags uint16
	seq        uint32
}

// recv reads datagrams into r.rcv and calls fn with each message in them
// until fn says it is done (or fails).
func (r *rtnl) recv(fn func(h header, body []byte) (done bool, err error)) error {
	for {
		n, err := unix.Read(r.fd, r.rcv)
		if errors.Is(err, unix.EINTR) {
			continue
		}
		if err != nil {
			return err
		}
		if done, err := messages(r.rcv[:n], fn); done || err != nil {
			return err
		}
	}
}

// messages calls fn with each message of the datagram b, in order, until fn
// says it is done (or fails).
func messages(b []byte, fn func(h header, body []byte) (done bool, err error)) (bool, error) {
	ne := binary.NativeEndian
	for len(b) >= sizeofNlmsghdr {
		l := int(ne.Uint32(b))
		if l < sizeofNlmsghdr || l > len(b) {
			return true, fmt.Errorf("netlink: malformed message (length %d of %d bytes)", l, len(b))
		}
		h := header{typ: ne.Uint16(b[4:]), flags: ne.Uint16(b[6:]), seq: ne.Uint32(b[8:])}
		body := b[sizeofNlmsghdr:l]
		b = b[min(nlmAlign(l), len(b)):]
		if done, err := fn(h, body); done || err != nil {
			return true, err
		}
	}
	return false, nil
}

// errnoOf is the error an NLMSG_ERROR or NLMSG_DONE body carries, nil for 0.
func errnoOf(body []byte) error {
	if len(body) >= 4 {
		if errno := int32(binary.NativeEndian.Uint32(body)); errno != 0 {
			return unix.Errno(-errno)
		}
	}
	return nil
}

// trimNUL drops a C string's terminating NULs.
func trimNUL(b []byte) []byte { return bytes.TrimRight(b, "\x00") }

// nlaTypeMask strips NLA_F_NESTED and NLA_F_NET_BYTEORDER from a type.
const nlaTypeMask = 0x3fff

func nlmAlign(n int) int { return (n + unix.NLMSG_ALIGNTO - 1) &^ (unix.NLMSG_ALIGNTO - 1) }

// dump sends a dump request of type typ whose body is hdr and calls fn with
// each answer's body (after the netlink header), in the kernel's order. A
// dump the kernel marks interrupted (the table changed while it was read) is
// read to its end and returns netlink.ErrDumpInterrupted, as
// vishvananda/netlink does, for internal/nldump to repeat.
func (r *rtnl) dump(typ uint16, hdr []byte, fn func(body []byte)) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.seq++
	ne := binary.NativeEndian
	b := r.req[:sizeofNlmsghdr]
	ne.PutUint32(b[0:], uint32(sizeofNlmsghdr+len(hdr)))
	ne.PutUint16(b[4:], typ)
	ne.PutUint16(b[6:], unix.NLM_F_REQUEST|unix.NLM_F_DUMP)
	ne.PutUint32(b[8:], r.seq)
	ne.PutUint32(b[12:], 0)
	b = append(b, hdr...)
	r.req = b[:0]
	if _, err := unix.Write(r.fd, b); err != nil {
		return err
	}
	interrupted := false
	return r.recv(func(h header, body []byte) (bool, error) {
		if h.seq != r.seq {
			return false, nil
		}
		if h.flags&unix.NLM_F_DUMP_INTR != 0 {
			interrupted = true
		}
		switch h.typ {
		case unix.NLMSG_DONE, unix.NLMSG_ERROR:
			if err := errnoOf(body); err != nil {
				return true, err
			}
			if interrupted {
				return true, netlink.ErrDumpInterrupted
			}
			return true, nil
		}
		fn(body)
		return false, nil
	})
}

// attrs calls fn with each rtattr in b (type without its flag bits).
func attrs(b []byte, fn func(typ uint16, val []byte)) {
	ne := binary.NativeEndian
	for len(b) >= unix.SizeofRtAttr {
		l := int(ne.Uint16(b))
		if l < unix.SizeofRtAttr || l > len(b) {
			return
		}
		fn(ne.Uint16(b[2:])&nlaTypeMask, b[unix.SizeofRtAttr:l])
		b = b[min((l+unix.RTA_ALIGNTO-1)&^(unix.RTA_ALIGNTO-1), len(b)):]
	}
}

// linkNames dumps the interfaces' names by index.
func (r *rtnl) linkNames() (map[int]string, error) {
	out := map[int]string{}
	err := r.dump(unix.RTM_GETLINK, make([]byte, unix.SizeofIfInfomsg), func(body []byte) {
		if len(body) < unix.SizeofIfInfomsg {
			return
		}
		index := int(int32(binary.NativeEndian.Uint32(body[4:])))
		attrs(body[unix.SizeofIfInfomsg:], func(typ uint16, val []byte) {
			if typ == unix.IFLA_IFNAME {
				out[index] = string(trimNUL(val))
			}
		})
	})
	return out, err
}

// rawAddr is one address of the dump, read the way vishvananda/netlink reads
// it: IFA_LOCAL is the address (a host prefix when IFA_ADDRESS is a
// different, peer, address), else IFA_ADDRESS with the prefix length.
type rawAddr struct {
	index int
	ip    netip.Addr
	bits  int
	label string
	flags uint32
}

// addrs dumps every address of both families.
func (r *rtnl) addrs(fn func(rawAddr)) error {
	return r.dump(unix.RTM_GETADDR, make([]byte, sizeofIfaddrmsg), func(body []byte) {
		if len(body) < sizeofIfaddrmsg {
			return
		}
		family, plen := body[0], int(body[1])
		a := rawAddr{index: int(binary.NativeEndian.Uint32(body[4:]))}
		var local, address []byte
		attrs(body[sizeofIfaddrmsg:], func(typ uint16, val []byte) {
			switch typ {
			case unix.IFA_ADDRESS:
				address = val
			case unix.IFA_LOCAL:
				local = val
			case unix.IFA_LABEL:
				a.label = string(trimNUL(val))
			case unix.IFA_FLAGS:
				if len(val) >= 4 {
					a.flags = binary.NativeEndian.Uint32(val)
				}
			}
		})
		switch {
		case local != nil && family == unix.AF_INET && bytes.Equal(local, address):
			a.bits, local = plen, address
		case local != nil:
			a.bits = 8 * len(local)
		case address != nil:
			a.bits, local = plen, address
		default:
			return
		}
		ip, ok := netip.AddrFromSlice(local)
		if !ok {
			return
		}
		a.ip = ip.Unmap()
		fn(a)
	})
}
