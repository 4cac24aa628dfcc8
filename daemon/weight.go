package daemon

import (
	"context"
	"maps"
	"net/netip"
	"reflect"
	"slices"

	"github.com/dsr-agent/dsr-agent/agent"
	"github.com/dsr-agent/dsr-agent/health/weight"
)

// weightLoop is the running agent-check weight sampler and what it was
// started with: a reload restarts it only when that changes, so the moving
// average is not thrown away by an unrelated edit.
type weightLoop struct {
	key    weightKey
	cancel context.CancelFunc
	done   chan struct{}
}

type weightKey struct {
	cfg   agent.WeightConfig
	addrs []netip.Prefix
	ports []uint16
}

// configureWeight starts, restarts or stops the weight sampler to match
// d.want. It samples every agent.WeightSampleInterval and publishes to the
// health state; the agent-check serves the cached answer.
func (d *daemon) configureWeight(ctx context.Context) {
	var wc *agent.WeightConfig
	if h := d.want.Health; h != nil && h.AgentCheck != nil {
		wc = h.AgentCheck.Weight
	}
	if wc == nil {
		if d.weight != nil {
			d.stopWeight()
			d.state.SetWeight(nil)
			d.log.Info("agent-check weight off")
		}
		return
	}
	addrs, ports := d.want.ConnectionTargets()
	key := weightKey{cfg: *wc, addrs: addrs, ports: ports}
	if d.weight != nil && reflect.DeepEqual(d.weight.key, key) {
		return
	}
	// Until the new sampler's first result the last published weight
	// stays: a restart must not blip the director's weight.
	d.stopWeight()
	wctx, cancel := context.WithCancel(ctx)
	loop := &weightLoop{key: key, cancel: cancel, done: make(chan struct{})}
	d.weight = loop
	d.log.Info("agent-check weight on", "cpu", wc.CPU, "load", wc.Load, "connections", wc.Connections,
		"exec", wc.Exec, "smoothing", wc.Smoothing, "min", wc.Min, "destinations", len(addrs), "ports", ports)
	go func() {
		defer close(loop.done)
		d.runWeight(wctx, key)
	}()
}

func (d *daemon) runWeight(ctx context.Context, key weightKey) {
	wc := key.cfg
	src := weight.Sources{}
	if wc.Connections > 0 {
		conns, err := agent.OpenConnectionCounter(key.addrs, key.ports)
		if err != nil {
			src.Connections = func() (int, error) { return 0, err }
		} else {
			defer conns.Close()
			src.Connections = conns.Count
		}
	}
	if wc.Exec != "" {
		src.Exec = func() (int, bool) { return d.state.CheckWeight(wc.Exec) }
	}
	var lastErrs map[string]string
	weight.NewSampler(wc, src).Run(ctx, agent.WeightSampleInterval, func(st weight.Status) {
		d.state.SetWeight(&st)
		// A signal that cannot be read is logged when that changes, not
		// every second; /status shows the current errors.
		if !maps.Equal(st.Errors, lastErrs) {
			for _, name := range slices.Sorted(maps.Keys(st.Errors)) {
				d.log.Warn("agent-check weight: signal unavailable; the others decide", "signal", name, "err", st.Errors[name])
			}
			if len(st.Errors) == 0 {
				d.log.Info("agent-check weight: all signals readable again")
			}
			lastErrs = st.Errors
		}
	})
}

// stopWeight stops the sampler and waits for it, so a restarted one never
// publishes alongside the old one.
func (d *daemon) stopWeight() {
	if d.weight == nil {
		return
	}
	d.weight.cancel()
	<-d.weight.done
	d.weight = nil
}
