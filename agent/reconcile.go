package agent

import (
	"fmt"
	"log/slog"

	"github.com/dsr-agent/dsr-agent/loopback"
)

// Phase is a change's place in the safety order, the executor's promises:
// no instant, in apply, a mode switch or remove, where the host has a VIP
// and no ARP suppression; and at every step of a plan, a VIP the new
// config keeps is served in its old place or its new one, so a plan that
// stops at any step has cost no VIP but those the config dropped
// (docs/safety.md, TestFailedPlanNeverCostsAVIP).
type Phase int

const (
	// PhaseDevices: mode tunnel's modules, decapsulation devices and GUE
	// port; they carry no address yet, and the sysctls and VIPs after
	// them need them. First: loading a module is the step most likely to
	// fail, and nothing has changed before it.
	PhaseDevices Phase = iota
	// PhaseRemoveVIPs: VIPs the config no longer has leave before
	// suppression changes, while the suppression that covered them is
	// still in force (an arp table replaced next no longer lists them).
	PhaseRemoveVIPs
	// PhaseSuppress: ARP suppression (sysctls, then the arp table) is in
	// force before any VIP is added.
	PhaseSuppress
	// PhaseRedirect: firewalld mode's nat tables.
	PhaseRedirect
	// PhaseAddVIPs: the VIPs, once nothing can answer ARP for them.
	PhaseAddVIPs
	// PhaseAfterVIPs: tables that serve no VIP themselves (mode tunnel's
	// MSS clamp). Replacing a family's table may take away the redirect
	// that still serves a VIP on its way to an address: so after the
	// addresses.
	PhaseAfterVIPs
	// PhaseMoveVIPs: the old place of a VIP the config keeps elsewhere (on
	// another device, or served by a redirect) is deleted only once the
	// new place exists: add before delete, so a plan that fails on the
	// way never leaves a kept VIP unserved.
	PhaseMoveVIPs
	// PhaseReturnPath: return_via's policy routing (rules and the LB's
	// table); it has no bearing on ARP.
	PhaseReturnPath
	// PhaseRemoveTables: tables of a mode no longer configured.
	PhaseRemoveTables
	// PhaseRemoveDevices: devices and ports of a tunnel no longer wanted.
	PhaseRemoveDevices
	// PhaseRestore: sysctl values found before dsr-agent, written back last.
	PhaseRestore
	numPhases
)

// ChangeKind names a kind of change (stable: logs, JSON and metrics use it).
type ChangeKind string

const (
	AddrDel       ChangeKind = "addr-del"
	SysctlSet     ChangeKind = "sysctl-set"
	TableReplace  ChangeKind = "table-replace"
	AddrAdd       ChangeKind = "addr-add"
	TableDelete   ChangeKind = "table-delete"
	SysctlRestore ChangeKind = "sysctl-restore"
	RuleAdd       ChangeKind = "rule-add"
	RuleDel       ChangeKind = "rule-del"
	RouteReplace  ChangeKind = "route-replace"
	RouteDel      ChangeKind = "route-del"
	// Mode tunnel's steps (tunnel.Kind), and forgetting owned tunnel
	// entries the kernel no longer has.
	ModuleLoad   ChangeKind = "module-load"
	LinkAdd      ChangeKind = "link-add"
	LinkUp       ChangeKind = "link-up"
	FouAdd       ChangeKind = "fou-add"
	FouDel       ChangeKind = "fou-del"
	LinkDown     ChangeKind = "link-down"
	LinkDel      ChangeKind = "link-del"
	TunnelForget ChangeKind = "tunnel-forget"
)

// DriftKind names a way the host differs from the config (stable: status
// --json, health's /status and the metrics use it).
type DriftKind string

