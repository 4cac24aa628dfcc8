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
	"encoding/json"
	"fmt"
	"sort"
	"strconv"
	"strings"
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

// Verdict is the precomputed answer every endpoint serves.
type Verdict struct {
	Healthy bool
	// Reasons lists why the host is unhealthy, most important first.
	Reasons []string
	// Body is the /healthz body: "up" or the reasons joined by "; ".
	Body []byte
	// Agent is the HAProxy agent-check reply line, newline included.
	Agent []byte
}

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

// weightWord is the weight part of the agent answer ("75%"), empty when
// the weight never was on.
func (s *State) weightWord() string {
	switch {
	case s.weight != nil:
		return strconv.Itoa(s.weight.Percent) + "%"
	case s.weightWasOn:
		return "100%"
	}
	return ""
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

func (s *State) recompute() {
	s.mu.Lock()
	s.recomputeLocked()
	s.mu.Unlock()
}

// recomputeLocked derives the verdict. Order of reasons: operator intent
// first, then the host's own setup, then services, so the first reason is the
// one to act on.
func (s *State) recomputeLocked() {
	var reasons []string
	switch s.drain {
	case Drained:
		reasons = append(reasons, "draining")
	case Maintenance:
		reasons = append(reasons, "maintenance")
	}
	setupBroken := false
	switch {
	case s.snap == nil:
		reasons = append(reasons, "starting: first apply not done")
		setupBroken = true
	case s.snap.Error != "" && len(s.snap.VIPs) == 0:
		// The host could not even be observed: nothing says the setup holds.
		reasons = append(reasons, "host check failed: "+firstLine(s.snap.Error))
		setupBroken = true
	default:
		if !s.snap.Suppression {
			reasons = append(reasons, "arp suppression missing")
			setupBroken = true
		}
		for _, v := range s.snap.VIPs {
			if v.Present {
				continue
			}
			setupBroken = true
			if v.Link != "" {
				reasons = append(reasons, fmt.Sprintf("vip %s missing from %s", v.Address, v.Link))
			} else {
				reasons = append(reasons, fmt.Sprintf("vip %s missing", v.Address))
			}
		}
	}
	listenerDown := false
	if s.snap != nil && !s.inListenerGrace() {
		for _, l := range s.snap.Listeners {
			if !l.Present {
				reasons = append(reasons, "no listener for "+l.Subject)
				listenerDown = true
			}
		}
	}
	checkDown := false
	for _, name := range s.checkOrder {
		c := s.checks[name]
		switch {
		case c.Pending:
			reasons = append(reasons, fmt.Sprintf("check %s: pending", name))
			checkDown = true
		case !c.Up:
			msg := c.LastError
			if msg == "" {
				msg = "down"
			}
			reasons = append(reasons, fmt.Sprintf("check %s: %s", name, msg))
			checkDown = true
		}
	}
	v := &Verdict{Healthy: len(reasons) == 0, Reasons: reasons}
	if v.Healthy {
		v.Body = []byte("up\n")
	} else {
		v.Body = []byte(strings.Join(reasons, "; ") + "\n")
	}
	v.Agent = []byte(agentReply(s.drain, setupBroken || listenerDown || checkDown, s.weightWord()) + "\n")
	s.verdict.Store(v)
	s.metrics.setHealthy(v.Healthy)
}

func firstLine(s string) string {
	s = strings.TrimSpace(s)
	if i := strings.IndexByte(s, '\n'); i >= 0 {
		// Multi-line config errors: keep the line that names the field.
		rest := strings.TrimSpace(s[i+1:])
		if j := strings.IndexByte(rest, '\n'); j >= 0 {
			rest = rest[:j]
		}
		return strings.TrimSpace(s[:i]) + " " + rest
	}
	return s
}

// agentReply follows HAProxy's agent-check protocol: one operational word
// (up/down) and one administrative word (ready/drain/maint). "ready" is sent
// whenever the operator has not drained, so a DRAIN or MAINT set earlier by
// this agent is lifted when the operator undrains. The weight ("75%",
// relative to the server's configured weight) follows when there is one,
// also while down or drained: HAProxy records it either way, so the server
// comes back at the weight its load deserves. "maint" stays alone: the
// server takes nothing and its checks stop.
func agentReply(d DrainMode, down bool, weight string) string {
	op := "up"
	if down {
		op = "down"
	}
	var reply string
	switch d {
	case Drained:
		reply = op + " drain"
	case Maintenance:
		return "maint"
	default:
		reply = op + " ready"
	}
	if weight != "" {
		reply += " " + weight
	}
	return reply
}

// StatusDoc is the /status JSON document.
type StatusDoc struct {
	Healthy bool     `json:"healthy"`
	Reasons []string `json:"reasons"`
	// Warnings say what needs attention while the host stays healthy
	// ("check site: certificate … expires in 5d").
	Warnings []string      `json:"warnings,omitempty"`
	Drain    string        `json:"drain"`
	Started  time.Time     `json:"started"`
	Host     *Snapshot     `json:"host"`
	Checks   []CheckStatus `json:"checks"`
	Stopping bool          `json:"stopping,omitempty"`
	// ListenerGraceEnds is when a missing listener starts to count
	// against /healthz (absent with health.listener_grace 0).
	ListenerGraceEnds time.Time `json:"listener_grace_ends,omitzero"`
	// Weight is the agent-check weight and what it was computed from
	// (absent without health.agent_check.weight).
	Weight *weight.Status `json:"weight,omitempty"`
}

// StatusJSON renders /status from cached state.
func (s *State) StatusJSON() ([]byte, error) {
	v := s.Verdict()
	s.mu.RLock()
	doc := StatusDoc{
		Healthy: v.Healthy, Reasons: v.Reasons, Drain: s.drain.String(), Started: s.started,
		Host: s.snap, Checks: make([]CheckStatus, 0, len(s.checkOrder)), Stopping: s.stopping,
		Weight: s.weight,
	}
	if s.listenerGrace > 0 {
		doc.ListenerGraceEnds = s.started.Add(s.listenerGrace)
	}
	for _, n := range s.checkOrder {
		c := *s.checks[n]
		doc.Checks = append(doc.Checks, c)
		if c.Warning != "" {
			doc.Warnings = append(doc.Warnings, fmt.Sprintf("check %s: %s", c.Name, c.Warning))
		}
	}
	s.mu.RUnlock()
	if doc.Reasons == nil {
		doc.Reasons = []string{}
	}
	sort.SliceStable(doc.Checks, func(i, j int) bool { return doc.Checks[i].Name < doc.Checks[j].Name })
	b, err := json.MarshalIndent(doc, "", "  ")
	if err != nil {
		return nil, fmt.Errorf("encode status: %w", err)
	}
	return append(b, '\n'), nil
}

// SetStopping marks the daemon as shutting down (shown in /status only: the
// kernel state stays in place, so traffic is still served correctly).
func (s *State) SetStopping() {
	s.mu.Lock()
	s.stopping = true
	s.mu.Unlock()
}
