package weight

import (
	"context"
	"time"

	"github.com/dsr-agent/dsr-agent/agent"
)

// Sources are the signals that are not /proc files; a nil function is a
// signal that is off (or unavailable).
type Sources struct {
	Proc Proc
	// Connections counts the established TCP connections to the VIPs.
	Connections func() (int, error)
	// Exec returns the exec check's last dynamic weight (exit code-2); ok
	// is false while it has none (pending, its last probe failed or exited
	// 0 without a weight).
	Exec func() (w int, ok bool)
}

// Sampler turns readings into weights. It is not safe for concurrent use:
// one loop owns it.
type Sampler struct {
	cfg     agent.WeightConfig
	src     Sources
	smooth  Smoother
	prevCPU CPUTimes
	haveCPU bool
	last    time.Time
}

// NewSampler returns a sampler for cfg.
func NewSampler(cfg agent.WeightConfig, src Sources) *Sampler {
	return &Sampler{cfg: cfg, src: src, smooth: Smoother{Tau: cfg.Smoothing}}
}

// Prime takes the first CPU reading: the idle share needs two.
func (s *Sampler) Prime() {
	if !s.cfg.CPU {
		return
	}
	if t, err := s.src.Proc.CPU(); err == nil {
		s.prevCPU, s.haveCPU = t, true
	}
}

// Sample reads every enabled signal once and returns the new weight; now is
// the time of the reading (the moving average uses the real interval, so a
// late tick does not distort it).
func (s *Sampler) Sample(now time.Time) Status {
	st := Status{Signals: map[string]float64{}, Time: now, Min: s.cfg.Min}
	fail := func(signal string, err error) {
		if st.Errors == nil {
			st.Errors = map[string]string{}
		}
		st.Errors[signal] = err.Error()
	}
	if s.cfg.CPU {
		switch t, err := s.src.Proc.CPU(); {
		case err != nil:
			fail(SignalCPU, err)
		default:
			if idle, ok := IdleShare(s.prevCPU, t); ok && s.haveCPU {
				st.Signals[SignalCPU] = idle
			}
			s.prevCPU, s.haveCPU = t, true
		}
	}
	if s.cfg.Load {
		load, err := s.src.Proc.LoadAvg()
		var ncpu int
		if err == nil {
			ncpu, err = s.src.Proc.OnlineCPUs()
		}
		if err != nil {
			fail(SignalLoad, err)
		} else {
			st.Signals[SignalLoad] = Headroom(load, float64(ncpu))
		}
	}
	if s.cfg.Connections > 0 && s.src.Connections != nil {
		n, err := s.src.Connections()
		if err != nil {
			fail(SignalConnections, err)
		} else {
			st.Connections = &n
			st.Signals[SignalConnections] = Headroom(float64(n), float64(s.cfg.Connections))
		}
	}
	if s.cfg.Exec != "" && s.src.Exec != nil {
		// MISC_CHECK exit codes reach 253: above 100 is "no constraint".
		if w, ok := s.src.Exec(); ok {
			st.Signals[SignalExec] = clamp(float64(w))
		}
	}
	st.Raw = Raw(st.Signals)
	if len(st.Signals) == 0 && s.smooth.primed {
		// No signal this time (an unreadable sample, a CPU counter that
		// went backwards): keep the average rather than pull it toward
		// the 100 that "no constraint" means.
		st.Smoothed = s.smooth.value
		st.Percent = Final(st.Smoothed, s.cfg.Min)
		return st
	}
	var dt time.Duration
	if !s.last.IsZero() {
		dt = now.Sub(s.last)
	}
	s.last = now
	st.Smoothed = s.smooth.Update(st.Raw, dt)
	st.Percent = Final(st.Smoothed, s.cfg.Min)
	return st
}

// Run primes the sampler, then samples every interval and publishes each
// result until ctx is done. The first result comes one interval after the
// start (the CPU idle share needs that long).
func (s *Sampler) Run(ctx context.Context, interval time.Duration, publish func(Status)) {
	s.Prime()
	t := time.NewTicker(interval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case now := <-t.C:
			publish(s.Sample(now))
		}
	}
}
