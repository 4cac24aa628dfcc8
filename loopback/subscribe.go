package loopback

import (
	"encoding/binary"
	"errors"
	"fmt"
	"os"
	"syscall"

	"github.com/vishvananda/netns"
	"golang.org/x/sys/unix"

	"github.com/dsr-agent/dsr-agent/internal/resubscribe"
)

// subscription reads rtnetlink notifications into one buffer kept for its
// life. vishvananda/netlink's subscriptions each park a goroutine in a frame
// holding a 64 KiB receive array (a 128 KiB stack that never shrinks) and
// parse every notification into a struct the watchers only look at the type
// and a few fields of; the daemon has these watchers for its whole life
// (issue 19: its RSS).
type subscription struct {
	f  *os.File
	rc syscall.RawConn
	// 32 KiB: notifications are small and a dump's messages are sized to
	// the reader's buffer.
	buf [32 << 10]byte
}

// subscribe joins the rtnetlink groups in the network namespace ns (the
// caller's own when ns is not open), with resubscribe.RcvBuf of buffer.
func subscribe(ns netns.NsHandle, groups ...int) (*subscription, error) {
	fd, err := openRoute(ns, unix.SOCK_NONBLOCK)
	if err != nil {
		return nil, fmt.Errorf("rtnetlink subscription: %w", err)
	}
	err = unix.SetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_RCVBUFFORCE, resubscribe.RcvBuf)
	for _, g := range groups {
		if err == nil {
			err = unix.SetsockoptInt(fd, unix.SOL_NETLINK, unix.NETLINK_ADD_MEMBERSHIP, g)
		}
	}
	if err != nil {
		_ = unix.Close(fd)
		return nil, fmt.Errorf("rtnetlink subscription: %w", err)
	}
	s := &subscription{f: os.NewFile(uintptr(fd), "rtnetlink")}
	if s.rc, err = s.f.SyscallConn(); err != nil {
		_ = s.f.Close()
		return nil, err
	}
	return s, nil
}

func (s *subscription) close() { _ = s.f.Close() }

// request sends a dump request (its answers arrive among the notifications).
func (s *subscription) request(typ uint16, body []byte) error {
	b := make([]byte, sizeofNlmsghdr, sizeofNlmsghdr+len(body))
	ne := binary.NativeEndian
	ne.PutUint32(b[0:], uint32(sizeofNlmsghdr+len(body)))
	ne.PutUint16(b[4:], typ)
	ne.PutUint16(b[6:], unix.NLM_F_REQUEST|unix.NLM_F_DUMP)
	ne.PutUint32(b[8:], 1)
	_, err := s.f.Write(append(b, body...))
	return err
}

// read waits for the next datagram and calls fn with each message's type
// and body. An overflow (ENOBUFS: notifications were lost) is an error like
// any other: the caller reopens with a full resync. Closing the subscription
// ends a read in progress.
func (s *subscription) read(fn func(typ uint16, body []byte)) error {
	var n int
	var rerr error
	err := s.rc.Read(func(fd uintptr) bool {
		n, rerr = unix.Read(int(fd), s.buf[:])
		return rerr != unix.EAGAIN
	})
	if err := errors.Join(err, rerr); err != nil {
		return err
	}
	_, err = messages(s.buf[:n], func(h header, body []byte) (bool, error) {
		fn(h.typ, body)
		return false, nil
	})
	return err
}
