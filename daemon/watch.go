package daemon

import (
	"context"
	"log/slog"
	"net"
	"os"
	"sync"
	"time"

	"github.com/google/nftables"
	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"

	"github.com/dsr-agent/dsr-agent/firewall"
)

// waker coalesces triggers: any number of events between two reconcile
// passes cause one pass, and the pass knows what woke it.
type waker struct {
	mu      sync.Mutex
	pending map[string]bool
	ch      chan struct{}
}

func newWaker() *waker { return &waker{pending: map[string]bool{}, ch: make(chan struct{}, 1)} }

func (w *waker) wake(trigger string) {
	w.mu.Lock()
	w.pending[trigger] = true
	w.mu.Unlock()
	select {
	case w.ch <- struct{}{}:
	default:
	}
}

// take returns and clears the pending triggers.
func (w *waker) take() []string {
	w.mu.Lock()
	defer w.mu.Unlock()
	out := make([]string, 0, len(w.pending))
	for t := range w.pending {
		out = append(out, t)
	}
	clear(w.pending)
	return out
}

// Kernel notification buffer: large enough that `ip addr flush` of a few
// thousand VIPs does not overflow it. An overflow (ENOBUFS) closes the
// subscription, which is then reopened with a full resync, so nothing is lost.
const rcvBuf = 4 << 20

// resubscribeDelay bounds how fast a failing subscription is retried.
const resubscribeDelay = 200 * time.Millisecond

// watchAddrs wakes the loop when an address is deleted anywhere: that is how
// a VIP disappears (ip addr del/flush, a network manager). Additions are not
// drift dsr-agent repairs (it never removes addresses it does not own), and
// ignoring them keeps the daemon's own repairs from waking it again.
func watchAddrs(ctx context.Context, w *waker, log *slog.Logger) {
	for ctx.Err() == nil {
		ch := make(chan netlink.AddrUpdate, 256)
		done := make(chan struct{})
		err := netlink.AddrSubscribeWithOptions(ch, done, netlink.AddrSubscribeOptions{
			ReceiveBufferSize: rcvBuf, ReceiveBufferForceSize: true,
			ErrorCallback: func(err error) { log.Warn("netlink address subscription", "err", err) },
		})
		if err != nil {
			log.Error("netlink address subscription failed; retrying", "err", err)
			close(done)
			sleepCtx(ctx, resubscribeDelay)
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
						w.wake("address")
					}
				}
			}
		}()
		if ctx.Err() == nil {
			// Events may have been lost: the resync catches up.
			log.Warn("netlink address subscription closed; reopening with a full resync")
			w.wake("resubscribe")
			sleepCtx(ctx, resubscribeDelay)
		}
	}
}

// watchLinks wakes the loop when an interface appears, is renamed, comes up
// or goes away: a re-created NIC comes back with default per-interface
// sysctls and without addresses.
func watchLinks(ctx context.Context, w *waker, log *slog.Logger) {
	type seen struct {
		name string
		up   bool
	}
	for ctx.Err() == nil {
		ch := make(chan netlink.LinkUpdate, 64)
		done := make(chan struct{})
		known := map[int32]seen{}
		err := netlink.LinkSubscribeWithOptions(ch, done, netlink.LinkSubscribeOptions{
			ListExisting: true, ReceiveBufferSize: rcvBuf, ReceiveBufferForceSize: true,
			ErrorCallback: func(err error) { log.Warn("netlink link subscription", "err", err) },
		})
		if err != nil {
			log.Error("netlink link subscription failed; retrying", "err", err)
			close(done)
			sleepCtx(ctx, resubscribeDelay)
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
					idx := u.Index
					attrs := u.Attrs()
					if u.Header.Type == unix.RTM_DELLINK {
						delete(known, idx)
						if !listing {
							w.wake("link")
						}
						continue
					}
					now := seen{name: attrs.Name, up: attrs.Flags&net.FlagUp != 0}
					if old, ok := known[idx]; !ok || old != now {
						known[idx] = now
						if !listing {
							w.wake("link")
						}
					}
				}
			}
		}()
		if ctx.Err() == nil {
			log.Warn("netlink link subscription closed; reopening with a full resync")
			w.wake("resubscribe")
			sleepCtx(ctx, resubscribeDelay)
		}
	}
}

// watchNFT wakes the loop when another process changes a dsr-agent table
// (flush, delete, rule or set edit). Changes to other tables are not ours to
// fight over and are ignored; batches committed by this process (our own
// repairs) are recognised by the generation message's PID and ignored.
func watchNFT(ctx context.Context, w *waker, log *slog.Logger) {
	self := uint32(os.Getpid())
	for ctx.Err() == nil {
		conn, err := nftables.New()
		if err != nil {
			log.Error("nftables connection failed; retrying", "err", err)
			sleepCtx(ctx, resubscribeDelay)
			continue
		}
		mon := nftables.NewMonitor(nftables.WithMonitorEventBuffer(64))
		ch, err := conn.AddGenerationalMonitor(mon)
		if err != nil {
			log.Error("nftables monitor failed; retrying", "err", err)
			sleepCtx(ctx, resubscribeDelay)
			continue
		}
		func() {
			defer mon.Close()
			for {
				select {
				case <-ctx.Done():
					return
				case evs, ok := <-ch:
					if !ok {
						return
					}
					if evs.GeneratedBy != nil && evs.GeneratedBy.Type == nftables.MonitorEventTypeOOB {
						log.Warn("nftables monitor error", "err", evs.GeneratedBy.Error)
						continue // the channel closes next
					}
					if gen, ok := evs.GeneratedBy.Data.(*nftables.GenMsg); ok && gen.ProcPID == self {
						continue
					}
					if touchesOwned(evs.Changes) {
						w.wake("nftables")
					}
				}
			}
		}()
		if ctx.Err() == nil {
			log.Warn("nftables monitor closed; reopening with a full resync")
			w.wake("resubscribe")
			sleepCtx(ctx, resubscribeDelay)
		}
	}
}

// touchesOwned reports whether a batch may have changed a dsr-agent table.
// A table update such as `nft add table arp dsr-agent '{ flags dormant; }'`
// arrives as NFT_MSG_NEWTABLE with the table's name, and chain and set
// changes carry their table, so all of them wake the loop.
// Set-element events do not carry their table's name, so they count (a
// flushed VIP set must be noticed); a spurious pass is a no-op.
func touchesOwned(changes []*nftables.MonitorEvent) bool {
	for _, e := range changes {
		var table *nftables.Table
		switch d := e.Data.(type) {
		case *nftables.Table:
			table = d
		case *nftables.Chain:
			table = d.Table
		case *nftables.Rule:
			table = d.Table
		case *nftables.Set:
			table = d.Table
		case []nftables.SetElement:
			return true
		}
		if table == nil || table.Name == firewall.TableName {
			return true
		}
	}
	return false
}

func sleepCtx(ctx context.Context, d time.Duration) {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
	case <-t.C:
	}
}
