package daemon

import (
	"context"
	"reflect"

	"github.com/dsr-agent/dsr-agent/agent"
	"github.com/dsr-agent/dsr-agent/health"
)

// configureHealth starts, stops or reconfigures the health endpoints and the
// checks to match d.want; prev is the previous health section (nil at start).
func (d *daemon) configureHealth(ctx context.Context, prev *agent.HealthConfig) {
	h := d.want.Health
	if h == nil {
		d.stopHealth()
		d.checker.Set(ctx, nil)
		d.configureWeight(ctx)
		return
	}
	d.state.SetListenerGrace(h.ListenerGrace)
	// Restarting unchanged checks would make them pending and flap /healthz.
	if prev == nil || !reflect.DeepEqual(prev.Checks, h.Checks) {
		d.checker.Set(ctx, h.Checks)
	}
	if d.httpSrv == nil {
		d.httpSrv = health.NewServer(d.state, h.AllowedSources, d.log)
	}
	d.httpSrv.SetAllowed(h.AllowedSources)
	if d.httpAddr != h.Listen {
		if d.httpCancel != nil {
			d.httpCancel()
		}
		hctx, cancel := context.WithCancel(ctx)
		d.httpCancel, d.httpAddr = cancel, h.Listen
		srv := d.httpSrv
		go func() {
			if err := srv.Run(hctx, h.Listen); err != nil {
				d.log.Error("health server stopped", "err", err)
			}
		}()
	}
	agentListen := ""
	if h.AgentCheck != nil {
		agentListen = h.AgentCheck.Listen
	}
	if d.agentAddr != agentListen {
		if d.agentCancel != nil {
			d.agentCancel()
			d.agentCancel = nil
		}
		d.agentAddr = agentListen
		if agentListen != "" {
			if d.agentSrv == nil {
				d.agentSrv = health.NewAgentServer(d.state, h.AllowedSources, d.log)
			}
			actx, cancel := context.WithCancel(ctx)
			d.agentCancel = cancel
			srv := d.agentSrv
			go func() { _ = srv.Run(actx, agentListen) }()
		}
	}
	if d.agentSrv != nil {
		d.agentSrv.SetAllowed(h.AllowedSources)
	}
	d.configureWeight(ctx)
}

func (d *daemon) stopHealth() {
	if d.httpCancel != nil {
		d.httpCancel()
		d.httpCancel, d.httpAddr = nil, ""
	}
	if d.agentCancel != nil {
		d.agentCancel()
		d.agentCancel, d.agentAddr = nil, ""
	}
}
