package resubscribe

import (
	"context"
	"errors"
	"log/slog"

	"github.com/vishvananda/netlink/nl"
	"golang.org/x/sys/unix"
)

// Netlink is one rtnetlink subscription of a watcher: the multicast groups,
// which messages matter, and the trigger they wake the loop with.
type Netlink struct {
	// What names the subscription in log lines ("rule/route").
	What   string
	Groups []uint
	// Match reports whether a message (its type and payload) wakes the
	// loop; it must not allocate for the messages it rejects.
	Match   func(typ uint16, data []byte) bool
	Trigger string
}

// Run wakes with s.Trigger for every matching message until ctx ends. A
// receive error closes the subscription, which is reopened after Delay with
// a wake of Trigger (a full resync: events may have been lost).
func (s Netlink) Run(ctx context.Context, wake Wake, log *slog.Logger) {
	for ctx.Err() == nil {
		sock, err := nl.Subscribe(unix.NETLINK_ROUTE, s.Groups...)
		if err == nil {
			err = sock.SetReceiveBufferSize(RcvBuf, true)
		}
		if err == nil {
			// Closing the socket does not end a blocked recvfrom, so wake
			// up now and then to see whether ctx is done.
			err = sock.SetReceiveTimeout(&unix.Timeval{Sec: 1})
		}
		if err != nil {
			log.Error("netlink "+s.What+" subscription failed; retrying", "err", err)
			if sock != nil {
				sock.Close()
			}
			Sleep(ctx, Delay)
			continue
		}
		s.receive(ctx, sock, wake)
		sock.Close()
		if ctx.Err() == nil {
			log.Warn("netlink " + s.What + " subscription closed; reopening with a full resync")
			wake(Trigger)
			Sleep(ctx, Delay)
		}
	}
}

// receive reads until an error other than the receive timeout, or ctx ends.
func (s Netlink) receive(ctx context.Context, sock *nl.NetlinkSocket, wake Wake) {
	for ctx.Err() == nil {
		msgs, _, err := sock.Receive()
		if errors.Is(err, unix.EAGAIN) || errors.Is(err, unix.EINTR) {
			continue
		}
		if err != nil {
			return
		}
		for _, m := range msgs {
			if s.Match(m.Header.Type, m.Data) {
				wake(s.Trigger)
			}
		}
	}
}
