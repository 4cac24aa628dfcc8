package loopback

import (
	"context"
	"log/slog"
	"net"
	"time"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"

	"github.com/dsr-agent/dsr-agent/internal/resubscribe"
)

// AddressAdded is the trigger for an address added anywhere. It is not drift
// (dsr-agent never removes addresses it does not own), so a daemon whose
// last pass worked ignores it -- its own repairs add addresses -- but one
// whose last pass failed for want of a host fact (a network manager deleted
// the NIC's own address, which arptables mode and health.listen need) retries
// the moment the address is back instead of at its next backoff.
const AddressAdded = "address-added"

// WatchAddrs wakes with "address" when an address is deleted anywhere: that
// is how a VIP disappears (ip addr del/flush, a network manager); and with
// AddressAdded when one is added.
func WatchAddrs(ctx context.Context, wake resubscribe.Wake, log *slog.Logger) {
	for ctx.Err() == nil {
		ch := make(chan netlink.AddrUpdate, 256)
		done := make(chan struct{})
		err := netlink.AddrSubscribeWithOptions(ch, done, netlink.AddrSubscribeOptions{
			ReceiveBufferSize: resubscribe.RcvBuf, ReceiveBufferForceSize: true,
			ErrorCallback: func(err error) { log.Warn("netlink address subscription", "err", err) },
		})
		if err != nil {
			log.Error("netlink address subscription failed; retrying", "err", err)
			close(done)
			resubscribe.Sleep(ctx, resubscribe.Delay)
			continue
		}
		func() {
			defer close(done)
			for {
				select {
				case <-ctx.Done():
					return
				case u, ok := <-ch:
					if !ok {
						return
					}
					if !u.NewAddr {
						wake("address")
					} else {
						wake(AddressAdded)
					}
				}
			}
		}()
		if ctx.Err() == nil {
			log.Warn("netlink address subscription closed; reopening with a full resync")
			wake(resubscribe.Trigger)
			resubscribe.Sleep(ctx, resubscribe.Delay)
		}
	}
}

// WatchLinks wakes with "link" when an interface appears, is renamed, comes
// up, changes its MTU or goes away: a re-created NIC comes back with default per-interface
// sysctls and without addresses.
func WatchLinks(ctx context.Context, wake resubscribe.Wake, log *slog.Logger) {
	type seen struct {
		name string
		up   bool
		mtu  int // mode tunnel's default MSS follows the NIC's MTU
	}
	for ctx.Err() == nil {
		ch := make(chan netlink.LinkUpdate, 64)
		done := make(chan struct{})
		known := map[int32]seen{}
		err := netlink.LinkSubscribeWithOptions(ch, done, netlink.LinkSubscribeOptions{
			ListExisting: true, ReceiveBufferSize: resubscribe.RcvBuf, ReceiveBufferForceSize: true,
			ErrorCallback: func(err error) { log.Warn("netlink link subscription", "err", err) },
		})
		if err != nil {
			log.Error("netlink link subscription failed; retrying", "err", err)
			close(done)
			resubscribe.Sleep(ctx, resubscribe.Delay)
			continue
		}
		listing := true // the ListExisting dump is not a change
		settle := time.NewTimer(100 * time.Millisecond)
		func() {
			defer close(done)
			defer settle.Stop()
			for {
				select {
				case <-ctx.Done():
					return
				case <-settle.C:
					listing = false
				case u, ok := <-ch:
					if !ok {
						return
					}
					if u.Header.Type == unix.RTM_DELLINK {
						delete(known, u.Index)
						if !listing {
							wake("link")
						}
						continue
					}
					now := seen{name: u.Attrs().Name, up: u.Attrs().Flags&net.FlagUp != 0, mtu: u.Attrs().MTU}
					if old, had := known[u.Index]; !had || old != now {
						known[u.Index] = now
						if !listing {
							wake("link")
						}
					}
				}
			}
		}()
		if ctx.Err() == nil {
			log.Warn("netlink link subscription closed; reopening with a full resync")
			wake(resubscribe.Trigger)
			resubscribe.Sleep(ctx, resubscribe.Delay)
		}
	}
}
