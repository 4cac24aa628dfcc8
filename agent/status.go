package agent

import (
	"fmt"
	"maps"
	"strings"

	"github.com/google/nftables"

	"github.com/dsr-agent/dsr-agent/arp"
	"github.com/dsr-agent/dsr-agent/firewall"
	"github.com/dsr-agent/dsr-agent/loopback"
)

// Report compares the host with the config.
type Report struct {
	InSync bool   `json:"in_sync"`
	Mode   string `json:"mode"`
	// Suppression is true when everything that keeps the host from
	// answering ARP for its VIPs is in force (sysctls, arp table).
	Suppression bool         `json:"arp_suppression"`
	VIPs        []VIPState   `json:"vips"`
	Differences []Difference `json:"differences"`
	// Warnings are costs of a state that is in sync, e.g. arp_ignore 8:
	// suppression holds, but the host answers ARP for nothing at all.
	Warnings []string `json:"warnings,omitempty"`
}

// VIPState is one VIP's presence where the mode wants it.
type VIPState struct {
	Address string `json:"address"`
	// Link is where the VIP should be ("" in firewalld mode: nowhere).
	Link    string `json:"link,omitempty"`
	Present bool   `json:"present"`
}

// Difference is one way the host differs from the config.
type Difference struct {
	Kind    string `json:"kind"`
	Subject string `json:"subject"`
	Detail  string `json:"detail"`
	// Fix is the command apply would run.
	Fix string `json:"fix,omitempty"`
}

var differenceKind = map[ChangeKind]string{
	AddrDel:       "vip-unexpected",
	SysctlSet:     "sysctl-wrong",
	TableReplace:  "table-wrong",
	AddrAdd:       "vip-missing",
	TableDelete:   "table-unexpected",
	SysctlRestore: "sysctl-not-restored",
}

// Status compares the host with cfg and changes nothing.
func (h *Host) Status(cfg *Config) (*Report, error) {
	p, err := h.planFor(cfg, false)
	if err != nil {
		return nil, err
	}
	return reportFrom(cfg, p), nil
}

func reportFrom(cfg *Config, p *planned) *Report {
	r := &Report{Mode: string(cfg.Mode), Suppression: true, VIPs: []VIPState{}, Differences: []Difference{}}
	missing := map[string]bool{}
	for _, c := range p.plan.Changes {
		if c.forgetOnly {
			continue // bookkeeping only: nothing on the host differs
		}
		d := Difference{Kind: differenceKind[c.Kind], Subject: c.Subject, Detail: c.Reason, Fix: c.Command}
		switch c.Kind {
		case AddrAdd:
			missing[loopback.Key(c.addr.Link, c.addr.Prefix)] = true
			d.Detail = "missing from " + c.addr.Link
			d.Fix = c.addr.Command("add")
		case SysctlSet:
			r.Suppression = false
		case TableReplace:
			if c.family == nftables.TableFamilyARP {
				r.Suppression = false
			}
			d.Fix = "dsr-agent apply"
		}
		r.Differences = append(r.Differences, d)
	}
	for _, a := range p.want.addrs {
		r.VIPs = append(r.VIPs, VIPState{Address: a.Prefix.Addr().String(), Link: a.Link, Present: !missing[loopback.Key(a.Link, a.Prefix)]})
	}
	if cfg.Mode == ModeFirewalld {
		for _, v := range cfg.VIPs {
			r.VIPs = append(r.VIPs, VIPState{Address: v.Address.String(), Present: p.obs.tableDiff[natFamily(v)] == ""})
		}
	}
	r.InSync = len(r.Differences) == 0
	r.Warnings = append(sysctlCaveats(cfg, p), stateNotes(p.snap.state, noteStatus)...)
	return r
}

// sysctlCaveats are the arp.Rules caveats of the values the LB-facing
// interfaces will have once the plan ran.
func sysctlCaveats(cfg *Config, p *planned) []string {
	if len(p.want.sysctls) == 0 {
		return nil
	}
	after := maps.Clone(p.obs.sysctls)
	for _, c := range p.plan.Changes {
		if c.Kind == SysctlSet {
			after[c.sysctl.Key()] = c.value
		}
	}
	return arp.Caveats(cfg.Interfaces, after)
}

func natFamily(v VIP) firewall.Family {
	if v.Address.Is6() {
		return nftables.TableFamilyIPv6
	}
	return nftables.TableFamilyIPv4
}

// String renders the report for people: one line per difference.
func (r *Report) String() string {
	var b strings.Builder
	if r.InSync {
		fmt.Fprintf(&b, "in sync: mode %s, %d VIP(s) in place, ARP suppression in force\n", r.Mode, len(r.VIPs))
		r.writeWarnings(&b)
		return b.String()
	}
	fmt.Fprintf(&b, "NOT in sync (mode %s): %d difference(s)\n", r.Mode, len(r.Differences))
	for _, d := range r.Differences {
		fmt.Fprintf(&b, "  %-20s %s: %s\n", d.Kind, d.Subject, d.Detail)
	}
	if !r.Suppression {
		b.WriteString("  ARP suppression is NOT fully in force: this host may answer ARP for a VIP\n")
	}
	r.writeWarnings(&b)
	b.WriteString("run `dsr-agent apply` to fix (or `dsr-agent apply --dry-run` to see the commands)\n")
	return b.String()
}

func (r *Report) writeWarnings(b *strings.Builder) {
	for _, w := range r.Warnings {
		fmt.Fprintf(b, "  warning: %s\n", w)
	}
}
