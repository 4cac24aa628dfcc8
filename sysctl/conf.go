package sysctl

import (
	"fmt"
	"strconv"
)

// Rule judges the values of one net/ipv4/conf key. The kernel reads most of
// these keys as max(all, iface) (IN_DEV_MAXCONF in
// include/linux/inetdevice.h), so values are judged as that effective value
// where it decides, and "a higher value is stricter" is false. What a rule
// accepts is policy: the tables live with their owners (arp.Rules,
// rpfilter.Rule).
type Rule struct {
	Key string
	// Target is what dsr-agent writes when the value is not accepted.
	Target int
	// Accepts reports whether the (effective) value is one dsr-agent leaves
	// alone.
	Accepts func(v int) bool
	// Caveat is non-empty for an accepted value that costs something the
	// operator must hear about.
	Caveat func(v int) string
	// JudgeMax judges a device's value as max(all, dev) alone, with "all"
	// read but never written (Setting.JudgedOnly): only the device's own
	// value is ever changed. Without it each value must be accepted by
	// itself, as the RHEL guide sets them, and only "default" is judged
	// through max(all, default).
	JudgeMax bool
	// TargetName names Target in reasons ("loose"); Harm says what an
	// effective value that is not accepted does. Both only with JudgeMax.
	TargetName, Harm string
}

// Setting is one sysctl dsr-agent wants, judged by Rule.
type Setting struct {
	Path Path
	Rule *Rule
	// Inherited marks a value that counts only through max(all, value):
	// "default", which interfaces created later start from. It is written
	// only when that maximum would not be accepted; "all" and the devices
	// must be accepted by their own value, so the intent is visible on each.
	Inherited bool
	// JudgedOnly marks a value that is read, so the settings after it are
	// judged by max(it, theirs), but never written: "all" of a JudgeMax
	// rule, where the device's own value fixes the maximum alone (max(1, 2)
	// = 2), and lowering "all" would loosen every interface of the host.
	JudgedOnly bool
}

// Value is what dsr-agent writes.
func (s Setting) Value() string { return strconv.Itoa(s.Rule.Target) }

// RuleFor is the rule of rules whose key ends p (nil for any other path).
func RuleFor(p Path, rules []*Rule) *Rule {
	if len(p) == 0 {
		return nil
	}
	for _, r := range rules {
		if r.Key == p[len(p)-1] {
			return r
		}
	}
	return nil
}

// Effective is the value the kernel uses for an interface: max(all, iface).
// Values that are not numbers count as unknown (ok false).
func Effective(all, iface string) (v int, ok bool) {
	a, err1 := strconv.Atoi(all)
	i, err2 := strconv.Atoi(iface)
	if err1 != nil || err2 != nil {
		return 0, false
	}
	return max(a, i), true
}

// Correction is a setting whose current value must be replaced, and why.
type Correction struct {
	Setting Setting
	Reason  string
}

// Needed is the pure judgement of the current values (cur: by Path.Key, ""
// when missing): the settings to write, each with the reason, in the order
// of want. "all" is judged first, and the others against the value "all"
// will have.
func Needed(want []Setting, cur map[string]string) []Correction {
	allAfter := map[string]string{} // rule key -> value of all after the plan
	var out []Correction
	for _, s := range want {
		c := cur[s.Path.Key()]
		iface := s.Path[len(s.Path)-2]
		reason := judge(s, c, iface, allAfter)
		if iface == "all" {
			allAfter[s.Rule.Key] = c
			if reason != "" {
				allAfter[s.Rule.Key] = s.Value()
			}
		}
		if reason != "" {
			out = append(out, Correction{Setting: s, Reason: reason})
		}
	}
	return out
}

// judge is why the current value c of s must be written, "" if it must not.
func judge(s Setting, c, iface string, allAfter map[string]string) string {
	v, err := strconv.Atoi(c)
	switch {
	case s.JudgedOnly:
		// Recorded by Needed as the value "all" keeps; never written. A
		// missing or garbled one only makes the devices unjudgeable, and
		// so written.
		return ""
	case c == "":
		return "missing"
	case err != nil:
		return fmt.Sprintf("is %q, want %s", c, s.Value())
	case s.Inherited:
		eff, ok := Effective(allAfter[s.Rule.Key], c)
		if !ok || !s.Rule.Accepts(eff) {
			return fmt.Sprintf("is %s, want %s (interfaces created later would use max(all, default) = %d)", c, s.Value(), eff)
		}
		return ""
	case s.Rule.JudgeMax:
		a, ok := allAfter[s.Rule.Key]
		if !ok {
			break
		}
		eff, ok := Effective(a, c)
		switch {
		case !ok:
			return fmt.Sprintf("is %s, want %s (all is %q: only the device's own %s makes max(all, %s) %s)", c, s.Value(), a, s.Value(), iface, s.Rule.TargetName)
		case !s.Rule.Accepts(eff):
			return fmt.Sprintf("is %s, want %s (max(all, %s) = %d %s)", c, s.Value(), iface, eff, s.Rule.Harm)
		}
		return ""
	}
	if !s.Rule.Accepts(v) {
		return fmt.Sprintf("is %s, want %s", c, s.Value())
	}
	return ""
}
