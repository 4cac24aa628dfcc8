package daemon

import (
	"maps"
	"slices"
	"sync"
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
	// Sorted: the joined triggers are a metrics label, and map order would
	// make "address,link" and "link,address" two series.
	out := slices.Sorted(maps.Keys(w.pending))
	clear(w.pending)
	return out
}
