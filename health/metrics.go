package health

import (
	"strconv"
	"sync"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"

	dsragent "github.com/dsr-agent/dsr-agent"
	"github.com/dsr-agent/dsr-agent/health/weight"
)

// Metrics are dsr-agent's Prometheus metrics. Values are set when state
// changes, so a scrape reads memory only.
type Metrics struct {
	Registry *prometheus.Registry

	healthy      prometheus.Gauge
	inSync       prometheus.Gauge
	suppression  prometheus.Gauge
	vipPresent   *prometheus.GaugeVec
	listenerUp   *prometheus.GaugeVec
	checkUp      *prometheus.GaugeVec
	checkLatency *prometheus.GaugeVec
	checkProbes  *prometheus.CounterVec
	repairs      *prometheus.CounterVec
	reconciles   *prometheus.CounterVec
	reconcileDur prometheus.Histogram
	drained      *prometheus.GaugeVec
	lastSnapshot prometheus.Gauge
	connRejects  *prometheus.CounterVec
	// The weight's gauges have no series while the weight is off: a 0
	// would read as "send this server nothing".
	weightPct    *prometheus.GaugeVec
	weightSignal *prometheus.GaugeVec
	weightConns  *prometheus.GaugeVec
	weightMin    *prometheus.GaugeVec

	mu           sync.Mutex
	vipSeen      map[string]bool
	listenerSeen map[[3]string]bool
}

// NewMetrics builds a private registry (not the global default, so tests and
// several daemons in one process do not collide).
func NewMetrics() *Metrics {
	m := &Metrics{
		Registry: prometheus.NewRegistry(),
		healthy: prometheus.NewGauge(prometheus.GaugeOpts{Name: "dsr_agent_healthy",
			Help: "1 when /healthz answers 200 (setup in place, checks up, not drained)."}),
		inSync: prometheus.NewGauge(prometheus.GaugeOpts{Name: "dsr_agent_in_sync",
			Help: "1 when the last observation found the host matching the config."}),
		suppression: prometheus.NewGauge(prometheus.GaugeOpts{Name: "dsr_agent_arp_suppression",
			Help: "1 when ARP suppression for the VIPs is in force."}),
		vipPresent: prometheus.NewGaugeVec(prometheus.GaugeOpts{Name: "dsr_agent_vip_present",
			Help: "1 when the VIP (or prefix VIP) is configured as the mode requires."}, []string{"vip"}),
		listenerUp: prometheus.NewGaugeVec(prometheus.GaugeOpts{Name: "dsr_agent_listener_present",
			Help: "1 when a socket receives the VIP port's traffic (on the VIP or the wildcard; firewalld mode: the redirect's target)."}, []string{"vip", "port", "proto"}),
		checkUp: prometheus.NewGaugeVec(prometheus.GaugeOpts{Name: "dsr_agent_check_up",
			Help: "Debounced state of a service check: 1 up, 0 down or pending."}, []string{"check"}),
		checkLatency: prometheus.NewGaugeVec(prometheus.GaugeOpts{Name: "dsr_agent_check_latency_seconds",
			Help: "Duration of the last probe of a service check."}, []string{"check"}),
		checkProbes: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "dsr_agent_check_probes_total",
			Help: "Probes run per check and result."}, []string{"check", "result"}),
		repairs: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "dsr_agent_repairs_total",
			Help: "Changes the daemon made to the host after its first apply, by kind (drift repaired)."}, []string{"kind"}),
		reconciles: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "dsr_agent_reconciles_total",
			Help: "Reconcile passes by trigger and result."}, []string{"trigger", "result"}),
		reconcileDur: prometheus.NewHistogram(prometheus.HistogramOpts{Name: "dsr_agent_reconcile_duration_seconds",
			Help: "Duration of a reconcile pass (observe, diff, apply, report).", Buckets: prometheus.ExponentialBuckets(0.0001, 4, 10)}),
		drained: prometheus.NewGaugeVec(prometheus.GaugeOpts{Name: "dsr_agent_drain",
			Help: "1 for the current rotation state (in-rotation, drain, maint)."}, []string{"state"}),
		lastSnapshot: prometheus.NewGauge(prometheus.GaugeOpts{Name: "dsr_agent_last_observation_timestamp_seconds",
			Help: "Unix time of the last observation of the host."}),
		connRejects: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "dsr_agent_connections_rejected_total",
			Help: "Connections reset by the listener guard, by listener (http, agent) and reason (source: outside allowed_sources, at accept; limit: the connection cap was reached and no connection could give way, at accept; evicted: a connection waiting without a request in progress, reset at the cap to admit a new one)."}, []string{"listener", "reason"}),
		weightPct: prometheus.NewGaugeVec(prometheus.GaugeOpts{Name: "dsr_agent_weight_percent",
			Help: "The weight the HAProxy agent-check answers, in percent of the server's configured weight (absent without health.agent_check.weight)."}, nil),
		weightSignal: prometheus.NewGaugeVec(prometheus.GaugeOpts{Name: "dsr_agent_weight_signal_percent",
			Help: "Headroom of each load signal in the last sample (100 idle, 0 saturated); the weight follows the smallest, smoothed."}, []string{"signal"}),
		weightConns: prometheus.NewGaugeVec(prometheus.GaugeOpts{Name: "dsr_agent_weight_connections",
			Help: "Established TCP connections to the VIPs in the last sample (the weight's connections signal)."}, nil),
		weightMin: prometheus.NewGaugeVec(prometheus.GaugeOpts{Name: "dsr_agent_weight_min_percent",
			Help: "The floor the weight is held to (health.agent_check.weight.min): a weight equal to it is pinned there."}, nil),
		vipSeen:      map[string]bool{},
		listenerSeen: map[[3]string]bool{},
	}
	// Which build answers, for dashboards and rollouts: a constant 1.
	buildInfo := prometheus.NewGauge(prometheus.GaugeOpts{Name: "dsr_agent_build_info",
		Help:        "The running build: version (the VERSION file) and commit; always 1.",
		ConstLabels: prometheus.Labels{"version": dsragent.Version(), "commit": dsragent.Commit()}})
	buildInfo.Set(1)
	m.Registry.MustRegister(m.healthy, m.inSync, m.suppression, m.vipPresent, m.listenerUp, m.checkUp, m.checkLatency,
		m.checkProbes, m.repairs, m.reconciles, m.reconcileDur, m.drained, m.lastSnapshot, m.connRejects,
		m.weightPct, m.weightSignal, m.weightConns, m.weightMin, buildInfo,
		collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	m.setDrain(InRotation)
	return m
}

