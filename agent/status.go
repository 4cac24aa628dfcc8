package agent

import (
	"context"
	"fmt"
	"strings"

	"github.com/dsr-agent/dsr-agent/firewalld"
	"github.com/dsr-agent/dsr-agent/listener"
)

// Report compares the host with the config.
type Report struct {
	InSync bool   `json:"in_sync"`
	Mode   string `json:"mode"`
	// Suppression is true when everything that keeps the host from
	// answering ARP for its VIPs is in force (sysctls, arp table).
	Suppression bool       `json:"arp_suppression"`
	VIPs        []VIPState `json:"vips"`
	// Prefixes are the prefix VIPs (AnyIP): made local, or redirected in
	// firewalld mode; present or not.
	Prefixes    []PrefixState `json:"prefixes,omitempty"`
	Differences []Difference  `json:"differences"`
	// Warnings are costs of a state that is in sync, e.g. arp_ignore 8:
	// suppression holds, but the host answers ARP for nothing at all.
	Warnings []string `json:"warnings,omitempty"`
	// Firewalld is what a running firewalld does to the traffic the config
	// serves (CLI status only; see AddFirewalld).
	Firewalld []firewalld.Finding `json:"firewalld,omitempty"`
	// Listeners says, per configured VIP port, whether a socket receives
	// its traffic (read-only: apply never changes services). A missing one
	// is a listener-missing difference.
	Listeners []ListenerState `json:"listeners,omitempty"`
}

// AddFirewalld adds firewalld's findings: a port it does not let in is a
// difference from what the config serves (clients or the director are
// rejected), so the report is no longer in sync; an error asking it is a
// warning, not drift.
func (r *Report) AddFirewalld(fs []firewalld.Finding, err error) {
	if err != nil {
		r.Warnings = append(r.Warnings, "firewalld: not checked: "+err.Error())
	}
	for _, f := range fs {
		r.Firewalld = append(r.Firewalld, f)
		if f.Severity == firewalld.Warning {
			r.InSync = false
		}
	}
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
	Kind    DriftKind `json:"kind"`
	Subject string    `json:"subject"`
	Detail  string    `json:"detail"`
	// Fix is the command apply would run.
	Fix string `json:"fix,omitempty"`
}

// Status compares the host with cfg and changes nothing.
func (h *Host) Status(cfg *Config) (*Report, error) {
	_, r, err := h.status(cfg)
	return r, err
}

// StatusWithFirewalld is Status plus what a running firewalld does to the
// config's traffic, from the same read of the host (the CLI's status; the
// daemon never waits on D-Bus).
func (h *Host) StatusWithFirewalld(ctx context.Context, cfg *Config) (*Report, error) {
	p, r, err := h.status(cfg)
	if err != nil {
		return nil, err
	}
	r.AddFirewalld(FirewalldFindings(ctx, p.want, p.facts))
	return r, nil
}

// status reads the host once: the plan, then what status reads beside it
// (listeners, proxy ARP/NDP).
func (h *Host) status(cfg *Config) (*planned, *Report, error) {
	p, err := h.plan(cfg, false)
	if err == nil {
		err = p.blocked
	}
	if err != nil {
		return nil, nil, err
	}
	h.readListeners(p)
	h.readProxy(p)
	return p, p.report(), nil
}

// readListeners dumps the sockets the config's ports need (nothing for a
// config without ports or `vips: []`): one dump per protocol and family.
func (h *Host) readListeners(p *planned) {
	protos, v4 := listenerDumpSpec(p.want)
	if len(protos) == 0 {
		return
	}
	p.listenersRead = true
	if h.diag == nil {
		d, err := listener.Open(h.nsFD)
		if err != nil {
			// Not drift: say it was not checked.
			p.listenerErr = err
			return
		}
		h.diag = d
	}
	p.sockets, p.listenerErr = h.diag.List(protos, v4)
}

