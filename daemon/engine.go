// Package daemon is `dsr-agent run`: it applies the config, then keeps the
// host converged (netlink and nftables subscriptions, periodic resync), runs
// health checks and serves health, talks to systemd (READY, WATCHDOG,
// RELOADING, STOPPING) and answers drain/undrain on a root-only unix socket.
//
// Stopping the daemon leaves everything on the host in place: a restart or a
// package upgrade must not blip traffic. `dsr-agent remove` is the teardown.
package daemon

import (
	"net/netip"

	"github.com/dsr-agent/dsr-agent/arp"
	"github.com/dsr-agent/dsr-agent/health"
)

// Engine is what the daemon needs from the core: load a config, converge the
// host to it, observe it. The production engine wraps agent.Host; tests can
// substitute their own.
type Engine interface {
	// Load parses the config file and validates it against the host. Errors
	// for a bad config wrap agent.ErrInvalidConfig.
	Load(path string) (*Desired, error)
	// Apply converges the host and returns the changes it made.
	Apply(*Desired) ([]Change, error)
	// Observe compares host and config without changing anything.
	Observe(*Desired) (health.Snapshot, error)
	Close()
}

// Desired is a loaded, validated config as the daemon sees it.
type Desired struct {
	Mode string
	VIPs int
	// Health is nil when the config has no health section: no endpoints run.
	Health *HealthSettings
	// WatchSysctls are the sysctls the daemon polls between passes (nothing
	// notifies their reset); empty when the mode sets none or there is
	// nothing to protect.
	WatchSysctls []arp.Path
	// Config is the engine's own representation.
	Config any
}

// HealthSettings is the health section with defaults resolved.
type HealthSettings struct {
	Listen      string
	Allowed     []netip.Prefix
	Checks      []health.CheckSpec
	AgentListen string // empty: agent-check off
}

// Change is one change made to the host.
type Change struct {
	Kind    string // sysctl, addr-add, addr-del, table-replace, table-delete
	Subject string
	Command string
}