func b2f(b bool) float64 {
	if b {
		return 1
	}
	return 0
}

func (m *Metrics) setHealthy(h bool) { m.healthy.Set(b2f(h)) }

func (m *Metrics) setSnapshot(s *Snapshot) {
	m.inSync.Set(b2f(s.InSync))
	m.suppression.Set(b2f(s.Suppression))
	m.lastSnapshot.Set(float64(s.Time.UnixNano()) / 1e9)
	m.mu.Lock()
	defer m.mu.Unlock()
	now := make(map[string]bool, len(s.VIPs)+len(s.Prefixes))
	for _, v := range s.VIPs {
		now[v.Address] = true
		m.vipPresent.WithLabelValues(v.Address).Set(b2f(v.Present))
	}
	// A prefix is a VIP of the same series, labelled by the prefix as its
	// listeners are: the VIP alerts and dashboards cover it unchanged.
	for _, pf := range s.Prefixes {
		now[pf.Prefix] = true
		m.vipPresent.WithLabelValues(pf.Prefix).Set(b2f(pf.Present))
	}
	// A VIP dropped from the config by a reload stops being reported.
	for a := range m.vipSeen {
		if !now[a] {
			m.vipPresent.DeleteLabelValues(a)
		}
	}
	m.vipSeen = now
	seen := make(map[[3]string]bool, len(s.Listeners))
	for _, l := range s.Listeners {
		k := [3]string{l.VIP, strconv.Itoa(int(l.Port)), l.Protocol}
		seen[k] = true
		m.listenerUp.WithLabelValues(k[:]...).Set(b2f(l.Present))
	}
	for k := range m.listenerSeen {
		if !seen[k] {
			m.listenerUp.DeleteLabelValues(k[:]...)
		}
	}
	m.listenerSeen = seen
}

func (m *Metrics) setWeight(w *weight.Status) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if w == nil {
		m.weightPct.Reset()
		m.weightConns.Reset()
		m.weightSignal.Reset()
		m.weightMin.Reset()
		return
	}
	m.weightPct.WithLabelValues().Set(float64(w.Percent))
	m.weightMin.WithLabelValues().Set(float64(w.Min))
	for name, v := range w.Signals {
		m.weightSignal.WithLabelValues(name).Set(v)
	}
	// A signal without a value this sample (a failed read, an exec check
	// without a weight) has no series rather than a stale one.
	for _, name := range []string{weight.SignalCPU, weight.SignalLoad, weight.SignalConnections, weight.SignalExec} {
		if _, ok := w.Signals[name]; !ok {
			m.weightSignal.DeleteLabelValues(name)
		}
	}
	if w.Connections != nil {
		m.weightConns.WithLabelValues().Set(float64(*w.Connections))
	} else {
		m.weightConns.Reset()
	}
}

func (m *Metrics) setDrain(d DrainMode) {
	for _, st := range []DrainMode{InRotation, Drained, Maintenance} {
		m.drained.WithLabelValues(st.String()).Set(b2f(st == d))
	}
}

func (m *Metrics) resetChecks(list []CheckStatus) {
	m.checkUp.Reset()
	m.checkLatency.Reset()
	for _, c := range list {
		m.checkUp.WithLabelValues(c.Name).Set(0)
	}
}

func (m *Metrics) setCheck(c *CheckStatus) {
	m.checkUp.WithLabelValues(c.Name).Set(b2f(c.Up && !c.Pending))
	m.checkLatency.WithLabelValues(c.Name).Set(c.LastLatency.Seconds())
}

func (m *Metrics) probe(name string, ok bool) {
	r := "success"
	if !ok {
		r = "failure"
	}
	m.checkProbes.WithLabelValues(name, r).Inc()
}

// Repair counts one change made to repair drift.
func (m *Metrics) Repair(kind string) { m.repairs.WithLabelValues(kind).Inc() }

// Reconcile records one reconcile pass.
func (m *Metrics) Reconcile(trigger string, ok bool, seconds float64) {
	r := "ok"
	if !ok {
		r = "error"
	}
	m.reconciles.WithLabelValues(trigger, r).Inc()
	m.reconcileDur.Observe(seconds)
}

// connRejected returns the increment of one rejection counter, resolved once
// so that a flood costs an atomic add per connection.
func (m *Metrics) connRejected(listener, reason string) func() {
	return m.connRejects.WithLabelValues(listener, reason).Inc
}
