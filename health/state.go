// Package health is dsr-agent's view of whether this real server should get
// traffic: the cached result of the last reconcile (VIPs, ARP suppression),
// background service checks and the operator's drain, served over HTTP
// (/healthz, /status, /metrics) and HAProxy's agent-check protocol.
//
// Everything a request sees was computed before the request arrived: the
// servers never dump kernel state or probe a service on behalf of a client,
// so a flood of health requests cannot load the host or the service.
package health

import (
	"sync"
	"sync/atomic"
	"time"

	"github.com/dsr-agent/dsr-agent/agent"
	"github.com/dsr-agent/dsr-agent/health/weight"
)

// Snapshot is the daemon's last observation of the host's DSR setup: the
// core's own status report (one Plan, several views), when it was taken, and
// the last reconcile failure (empty when the last one worked).
type Snapshot struct {
	agent.Report
	Time  time.Time `json:"time"`
	Error string    `json:"error,omitempty"`
}

// DrainMode is the operator's choice of rotation state.
type DrainMode string

const (
	InRotation  DrainMode = ""
	Drained     DrainMode = "drain"
	Maintenance DrainMode = "maint"
)

// CheckStatus is the state of one background service check.
type CheckStatus struct {
	Name string `json:"name"`
	Kind string `json:"kind"` // tcp, http, tls, dns, exec or udp
	// Target is the address or URL probed.
	Target string `json:"target"`
	// Up is the debounced state (rise/fall applied); Pending until the first probe.
	Up      bool `json:"up"`
	Pending bool `json:"pending"`
	// LastError is the last probe's failure, empty when it succeeded.
	LastError string `json:"last_error,omitempty"`
	// Warning is the last probe's warning: it succeeded, but something needs
	// attention soon (a tls check's certificate about to expire).
	Warning string `json:"warning,omitempty"`
	// Weight is the dynamic weight of an exec check's last probe (keepalived
	// MISC_CHECK: exit code 2-255 means up with weight code-2); nil otherwise.
	Weight      *int          `json:"weight,omitempty"`
	LastLatency time.Duration `json:"last_latency_ns"`
	LastProbe   time.Time     `json:"last_probe"`
	// Successes and Failures count consecutive probe results.
	Successes int `json:"consecutive_successes"`
	Failures  int `json:"consecutive_failures"`
}

// State aggregates everything health depends on. It is safe for concurrent
// use; writers recompute the Verdict so readers only load a pointer.
type State struct {
	mu         sync.RWMutex
	snap       *Snapshot
	checks     map[string]*CheckStatus
	checkOrder []string
	drain      DrainMode
	started    time.Time
	stopping   bool
	// listenerGrace keeps a missing listener out of the verdict for this
	// long after start (services may start after dsr-agent at boot);
	// graceTimer recomputes the verdict when it ends.
	listenerGrace time.Duration
	graceTimer    *time.Timer
	// weight is the agent-check weight's last computation, nil when the
	// config has none. weightWasOn remembers that a weight was answered:
	// HAProxy keeps the last weight it was told, so once the weight is
	// turned off the answer says 100% to give the director its configured
	// weight back.
	weight      *weight.Status
	weightWasOn bool

	verdict atomic.Pointer[Verdict]
	metrics *Metrics
}

// NewState returns a State that reports "starting" until the first snapshot.
func NewState() *State {
	s := &State{checks: map[string]*CheckStatus{}, started: time.Now(), metrics: NewMetrics()}
	s.recompute()
	return s
}

// Metrics returns the Prometheus metrics fed by this state.
func (s *State) Metrics() *Metrics { return s.metrics }

// Verdict returns the current answer; it never blocks on writers.
func (s *State) Verdict() *Verdict { return s.verdict.Load() }

// SetSnapshot publishes a new observation of the host.
func (s *State) SetSnapshot(snap Snapshot) {
	s.mu.Lock()
	s.snap = &snap
	s.recomputeLocked()
	s.mu.Unlock()
	s.metrics.setSnapshot(&snap)
}

// SetDrain records the operator's rotation choice.
func (s *State) SetDrain(m DrainMode) {
	s.mu.Lock()
	s.drain = m
	s.recomputeLocked()
	s.mu.Unlock()
	s.metrics.setDrain(m)
}

// SetListenerGrace sets how long after the start a VIP port without a
// listener is not a reason (0: at once). The verdict is recomputed when the
// grace period ends, so a still-missing listener turns /healthz 503 then.
func (s *State) SetListenerGrace(d time.Duration) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.listenerGrace = d
	if s.graceTimer != nil {
		s.graceTimer.Stop()
		s.graceTimer = nil
	}
	if left := time.Until(s.started.Add(d)); left > 0 {
		s.graceTimer = time.AfterFunc(left, s.recompute)
	}
	s.recomputeLocked()
}

// SetWeight publishes the agent-check weight (the sampler loop calls it
// every sample); nil turns the weight off. The verdict is recomputed only
// when the answered percentage changes.
func (s *State) SetWeight(w *weight.Status) {
	s.mu.Lock()
	before := s.weightWord()
	s.weight = w
	if w != nil {
		s.weightWasOn = true
	}
	if s.weightWord() != before {
		s.recomputeLocked()
	}
	s.mu.Unlock()
	s.metrics.setWeight(w)
}

// Weight returns the last published weight (nil: off).
func (s *State) Weight() *weight.Status {
	s.mu.RLock()
	defer s.mu.RUnlock()
	return s.weight
}

// CheckWeight returns the named check's dynamic weight (exec checks:
// keepalived MISC_CHECK's exit code-2) from its last probe; ok is false
// while it has none: pending, down, or its last probe failed or exited 0.
func (s *State) CheckWeight(name string) (w int, ok bool) {
	s.mu.RLock()
	defer s.mu.RUnlock()
	c := s.checks[name]
	if c == nil || c.Pending || !c.Up || c.Weight == nil {
		return 0, false
	}
	return *c.Weight, true
}

// inListenerGrace reports whether missing listeners are still forgiven.
func (s *State) inListenerGrace() bool { return time.Since(s.started) < s.listenerGrace }

// Drain returns the current rotation choice.
func (s *State) Drain() DrainMode {
	s.mu.RLock()
	defer s.mu.RUnlock()
	return s.drain
}

// resetChecks replaces the set of checks (config load or reload); all start
// pending.
func (s *State) resetChecks(list []CheckStatus) {
	s.mu.Lock()
	s.checks = make(map[string]*CheckStatus, len(list))
	s.checkOrder = s.checkOrder[:0]
	for i := range list {
		c := list[i]
		c.Pending = true
		s.checks[c.Name] = &c
		s.checkOrder = append(s.checkOrder, c.Name)
	}
	s.recomputeLocked()
	s.mu.Unlock()
	s.metrics.resetChecks(list)
}

// updateCheck applies fn to the named check's status and recomputes the
// verdict when the debounced state changed.
func (s *State) updateCheck(name string, fn func(*CheckStatus)) {
	s.mu.Lock()
	c, ok := s.checks[name]
	if !ok { // removed by a reload while the probe ran
		s.mu.Unlock()
		return
	}
	before := *c
	fn(c)
	after := *c
	if before.Up != after.Up || before.Pending != after.Pending || before.LastError != after.LastError || before.Warning != after.Warning {
		s.recomputeLocked()
	}
	s.mu.Unlock()
	s.metrics.setCheck(&after)
}

// SetStopping marks the daemon as shutting down (shown in /status only: the
// kernel state stays in place, so traffic is still served correctly).
func (s *State) SetStopping() {
	s.mu.Lock()
	s.stopping = true
	s.mu.Unlock()
}
