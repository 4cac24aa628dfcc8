package agent

import (
	"fmt"
	"strings"

	"github.com/dsr-agent/dsr-agent/arp"
	"github.com/dsr-agent/dsr-agent/firewall"
	"github.com/dsr-agent/dsr-agent/loopback"
)

// ChangeKind names one kind of change. The order of the constants is the
// order a plan runs in: VIPs that must go leave first, ARP suppression is in
// force before any VIP is added, and old suppression goes only at the end.
type ChangeKind string

const (
	AddrDel       ChangeKind = "addr-del"
	SysctlSet     ChangeKind = "sysctl-set"
	TableReplace  ChangeKind = "table-replace"
	AddrAdd       ChangeKind = "addr-add"
	TableDelete   ChangeKind = "table-delete"
	SysctlRestore ChangeKind = "sysctl-restore"
)

var phaseOrder = []ChangeKind{AddrDel, SysctlSet, TableReplace, AddrAdd, TableDelete, SysctlRestore}

// Change is one step of a plan.
type Change struct {
	Kind ChangeKind `json:"kind"`
	// Subject is what changes: a VIP, a sysctl name or a table.
	Subject string `json:"subject"`
	// Reason says why, e.g. "missing" or "is 0, want 1".
	Reason string `json:"reason"`
	// Command is the equivalent shell command.
	Command string `json:"command"`

	addr loopback.Addr
	// sysctl and value: what a sysctl step writes.
	sysctl arp.Path
	value  string
	spec   firewall.Spec
	family firewall.Family
	// forgetOnly marks a saved sysctl to drop from the state without
	// writing it (its interface is gone, or it was changed by someone else).
	forgetOnly bool
}

// Plan is the ordered list of changes that brings the host to the config.
type Plan struct {
	Changes []Change `json:"changes"`
	// Notes are what the operator must hear beside the changes, e.g. that
	// saved sysctl values were lost with an unreadable state file.
	Notes []string `json:"notes,omitempty"`
}

// Empty reports whether there is nothing to do on the host (forgetting a
// stale state entry is not a change an operator needs to hear about).
func (p *Plan) Empty() bool {
	if p == nil {
		return true
	}
	for _, c := range p.Changes {
		if !c.forgetOnly {
			return false
		}
	}
	return true
}

// String renders the plan as the commands an administrator would type, one
// renderer for apply output, --dry-run, status and golden tests.
func (p *Plan) String() string {
	if p == nil {
		return ""
	}
	var b strings.Builder
	for _, c := range p.Changes {
		if c.forgetOnly {
			continue // bookkeeping only: no command to show
		}
		switch c.Kind {
		case TableReplace:
			fmt.Fprintf(&b, "# %s: %s\n%s", c.Subject, c.Reason, c.Command)
		default:
			if c.Reason != "" {
				fmt.Fprintf(&b, "%s  # %s\n", c.Command, c.Reason)
			} else {
				fmt.Fprintln(&b, c.Command)
			}
		}
	}
	for _, n := range p.Notes {
		fmt.Fprintf(&b, "# warning: %s\n", n)
	}
	return b.String()
}

// sortedByPhase returns the changes in phase order, keeping the order within a phase.
func sortedByPhase(changes []Change) []Change {
	out := make([]Change, 0, len(changes))
	for _, k := range phaseOrder {
		for _, c := range changes {
			if c.Kind == k {
				out = append(out, c)
			}
		}
	}
	return out
}

func sysctlCommand(path arp.Path, value string) string {
	return fmt.Sprintf("sysctl -w %s=%s", path, value)
}
