// Package daemon is `dsr-agent run`: it applies the config, then keeps the
// host converged (the surfaces' watchers, periodic resync), runs health
// checks and serves health, talks to systemd (READY, WATCHDOG, RELOADING,
// STOPPING) and answers drain/undrain on a root-only unix socket.
//
// Stopping the daemon leaves everything on the host in place: a restart or a
// package upgrade must not blip traffic. `dsr-agent remove` is the teardown.
package daemon

import "github.com/dsr-agent/dsr-agent/agent"

// Engine is the core as the loop uses it; *agent.Host is the production one.
// It is an interface only so the loop's contract (READY after the first
// successful apply, a refused reload keeps the running config) can be tested
// without a kernel.
type Engine interface {
	// Load parses the config file and resolves it against the host. Errors
	// for a bad config wrap agent.ErrInvalidConfig (and ErrHostMismatch when
	// the host may still catch up).
	Load(path, dir string) (*agent.Config, *agent.Desired, error)
	// Converge converges the host and returns the changes it made and the
	// desired state it converged to; while a host fact is briefly missing
	// it keeps converging to last (agent.Host.Converge).
	Converge(cfg *agent.Config, last *agent.Desired) (*agent.Plan, *agent.Desired, error)
	// Status compares host and config without changing anything.
	Status(*agent.Config) (*agent.Report, error)
}
