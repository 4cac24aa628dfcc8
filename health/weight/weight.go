// Package weight computes the HAProxy agent-check weight ("up 75%") from
// the host's load: each enabled signal (CPU idle share, load average per
// CPU, established connections to the VIPs, an exec check's dynamic weight)
// gives a headroom in percent, the smallest decides, and an exponential
// moving average keeps a one-second spike from swinging the director.
//
// The arithmetic is pure (Headroom, Smoother, Final); the samplers read
// /proc and /sys under a root directory so tests can fake them; the
// connection count and the exec weight come in as functions, so this
// package knows nothing of sockets or checks.
package weight

import (
	"math"
	"time"
)

// Signal names, as they appear in /status and in the metrics' labels.
const (
	SignalCPU         = "cpu"
	SignalLoad        = "load"
	SignalConnections = "connections"
	SignalExec        = "exec"
)

// Status is one computation of the weight: what the agent-check answers and
// what it was made of.
type Status struct {
	// Percent is the answer: the smoothed weight rounded, never below the
	// configured min.
	Percent  int     `json:"percent"`
	Min      int     `json:"min"`      // the configured floor (weight.min)
	Raw      float64 `json:"raw"`      // this sample: the smallest headroom
	Smoothed float64 `json:"smoothed"` // the moving average of Raw
	// Signals is each signal's headroom (0..100) in this sample; a signal
	// without a value this time (an exec check without a weight, a failed
	// read) is absent.
	Signals map[string]float64 `json:"signals"`
	// Connections is the number of established connections counted (when
	// the connections signal is on and the count worked).
	Connections *int `json:"connections,omitempty"`
	// Errors says why a signal has no value (a read that failed).
	Errors map[string]string `json:"errors,omitempty"`
	Time   time.Time         `json:"time"`
}

// Headroom is 100*(1-used/capacity) clamped to 0..100: 100 idle, 0 at or
// beyond capacity.
func Headroom(used, capacity float64) float64 {
	if capacity <= 0 {
		return 0
	}
	return clamp(100 * (1 - used/capacity))
}

func clamp(v float64) float64 {
	switch {
	case math.IsNaN(v), v < 0:
		return 0
	case v > 100:
		return 100
	}
	return v
}

// Raw combines the signals: the most loaded resource decides. With no
// signal at all (every read failed, or the exec check has no weight yet)
// it is 100: nothing says the host is loaded, so the director keeps the
// weight it was configured with.
func Raw(signals map[string]float64) float64 {
	raw := 100.0
	for _, v := range signals {
		raw = min(raw, clamp(v))
	}
	return raw
}

// Smoother is an exponential moving average with time constant Tau, for
// samples at irregular intervals: alpha = 1-exp(-dt/Tau), so after Tau the
// average has moved 63% of the way to a new level, after 3*Tau 95%,
// whatever the sampling rate. Tau 0 passes samples through.
type Smoother struct {
	Tau    time.Duration
	value  float64
	primed bool
}

// Update adds a sample taken dt after the previous one and returns the
// average. The first sample is taken as is: there is no history to average
// with, and starting from 0 or 100 would be a made-up load.
func (s *Smoother) Update(x float64, dt time.Duration) float64 {
	if !s.primed || s.Tau <= 0 {
		s.value, s.primed = x, true
		return x
	}
	if dt <= 0 {
		return s.value
	}
	alpha := 1 - math.Exp(-float64(dt)/float64(s.Tau))
	s.value += alpha * (x - s.value)
	return s.value
}

// Final is the weight answered: the smoothed value rounded, within
// floor..100. The floor (default 1) keeps a busy server from being sent 0%,
// which HAProxy treats as DRAIN: being busy is not being out of service.
func Final(smoothed float64, floor int) int {
	return max(floor, min(100, int(math.Round(clamp(smoothed)))))
}
