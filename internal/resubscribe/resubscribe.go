// Package resubscribe holds what every kernel watcher shares: a
// subscription closes on any receive error (ENOBUFS after a burst, a
// monitor error), and is reopened after a short pause with a full resync,
// so nothing is lost.
package resubscribe

import (
	"context"
	"time"
)

// Delay bounds how fast a failing subscription is retried.
const Delay = 200 * time.Millisecond

// RcvBuf is the kernel notification buffer: large enough that `ip addr
// flush` of a few thousand VIPs does not overflow it.
const RcvBuf = 4 << 20

// Wake tells the reconcile loop that something may have changed, and what.
type Wake func(trigger string)

// Trigger names for a reopened subscription (events may have been lost).
const Trigger = "resubscribe"

// Sleep waits d or until ctx ends.
func Sleep(ctx context.Context, d time.Duration) {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
	case <-t.C:
	}
}
