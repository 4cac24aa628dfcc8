package tunnel

import (
	"context"
	"log/slog"
	"slices"
	"strings"
	"sync/atomic"
	"time"

	"github.com/vishvananda/netlink"

	"github.com/dsr-agent/dsr-agent/internal/resubscribe"
)

// TriggerFou is the wake of a changed set of fou sockets. tunl0/ip6tnl0
// going down or away needs no watcher here: loopback.WatchLinks wakes on
// every link's state.
const TriggerFou = "tunnel-fou"

// FouPollInterval is how often the fou sockets are listed. The fou generic
// netlink family has no multicast group (net/ipv4/fou_core.c registers
// fou_nl_family without mcgrps), so a deleted GUE port raises no event; a
// dump of a handful of sockets is one request and one small answer.
const FouPollInterval = time.Second

// Watcher polls the fou sockets and wakes the reconcile loop when they
// change.
type Watcher struct {
	// NL lists fou sockets, in the namespace it is bound to.
	NL *netlink.Handle
	// Poll is the fou poll interval; 0 means FouPollInterval.
	Poll time.Duration
	// FouOn, when set, gates the fou poll: a host without a GUE port to
	// keep does not list fou sockets every second.
	FouOn *atomic.Bool
	// polled, when set (tests), is called after each poll: a test awaits
	// the first one before it changes the sockets.
	polled func()
}

// PollFou polls until ctx ends.
func (w Watcher) PollFou(ctx context.Context, wake resubscribe.Wake, log *slog.Logger) {
	w.pollFou(ctx, wake, log)
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
		if w.polled != nil {
			w.polled()
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
