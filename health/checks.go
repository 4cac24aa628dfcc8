package health

import (
	"context"
	"errors"
	"fmt"
	"net"
	"sync"
	"syscall"
	"time"

	"github.com/dsr-agent/dsr-agent/agent"
)

// Checker runs the configured checks in the background and feeds State.
type Checker struct {
	state  *State
	mu     sync.Mutex
	cancel context.CancelFunc
	wg     sync.WaitGroup
}

// NewChecker returns a checker publishing to state.
func NewChecker(state *State) *Checker { return &Checker{state: state} }

// Set stops the running checks and starts specs (used at start and reload).
// Each check probes once immediately so health is known quickly.
func (c *Checker) Set(ctx context.Context, specs []agent.CheckConfig) {
	c.Stop()
	c.mu.Lock()
	defer c.mu.Unlock()
	list := make([]CheckStatus, 0, len(specs))
	for _, s := range specs {
		list = append(list, CheckStatus{Name: s.Name, Kind: string(s.Kind), Target: s.Target})
	}
	c.state.resetChecks(list)
	ctx, cancel := context.WithCancel(ctx)
	c.cancel = cancel
	for _, s := range specs {
		c.wg.Add(1)
		go func() {
			defer c.wg.Done()
			c.loop(ctx, s)
		}()
	}
}

// Stop stops all checks and waits for them.
func (c *Checker) Stop() {
	c.mu.Lock()
	if c.cancel != nil {
		c.cancel()
		c.cancel = nil
	}
	c.mu.Unlock()
	c.wg.Wait()
}

func (c *Checker) loop(ctx context.Context, s agent.CheckConfig) {
	prober, perr := NewProber(s)
	t := time.NewTicker(s.Interval)
	defer t.Stop()
	for {
		pctx, cancel := context.WithTimeout(ctx, s.Timeout)
		start := time.Now()
		var res Result
		err := perr
		if err == nil {
			res, err = prober.Probe(pctx)
		}
		lat := time.Since(start)
		cancel()
		if ctx.Err() != nil {
			return
		}
		c.state.metrics.probe(s.Name, err == nil)
		c.state.updateCheck(s.Name, func(st *CheckStatus) { record(st, s, res, err, lat, start) })
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

// record applies rise/fall: the first result sets the state directly (no
// reason to keep a fresh daemon pending for rise*interval), later ones need
// Rise consecutive successes to go up and Fall consecutive failures to go down.
func record(st *CheckStatus, s agent.CheckConfig, res Result, err error, lat time.Duration, at time.Time) {
	st.LastLatency, st.LastProbe = lat, at
	st.Warning, st.Weight = res.Warning, res.Weight
	if err == nil {
		st.LastError = ""
		st.Successes++
		st.Failures = 0
	} else {
		st.LastError = describe(err, s.Timeout)
		st.Failures++
		st.Successes = 0
	}
	switch {
	case st.Pending:
		st.Pending = false
		st.Up = err == nil
	case !st.Up && st.Successes >= s.Rise:
		st.Up = true
	case st.Up && st.Failures >= s.Fall:
		st.Up = false
	}
}

// describe turns a probe error into a short reason for /healthz, e.g.
// "connection refused" rather than "dial tcp 127.0.0.1:8080: connect: connection refused".
func describe(err error, timeout time.Duration) string {
	var pe *probeError
	if errors.As(err, &pe) {
		return pe.Error()
	}
	if errors.Is(err, context.DeadlineExceeded) || errors.Is(err, syscall.ETIMEDOUT) {
		return fmt.Sprintf("timeout after %s", timeout)
	}
	var ne net.Error
	if errors.As(err, &ne) && ne.Timeout() {
		return fmt.Sprintf("timeout after %s", timeout)
	}
	var errno syscall.Errno
	if errors.As(err, &errno) {
		return errno.Error()
	}
	return err.Error()
}
