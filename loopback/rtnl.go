package loopback

import (
	"encoding/binary"
	"errors"
	"fmt"
	"net/netip"
	"sync"

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
	fd := -1
	open := func() error {
		var err error
		fd, err = unix.Socket(unix.AF_NETLINK, unix.SOCK_RAW|unix.SOCK_CLOEXEC, unix.NETLINK_ROUTE)
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
		return nil, fmt.Errorf("open rtnetlink socket: %w", err)
	}
	if err := unix.Bind(fd, &unix.SockaddrNetlink{Family: unix.AF_NETLINK}); err != nil {
		_ = unix.Close(fd)
		return nil, fmt.Errorf("bind rtnetlink socket: %w", err)
	}
	return &rtnl{fd: fd, req: make([]byte, 0, 128), rcv: make([]byte, 4096)}, nil
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
	ne := binary.NativeEndian
	for {
		n, err := unix.Read(r.fd, r.rcv)
		if errors.Is(err, unix.EINTR) {
			continue
		}
		if err != nil {
			return err
		}
		for msg := r.rcv[:n]; len(msg) >= sizeofNlmsghdr; {
			l := int(ne.Uint32(msg))
			if l < sizeofNlmsghdr || l > len(msg) {
				return fmt.Errorf("netlink: malformed answer (length %d of %d bytes)", l, len(msg))
			}
			typ, seq := ne.Uint16(msg[4:]), ne.Uint32(msg[8:])
			if seq == r.seq && typ == unix.NLMSG_ERROR {
				if l < sizeofNlmsghdr+4 {
					return errors.New("netlink: short error message")
				}
				if errno := int32(ne.Uint32(msg[sizeofNlmsghdr:])); errno != 0 {
					return unix.Errno(-errno)
				}
				return nil
			}
			msg = msg[min(nlmAlign(l), len(msg)):]
		}
	}
}

func nlmAlign(n int) int { return (n + unix.NLMSG_ALIGNTO - 1) &^ (unix.NLMSG_ALIGNTO - 1) }
