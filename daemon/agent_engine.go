package daemon

import (
	"fmt"
	"time"

	"github.com/dsr-agent/dsr-agent/agent"
	"github.com/dsr-agent/dsr-agent/health"
)

// agentEngine is the production Engine: the core's Host, bound to the network
// namespace the daemon started in.
type agentEngine struct {
	host *agent.Host
}

// NewAgentEngine opens the host with stateDir for the daemon.
func NewAgentEngine(stateDir string) (Engine, error) {
	h, err := agent.OpenHost(stateDir)
	if err != nil {
		return nil, fmt.Errorf("open host: %w", err)
	}
	return &agentEngine{host: h}, nil
}

func (e *agentEngine) Close() { e.host.Close() }

func (e *agentEngine) Load(path string) (*Desired, error) {
	cfg, err := agent.LoadConfig(path)
	if err != nil {
		return nil, err
	}
	want, err := e.host.Resolve(cfg)
	if err != nil {
		return nil, err
	}
	d := &Desired{Mode: string(cfg.Mode), VIPs: len(cfg.VIPs), Config: cfg}
	// Watch exactly the sysctls the policy sets (all, default and each
	// LB-facing NIC in loopback mode; none where a mode relies on nftables
	// alone or there are no VIPs): a reset of one of them is drift; a change
	// to any other would only wake a no-op pass.
	for _, s := range want.Sysctls {
		d.WatchSysctls = append(d.WatchSysctls, s.Path)
	}
	if h := want.Health; h != nil {
		hs := &HealthSettings{Listen: h.Listen, Allowed: h.AllowedSources}
		if h.AgentCheck != nil {
			hs.AgentListen = h.AgentCheck.Listen
		}
		for _, c := range h.Checks {
			hs.Checks = append(hs.Checks, health.CheckSpec{
				Name: c.Name, TCP: c.TCP, HTTP: c.HTTP, ExpectStatus: c.ExpectStatus,
				Interval: c.Interval, Timeout: c.Timeout, Rise: c.Rise, Fall: c.Fall,
			})
		}
		d.Health = hs
	}
	return d, nil
}

func (e *agentEngine) Apply(d *Desired) ([]Change, error) {
	plan, err := e.host.Apply(d.Config.(*agent.Config))
	var out []Change
	if plan != nil {
		for _, c := range plan.Changes {
			out = append(out, Change{Kind: string(c.Kind), Subject: c.Subject, Command: c.Command})
		}
	}
	return out, err
}

func (e *agentEngine) Observe(d *Desired) (health.Snapshot, error) {
	rep, err := e.host.Status(d.Config.(*agent.Config))
	if err != nil {
		return health.Snapshot{}, err
	}
	s := health.Snapshot{Time: time.Now(), Mode: d.Mode, InSync: rep.InSync, Suppression: rep.Suppression}
	for _, v := range rep.VIPs {
		s.VIPs = append(s.VIPs, health.VIPStatus{Address: v.Address, Present: v.Present, Link: v.Link})
	}
	for _, df := range rep.Differences {
		s.Differences = append(s.Differences, health.Difference{Kind: df.Kind, Subject: df.Subject, Detail: df.Detail})
	}
	return s, nil
}