// report is the status view of a plan: each pending change is a difference.
func (p *planned) report() *Report {
	r := &Report{Mode: string(p.want.Mode), Suppression: true, VIPs: []VIPState{}, Differences: []Difference{}}
	for _, c := range p.plan.Visible() {
		d := Difference{Kind: c.drift, Subject: c.Subject, Detail: c.Reason, Fix: c.Command}
		if c.fix != "" {
			d.Fix = c.fix
		}
		if c.missing != nil {
			d.Detail = "missing from " + c.missing.Link
		}
		if c.unsuppressed {
			r.Suppression = false
		}
		r.Differences = append(r.Differences, d)
	}
	for _, s := range p.surfaces {
		s.report(p, r)
	}
	var listenerWarnings []string
	switch {
	case p.listenerErr != nil:
		listenerWarnings = []string{"listeners: not checked: " + p.listenerErr.Error()}
	case p.listenersRead:
		var diffs []Difference
		r.Listeners, diffs, listenerWarnings = listenerView(p.want, p.facts, p.sockets)
		r.Differences = append(r.Differences, diffs...)
	}
	var proxy Report
	p.proxyReport(&proxy)
	r.Differences = append(r.Differences, proxy.Differences...)
	r.Suppression = r.Suppression && (len(proxy.Differences) == 0)
	r.InSync = len(r.Differences) == 0
	r.Warnings = append(r.Warnings, p.notes(noteStatus)...)
	r.Warnings = append(r.Warnings, proxy.Warnings...)
	r.Warnings = append(r.Warnings, netmgrWarnings(p.want, p.facts)...)
	r.Warnings = append(r.Warnings, listenerWarnings...)
	return r
}

// String renders the report for people: one line per difference.
func (r *Report) String() string {
	var b strings.Builder
	if r.InSync {
		if len(r.Prefixes) > 0 {
			fmt.Fprintf(&b, "in sync: mode %s, %d VIP(s) and %d prefix(es) in place, ARP suppression in force\n", r.Mode, len(r.VIPs), len(r.Prefixes))
		} else {
			fmt.Fprintf(&b, "in sync: mode %s, %d VIP(s) in place, ARP suppression in force\n", r.Mode, len(r.VIPs))
		}
		r.writeWarnings(&b)
		return b.String()
	}
	fmt.Fprintf(&b, "NOT in sync (mode %s): %d difference(s)\n", r.Mode, len(r.Differences)+len(r.Firewalld))
	for _, d := range r.Differences {
		fmt.Fprintf(&b, "  %-20s %s: %s\n", d.Kind, d.Subject, d.Detail)
	}
	if !r.Suppression {
		b.WriteString("  ARP suppression is NOT fully in force: this host may answer ARP for a VIP\n")
	}
	r.writeWarnings(&b)
	// Only what apply changes is worth sending the operator to apply for:
	// a listener is the service's, proxy ARP/NDP settings are the host's.
	notOurs, listeners, proxy := 0, 0, 0
	for _, d := range r.Differences {
		switch d.Kind {
		case ListenerMissing:
			listeners++
		case ProxyAnswers:
			proxy++
		}
	}
	notOurs = listeners + proxy
	if notOurs < len(r.Differences) || len(r.Firewalld) > 0 {
		b.WriteString("run `dsr-agent apply` to fix (or `dsr-agent apply --dry-run` to see the commands)\n")
	}
	if listeners > 0 {
		b.WriteString("a missing listener is the service's to fix (apply does not start services): start it, listening on the VIP or the wildcard\n")
	}
	if proxy > 0 {
		b.WriteString("proxy ARP/NDP is the host's setting, not dsr-agent's (apply does not change it): turn off the setting named, or remove the proxy entry\n")
	}
	return b.String()
}

func (r *Report) writeWarnings(b *strings.Builder) {
	for _, f := range r.Firewalld {
		fmt.Fprintf(b, "  %s\n", strings.ReplaceAll(f.String(), "\n", "\n  "))
	}
	for _, w := range r.Warnings {
		fmt.Fprintf(b, "  warning: %s\n", w)
	}
}
