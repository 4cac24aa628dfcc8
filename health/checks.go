package health

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
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
		st := CheckStatus{Name: s.Name, Kind: "tcp", Target: s.TCP}
		if s.HTTP != "" {
			st.Kind, st.Target = "http", s.HTTP
		}
		list = append(list, st)
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
	probe := tcpProbe(s)
	if s.HTTP != "" {
		probe = httpProbe(s)
	}
	t := time.NewTicker(s.Interval)
	defer t.Stop()
	for {
		pctx, cancel := context.WithTimeout(ctx, s.Timeout)
		start := time.Now()
		err := probe(pctx)
		lat := time.Since(start)
		cancel()
		if ctx.Err() != nil {
			return
		}
		c.state.metrics.probe(s.Name, err == nil)
		c.state.updateCheck(s.Name, func(st *CheckStatus) { record(st, s, err, lat, start) })
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
func record(st *CheckStatus, s agent.CheckConfig, err error, lat time.Duration, at time.Time) {
	st.LastLatency, st.LastProbe = lat, at
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
	var se *statusError
	if errors.As(err, &se) {
		return se.Error()
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

type statusError struct{ got, want int }

func (e *statusError) Error() string { return fmt.Sprintf("http status %d, want %d", e.got, e.want) }

func tcpProbe(s agent.CheckConfig) func(context.Context) error {
	var d net.Dialer
	return func(ctx context.Context) error {
		conn, err := d.DialContext(ctx, "tcp", s.TCP)
		if err != nil {
			return err
		}
		return conn.Close()
	}
}

func httpProbe(s agent.CheckConfig) func(context.Context) error {
	client := &http.Client{
		// A fresh connection per probe: a kept-alive connection would hide a
		// service that stopped accepting.
		Transport: &http.Transport{DisableKeepAlives: true, Proxy: nil},
		// The status of the URL itself is what the operator configured.
		CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
	}
	return func(ctx context.Context) error {
		req, err := http.NewRequestWithContext(ctx, http.MethodGet, s.HTTP, nil)
		if err != nil {
			return err
		}
		req.Header.Set("User-Agent", "dsr-agent-check")
		resp, err := client.Do(req)
		if err != nil {
			return err
		}
		_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, 64<<10))
		resp.Body.Close()
		if resp.StatusCode != s.ExpectStatus {
			return &statusError{resp.StatusCode, s.ExpectStatus}
		}
		return nil
	}
}
