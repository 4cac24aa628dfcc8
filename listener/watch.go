package listener

import (
	"context"
	"log/slog"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/dsr-agent/dsr-agent/internal/inet"
)

// DefaultPoll is how often the daemon reads the sockets of the served
// ports. The kernel announces no new listening socket (sock_diag has no
// such notification), so it polls; a dump filtered to listening sockets
// is cheap.
const DefaultPoll = time.Second

// Port is one served protocol and port, as the kernel sees the packets
// (in firewalld mode the redirect's to_port).
type Port struct {
	Proto inet.Protocol
	Port  uint16
}

// Watcher wakes the reconcile loop with "listener" when the sockets on the
// watched ports change (a service started, stopped, rebound). It reads the
// network namespace of the calling process.
type Watcher struct {
	mu    sync.Mutex
	ports map[Port]bool
}

// Set replaces the watched ports (none: nothing is read).
func (w *Watcher) Set(ports []Port) {
	m := make(map[Port]bool, len(ports))
	for _, p := range ports {
		m[p] = true
	}
	w.mu.Lock()
	w.ports = m
	w.mu.Unlock()
}

// Run polls every interval until ctx ends.
func (w *Watcher) Run(ctx context.Context, wake func(string), log *slog.Logger, interval time.Duration) {
	var d *Diag
	defer func() {
		if d != nil {
			d.Close()
		}
	}()
	t := time.NewTicker(interval)
	defer t.Stop()
	last := ""
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		w.mu.Lock()
		ports := w.ports
		w.mu.Unlock()
		if len(ports) == 0 {
			last = ""
			continue
		}
		if d == nil {
			var err error
			if d, err = Open(-1); err != nil {
				log.Warn("listener poll: cannot open sock_diag", "err", err)
				d = nil
				continue
			}
		}
		var protos []inet.Protocol
		for p := range ports {
			if !slices.Contains(protos, p.Proto) {
				protos = append(protos, p.Proto)
			}
		}
		socks, err := d.List(protos, true)
		if err != nil {
			log.Warn("listener poll failed", "err", err)
			continue
		}
		var seen []string
		for _, s := range socks {
			if ports[Port{s.Proto, s.Port}] {
				seen = append(seen, s.String())
			}
		}
		slices.Sort(seen)
		if fp := strings.Join(seen, ","); fp != last {
			last = fp
			wake("listener")
		}
	}
}
