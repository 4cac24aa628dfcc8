package agent

import (
	"errors"
	"fmt"
	"maps"
	"slices"
	"strconv"

	"github.com/dsr-agent/dsr-agent/arp"
	"github.com/dsr-agent/dsr-agent/rpfilter"
	"github.com/dsr-agent/dsr-agent/sysctl"
)

// sysctlRules are the rules of every sysctl dsr-agent sets.
var sysctlRules = append(slices.Clone(arp.Rules), rpfilter.Rule)

// sysctlSurface is the ARP sysctls: set what the rules require, save what
// was there, restore it when no longer wanted.
type sysctlSurface struct {
	k sysctlKernel
	// cur holds the current values of desired and saved sysctls, by
	// Path.Key ("" when the sysctl does not exist, e.g. its interface is gone).
	cur map[string]string
	// inherit holds, for a desired sysctl whose interface does not exist
	// yet (tunl0 before its module loads), the value a new interface starts
	// from: `default`'s. That is what remove restores.
	inherit map[string]string
}

func (s *sysctlSurface) observe(d *Desired, st *Ownership) error {
	s.cur = map[string]string{}
	paths := map[string]sysctl.Path{}
	for _, w := range d.Sysctls {
		paths[w.Path.Key()] = w.Path
	}
	for k := range st.SavedSysctls {
		paths[k] = sysctl.ParseKey(k)
	}
	for k, p := range paths {
		v, err := s.k.Read(p)
		if err != nil && !errors.Is(err, sysctl.ErrNotFound) {
			return err
		}
		s.cur[k] = v
	}
	s.inherit = map[string]string{}
	for _, w := range d.Sysctls {
		k := w.Path.Key()
		if s.cur[k] != "" || len(w.Path) < 2 {
			continue
		}
		def := slices.Clone(w.Path)
		def[len(def)-2] = "default"
		if v, err := s.k.Read(def); err == nil {
			// Judged as the value the device will start with: written
			// only if that would not do.
			s.inherit[k] = v
			s.cur[k] = v
		}
	}
	return nil
}

func (s *sysctlSurface) diff(d *Desired, st *Ownership) []Change {
	var out []Change
	wanted := map[string]bool{}
	for _, w := range d.Sysctls {
		wanted[w.Path.Key()] = true
	}
	for _, v := range sysctl.Needed(d.Sysctls, s.cur) {
		path, value, found := v.Setting.Path, v.Setting.Value(), s.cur[v.Setting.Path.Key()]
		if found == "" {
			found = s.inherit[path.Key()]
		}
		out = append(out, Change{Kind: SysctlSet, Subject: path.String(), Reason: v.Reason, Command: sysctlCommand(path, value),
			phase: PhaseSuppress, drift: DriftSysctlWrong, unsuppressed: slices.Contains(arp.Rules, v.Setting.Rule),
			own: func(st *Ownership) (bool, error) {
				if _, saved := st.SavedSysctls[path.Key()]; saved {
					return false, nil
				}
				if found == "" {
					return false, fmt.Errorf("save sysctl %s before changing it: %w", path, sysctl.ErrNotFound)
				}
				st.SavedSysctls[path.Key()] = found
				return true, nil
			},
			apply: func() error { return s.k.Write(path, value) },
		})
	}
	for _, k := range slices.Sorted(maps.Keys(st.SavedSysctls)) {
		if wanted[k] {
			continue
		}
		path, saved, cur := sysctl.ParseKey(k), st.SavedSysctls[k], s.cur[k]
		forget := func(st *Ownership) bool { delete(st.SavedSysctls, path.Key()); return true }
		rule := sysctl.RuleFor(path, sysctlRules)
		if cur == "" || cur == saved || rule == nil || cur != strconv.Itoa(rule.Target) {
			// Gone with its interface, already back, or changed by someone
			// since dsr-agent set it: nothing to restore, only to forget.
			out = append(out, Change{Kind: SysctlRestore, Subject: path.String(), phase: PhaseRestore, bookkeeping: true, done: forget})
			continue
		}
		out = append(out, Change{Kind: SysctlRestore, Subject: path.String(), Reason: "restore the value found before dsr-agent",
			Command: sysctlCommand(path, saved), phase: PhaseRestore, drift: DriftSysctlNotRestored, done: forget,
			apply: func() error {
				if err := s.k.Write(path, saved); err != nil && !errors.Is(err, sysctl.ErrNotFound) {
					return err
				}
				return nil
			},
		})
	}
	return out
}

// after is the values the sysctls will have once the plan ran.
func (s *sysctlSurface) after(d *Desired) map[string]string {
	after := maps.Clone(s.cur)
	for _, v := range sysctl.Needed(d.Sysctls, s.cur) {
		after[v.Setting.Path.Key()] = v.Setting.Value()
	}
	return after
}

func sysctlCommand(path sysctl.Path, value string) string {
	return fmt.Sprintf("sysctl -w %s=%s", path, value)
}

func (s *sysctlSurface) blocked() error { return nil }

// report: the arp.Rules caveats of the values the LB-facing interfaces will
// have once the plan ran.
func (s *sysctlSurface) report(p *planned, r *Report) {
	if len(p.want.Sysctls) > 0 {
		r.Warnings = append(r.Warnings, arp.Caveats(p.want.Interfaces, s.after(p.want))...)
	}
}
