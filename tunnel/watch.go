package tunnel

import (
	"context"
	"log/slog"
	"net"
	"slices"
	"strings"
	"sync/atomic"
	"time"

	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"
	"golang.org/x/sys/unix"

	"github.com/dsr-agent/dsr-agent/internal/resubscribe"
)

// Triggers a Watcher wakes the reconcile loop with.
const (
	TriggerLink = "tunnel-link" // tunl0/ip6tnl0 appeared, went, went down or up
	TriggerFou  = "tunnel-fou"  // the set of fou sockets changed
)

// FouPollInterval is how often the fou sockets are listed. The fou generic
// netlink family has no multicast group (net/ipv4/fou_core.c registers
// fou_nl_family without mcgrps), so a deleted GUE port raises no event; a
// dump of a handful of sockets is one request and one small answer.
const FouPollInterval = time.Second

// Watcher wakes the reconcile loop when a tunnel device or a fou socket
// changes.
type Watcher struct {
	// NL lists fou sockets (it must reach the same namespace as NS).
	NL *netlink.Handle
	// NS is the namespace whose links are watched; nil: the caller's.
	NS *netns.NsHandle
	// Poll is the fou poll interval; 0 means FouPollInterval.
	Poll time.Duration
	// FouOn, when set, gates the fou poll: a host without a GUE port to
	// keep does not list fou sockets every second.
	FouOn *atomic.Bool
}

// Watch runs a Watcher on h in the caller's namespace until ctx ends.
func Watch(ctx context.Context, h *netlink.Handle, wake resubscribe.Wake, log *slog.Logger) {
	Watcher{NL: h}.Run(ctx, wake, log)
}

// Run watches until ctx ends.
func (w Watcher) Run(ctx context.Context, wake resubscribe.Wake, log *slog.Logger) {
	done := make(chan struct{})
	go func() {
		defer close(done)
		w.pollFou(ctx, wake, log)
	}()
	w.watchLinks(ctx, wake, log)
	<-done
}

// PollFou runs only the fou poll: for a caller whose own link watcher
// already wakes on tunl0/ip6tnl0 changes.
func (w Watcher) PollFou(ctx context.Context, wake resubscribe.Wake, log *slog.Logger) {
	w.pollFou(ctx, wake, log)
}

func isTunnelDev(name string) bool { return name == DevIPv4 || name == DevIPv6 }

// watchLinks is loopback.WatchLinks narrowed to the tunnel devices.
func (w Watcher) watchLinks(ctx context.Context, wake resubscribe.Wake, log *slog.Logger) {
	type seen struct {
		name string
		up   bool
	}
	for ctx.Err() == nil {
		ch := make(chan netlink.LinkUpdate, 64)
		done := make(chan struct{})
		known := map[int32]seen{}
		err := netlink.LinkSubscribeWithOptions(ch, done, netlink.LinkSubscribeOptions{
			Namespace: w.NS, ListExisting: true,
			ReceiveBufferSize: resubscribe.RcvBuf, ReceiveBufferForceSize: true,
			ErrorCallback: func(err error) { log.Warn("netlink link subscription (tunnel)", "err", err) },
		})
		if err != nil {
			log.Error("netlink link subscription (tunnel) failed; retrying", "err", err)
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
					old, had := known[u.Index]
					if u.Header.Type == unix.RTM_DELLINK {
						delete(known, u.Index)
						if had && !listing {
							wake(TriggerLink)
						}
						continue
					}
					now := seen{name: u.Attrs().Name, up: u.Attrs().Flags&net.FlagUp != 0}
					if !isTunnelDev(now.name) && !(had && isTunnelDev(old.name)) {
						continue // not ours to watch (a rename away from tunl0 is)
					}
					if !had || old != now {
						if isTunnelDev(now.name) {
							known[u.Index] = now
						} else {
							delete(known, u.Index)
						}
						if !listing {
							wake(TriggerLink)
						}
					}
				}
			}
		}()
		if ctx.Err() == nil {
			log.Warn("netlink link subscription (tunnel) closed; reopening with a full resync")
			wake(resubscribe.Trigger)
			resubscribe.Sleep(ctx, resubscribe.Delay)
		}
	}
}

// pollFou lists the fou sockets every Poll and wakes when the set changed.
// Without the fou module there is nothing to list; the module appearing or
// going is itself a change.
func (w Watcher) pollFou(ctx context.Context, wake resubscribe.Wake, log *slog.Logger) {
	every := w.Poll
	if every <= 0 {
		every = FouPollInterval
	}
	t := time.NewTicker(every)
	defer t.Stop()
	last, failing, first := "", false, true
	for {
		cur, ok := "no-fou-module", true
		if w.FouOn != nil && !w.FouOn.Load() {
			// Off: the next poll after it is turned on is a fresh start.
			ok, first = false, true
		} else if ModuleLoaded(ModFou) {
			ports, err := ListFou(w.NL)
			if err != nil {
				if !failing {
					log.Warn("fou poll failed", "err", err)
				}
				ok = false
			} else {
				cur = fouFingerprint(ports)
			}
		}
		failing = !ok
		if ok {
			if !first && cur != last {
				wake(TriggerFou)
			}
			last, first = cur, false
		}
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

func fouFingerprint(ports []FouPort) string {
	ss := make([]string, 0, len(ports))
	for _, p := range ports {
		ss = append(ss, p.FouKey.String()+" "+p.describe())
	}
	slices.Sort(ss)
	return strings.Join(ss, ",")
}