// The drift kinds: a pending change of each surface, and what status reads
// beside the plan (a listener, proxy ARP/NDP).
const (
	DriftVIPMissing        DriftKind = "vip-missing"
	DriftVIPUnexpected     DriftKind = "vip-unexpected"
	DriftSysctlWrong       DriftKind = "sysctl-wrong"
	DriftSysctlNotRestored DriftKind = "sysctl-not-restored"
	DriftTableWrong        DriftKind = "table-wrong"
	DriftTableUnexpected   DriftKind = "table-unexpected"
	DriftRouteMissing      DriftKind = "route-missing"
	DriftRouteWrong        DriftKind = "route-wrong"
	DriftRouteUnexpected   DriftKind = "route-unexpected"
	DriftRuleMissing       DriftKind = "rule-missing"
	DriftRuleUnexpected    DriftKind = "rule-unexpected"
	DriftRuleShadowed      DriftKind = "rule-shadowed"
	DriftTunnelMissing     DriftKind = "tunnel-missing"
	DriftTunnelUnexpected  DriftKind = "tunnel-unexpected"
	// ListenerMissing is a VIP port nothing serves. It is not a kernel
	// change: apply does not start services, so it never appears in a plan,
	// only in status, the daemon's snapshot and health.
	ListenerMissing DriftKind = "listener-missing"
	// ProxyAnswers is a VIP the kernel would answer ARP or Neighbour
	// Solicitations for through proxy ARP/NDP, with nothing of dsr-agent's
	// dropping those requests.
	ProxyAnswers DriftKind = "proxy-answers"
)

// Change is one step of a plan. The surface that made it gave it its own
// apply and rendering; the executor knows no kinds.
type Change struct {
	Kind ChangeKind `json:"kind"`
	// Subject is what changes: a VIP, a sysctl name or a table.
	Subject string `json:"subject"`
	// Reason says why, e.g. "missing" or "is 0, want 1".
	Reason string `json:"reason"`
	// Command is the equivalent shell command.
	Command string `json:"command"`

	phase Phase
	// drift is how status names this change while it is pending.
	drift DriftKind
	// fix is what status suggests (default: Command).
	fix string
	// bookkeeping changes touch only the state file: not shown, not drift.
	bookkeeping bool
	// unsuppressed: while this change is pending the host may answer ARP
	// for a VIP.
	unsuppressed bool
	// missing is the VIP this change would add (status: not present).
	missing *loopback.Addr
	// render replaces the one-line rendering (an nft transaction).
	render func() string

	// apply changes the kernel (nil: bookkeeping only).
	apply func() error
	// own runs before any change is applied: it records in the state what
	// the change will own or the value it will overwrite, so the state file
	// is always ahead of the kernel. It reports whether the state changed.
	own func(*Ownership) (bool, error)
	// done runs after the change succeeded: it drops what is no longer owned.
	done func(*Ownership) bool
}

// planFrom runs every surface's diff and orders the changes by phase,
// keeping each surface's order within a phase.
func planFrom(surfaces []surface, d *Desired, st *Ownership) *Plan {
	if d.HandsOff {
		return &Plan{}
	}
	var byPhase [numPhases][]Change
	for _, s := range surfaces {
		for _, c := range s.diff(d, st) {
			byPhase[c.phase] = append(byPhase[c.phase], c)
		}
	}
	p := &Plan{}
	for _, cs := range byPhase {
		p.Changes = append(p.Changes, cs...)
	}
	return p
}

// execute runs the plan in phase order, keeping the state file ahead of the
// kernel: ownership and saved values are written before the change they
// cover, and dropped only after it.
func (h *Host) execute(plan *Plan, st *Ownership, dirty bool) (*Plan, error) {
	done := &Plan{}
	for _, c := range plan.Changes {
		if c.own == nil {
			continue
		}
		changed, err := c.own(st)
		if err != nil {
			return done, fmt.Errorf("%s %s: %w", c.Kind, c.Subject, err)
		}
		dirty = dirty || changed
	}
	saveIfDirty := func() error {
		if !dirty {
			return nil
		}
		dirty = false
		return h.store.save(st)
	}
	if err := saveIfDirty(); err != nil {
		return done, err
	}
	step := 0
	for _, c := range plan.Changes {
		if c.apply != nil {
			err := error(nil)
			if h.inject != nil {
				err = h.inject(step, c)
			}
			step++
			if err == nil {
				err = c.apply()
			}
			if err != nil {
				_ = saveIfDirty()
				return done, fmt.Errorf("%s %s: %w", c.Kind, c.Subject, err)
			}
		}
		if c.done != nil {
			dirty = c.done(st) || dirty
		}
		slog.Debug("applied", "kind", c.Kind, "subject", c.Subject, "reason", c.Reason)
		done.Changes = append(done.Changes, c)
	}
	return done, saveIfDirty()
}
