package agent

import (
	"errors"
	"fmt"
	"slices"
	"strings"

	"golang.org/x/sys/unix"

	"github.com/dsr-agent/dsr-agent/route"
)

// routeSurface is return_via's policy routing: dsr-agent's rules and the
// default route of its table, all marked with route.Proto.
type routeSurface struct {
	k   routeKernel
	obs *route.Observed
	// blocked says why the surface plans nothing (a foreign route in its
	// table): apply refuses; the daemon's repair pass runs the others.
	block error
	// shadows are foreign rules in front of dsr-agent's rules, in place,
	// that take return_via's replies: drift it cannot repair.
	shadows []route.Shadow
}

// RuleShadowed is a foreign policy rule that takes return_via's replies
// before dsr-agent's rules: status reports it; apply and the daemon's
// repair pass fail on it after everything else (the rule is not theirs).
const RuleShadowed ChangeKind = "rule-shadowed"

func (s *routeSurface) observe(d *Desired, _ *Ownership) error {
	// The tables to read: the configured one, the default (a config that
	// changed the number leaves its routes there) and any an owned rule
	// points at.
	tables := append([]int{DefaultReturnTable}, d.RouteTables...)
	obs, err := s.k.Observe(tables)
	if err != nil {
		return err
	}
	for _, r := range obs.Rules {
		if !slices.Contains(tables, r.Table) && r.Table != unix.RT_TABLE_MAIN {
			tables = append(tables, r.Table)
		}
	}
	if len(tables) > len(d.RouteTables)+1 {
		if obs, err = s.k.Observe(tables); err != nil {
			return err
		}
	}
	var foreign []string
	for _, f := range obs.Foreign {
		for _, t := range d.RouteTables {
			if strings.Contains(f, fmt.Sprintf(" table %d ", t)) {
				foreign = append(foreign, f)
			}
		}
	}
	s.obs, s.block, s.shadows = obs, nil, nil
	shadows, err := s.k.Shadows(d.Rules)
	if err != nil {
		return err
	}
	if len(shadows) > 0 {
		delRules, addRules, delRoutes, putRoutes := route.Diff(d.Rules, d.Routes, obs)
		if len(delRules)+len(addRules)+len(delRoutes)+len(putRoutes) == 0 {
			// In place: the rule came later. Status names it; the
			// daemon keeps repairing everything else.
			s.shadows = shadows
		} else {
			// Before return_via's first change: refuse, nothing changed.
			s.block = fmt.Errorf("%w: return_via: a foreign policy rule takes its replies before dsr-agent's rules (priority %d): %s: expected no rule before them that matches the replies (move it after priority %d or narrow its selectors; dsr-agent never changes a rule it did not make)",
				ErrInvalidConfig, returnPriority, describeShadows(shadows), returnPriority)
		}
	}
	if len(foreign) > 0 {
		// apply refuses the whole config before its first change; in
		// the daemon's repair pass only this surface stands still, and
		// the VIPs and their suppression are still repaired (a running
		// daemon must repair a deleted VIP whatever the state of the
		// policy routing).
		s.block = errors.Join(s.block, fmt.Errorf("%w: return_via.table: %d holds routes dsr-agent did not make (%s): expected a table of its own (set return_via.table)",
			ErrInvalidConfig, d.RouteTables[0], strings.Join(foreign, "; ")))
	}
	return nil
}

func (s *routeSurface) diff(d *Desired, _ *Ownership) []Change {
	if s.block != nil {
		return nil
	}
	delRules, addRules, delRoutes, putRoutes := route.Diff(d.Rules, d.Routes, s.obs)
	var out []Change
	for _, sh := range groupShadows(s.shadows) {
		msg := fmt.Sprintf("return_via: %s: dsr-agent never changes a rule it did not make: move it after priority %d or narrow its selectors", sh, returnPriority)
		out = append(out, Change{Kind: RuleShadowed, Subject: "rule " + sh.Foreign, Reason: "return_via: " + sh.String(),
			Command: "# foreign rule in the way of return_via: " + sh.Foreign, phase: PhaseReturnPath, drift: DriftRuleShadowed,
			apply: func() error { return errors.New(msg) }})
	}
	// Add before delete (a changed rule set or gateway never leaves a
	// moment without a return path); a route before the rules that lead
	// to it, rules before the route they led to.
	for _, r := range putRoutes {
		reason, drift := "missing", DriftRouteMissing
		for _, o := range s.obs.Routes {
			if o.Table == r.Table && o.IPv6() == r.IPv6() {
				reason, drift = "is via "+o.Gateway.String()+" dev "+o.Link, DriftRouteWrong
			}
		}
		out = append(out, Change{Kind: RouteReplace, Subject: "route " + r.String(), Reason: reason,
			Command: r.Command("replace"), phase: PhaseReturnPath, drift: drift,
			apply: func() error { return s.k.ReplaceRoute(r) }})
	}
	for _, r := range addRules {
		out = append(out, Change{Kind: RuleAdd, Subject: "rule " + r.String(), Reason: "missing",
			Command: r.Command("add"), phase: PhaseReturnPath, drift: DriftRuleMissing,
			apply: func() error { return s.k.AddRule(r) }})
	}
	for _, r := range delRules {
		out = append(out, Change{Kind: RuleDel, Subject: "rule " + r.String(), Reason: "not in the config",
			Command: r.Command("del"), phase: PhaseReturnPath, drift: DriftRuleUnexpected,
			apply: func() error { return s.k.DelRule(r) }})
	}
	for _, r := range delRoutes {
		out = append(out, Change{Kind: RouteDel, Subject: "route " + r.String(), Reason: "not in the config",
			Command: r.Command("del"), phase: PhaseReturnPath, drift: DriftRouteUnexpected,
			apply: func() error { return s.k.DelRoute(r) }})
	}
	return out
}

func describeShadows(shadows []route.Shadow) string {
	var parts []string
	for _, sh := range groupShadows(shadows) {
		parts = append(parts, sh.String())
	}
	return strings.Join(parts, "; ")
}

// groupShadows keeps one shadow per foreign rule (it shadows the rule of
// every address and port alike): the first, in the kernel's order.
func groupShadows(shadows []route.Shadow) []route.Shadow {
	var out []route.Shadow
	for _, sh := range shadows {
		if !slices.ContainsFunc(out, func(o route.Shadow) bool { return o.Foreign == sh.Foreign && o.Want.IPv6 == sh.Want.IPv6 }) {
			out = append(out, sh)
		}
	}
	return out
}

func (s *routeSurface) blocked() error { return s.block }

// report: nothing beyond its changes (a shadowing rule is one).
func (s *routeSurface) report(*planned, *Report) {}
