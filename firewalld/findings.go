package firewalld

import (
	"fmt"
	"strconv"

	"github.com/dsr-agent/dsr-agent/internal/inet"
)

// Kind says why a port must be let in; it picks the fix.
type Kind int

const (
	// VIPPort is a vips[].ports entry (loopback and arptables modes: the
	// packet arrives for VIP:port and firewalld's zone filter judges it).
	VIPPort Kind = iota
	// Health is health.listen's port (8558 by default): the director polls it.
	Health
	// AgentCheck is health.agent_check.listen's port (3333 by default).
	AgentCheck
)

func (k Kind) String() string {
	switch k {
	case VIPPort:
		return "vip"
	case Health:
		return "health"
	case AgentCheck:
		return "agent-check"
	}
	return "kind" + strconv.Itoa(int(k))
}

// ServiceName is the firewalld service packaging/firewalld/dsr-agent.xml
// defines (installed as /usr/lib/firewalld/services/dsr-agent.xml).
const ServiceName = "dsr-agent"

// Service ports of dsr-agent.xml: the documented defaults of health.listen
// and health.agent_check.listen. A config on other ports needs --add-port.
const (
	ServiceHealthPort     = 8558
	ServiceAgentCheckPort = 3333
)

// Want is one port the director or clients must reach on this host.
type Want struct {
	Kind  Kind
	Iface string // the interface the traffic arrives on (its zone decides)
	Addr  string // the VIP or the listen IP (no port), for the message only
	Port  uint16
	Proto inet.Protocol // tcp when zero
}

// Checked is one Want with firewalld's answer.
type Checked struct {
	Want
	Zone        string
	DefaultZone bool // Iface is in no zone: the default zone applies
	Admission   Admission
	Err         error // firewalld could not answer for this port
}

// Input is everything Findings needs: the answers, gathered or made up by a
// test.
type Input struct {
	// Running is false when firewalld is not running: no findings at all.
	Running bool
	Checked []Checked
	// Redirects, or RedirectsErr, is set when the request asked whether
	// firewalld accepts redirected traffic (Request.VIPsRedirected).
	Redirects    *Redirects
	RedirectsErr error
	// Service is how far firewalld knows dsr-agent.xml; it picks the fix
	// for the health and agent-check ports. ServiceDef is the runtime
	// definition when loaded (nil: the packaged ports are assumed).
	Service    ServiceState
	ServiceDef *Service
}

// Severity of a finding.
type Severity int

const (
	// Warning: traffic dsr-agent needs is (or may be) not let in.
	Warning Severity = iota
	// Info: nothing wrong, said so that status shows what was checked.
	Info
)

func (s Severity) String() string {
	if s == Info {
		return "info"
	}
	return "warning"
}

// MarshalText makes status --json say "warning", not 0.
func (s Severity) MarshalText() ([]byte, error) { return []byte(s.String()), nil }

// Finding is one thing firewalld does to dsr-agent's traffic, with the
// firewall-cmd lines that fix it (the runtime line and the --permanent one:
// the runtime line works at once, the permanent one survives a reload).
type Finding struct {
	Severity Severity `json:"severity"`
	Subject  string   `json:"subject"` // "vip 192.0.2.10 port 80/tcp", "health on 192.0.2.21 port 8558/tcp", "redirects"
	Message  string   `json:"message"`
	Fix      []string `json:"fix,omitempty"`
}

// String renders a finding the way status prints it.
func (f Finding) String() string {
	s := fmt.Sprintf("firewalld: %s: %s", f.Subject, f.Message)
	for _, l := range f.Fix {
		s += "\n  fix: " + l
	}
	return s
}

// Findings turns firewalld's answers into findings. Pure. An open port gives
// no finding (status lists only what differs); a closed one gives the
// firewall-cmd lines that open it; an unknown one says what was not
// evaluated. Health and agent-check on the service's default ports are fixed
// with --add-service=dsr-agent, others with --add-port.
func Findings(in Input) []Finding {
	if !in.Running {
		return nil
	}
	var out []Finding
	for _, ch := range in.Checked {
		subject := subjectOf(ch.Want)
		where := "zone " + ch.Zone
		if ch.DefaultZone {
			where = fmt.Sprintf("zone %s (the default zone: %s is in no zone)", ch.Zone, ch.Iface)
		} else if ch.Zone != "" {
			where = fmt.Sprintf("zone %s (of %s)", ch.Zone, ch.Iface)
		}
		switch {
		case ch.Err != nil:
			out = append(out, Finding{Warning, subject,
				fmt.Sprintf("could not ask firewalld whether it is let in on %s: %v", ch.Iface, ch.Err), nil})
		case ch.Admission.Status == Open:
			// Nothing to say: status lists differences only.
		case ch.Admission.Status == Unknown:
			out = append(out, Finding{Warning, subject,
				fmt.Sprintf("%s may not let it in (%s); check it or open it explicitly", where, ch.Admission.How),
				fixLines(ch, in.Service, in.ServiceDef)})
		default:
			out = append(out, Finding{Warning, subject,
				fmt.Sprintf("%s does not let it in: %s", where, consequence(ch.Kind)),
				fixLines(ch, in.Service, in.ServiceDef)})
		}
	}
	// Asked only when the VIP traffic arrives redirected (firewalld mode).
	switch {
	case in.RedirectsErr != nil:
		out = append(out, Finding{Warning, "redirects",
			fmt.Sprintf("could not ask firewalld whether it accepts redirected traffic: %v", in.RedirectsErr), nil})
	case in.Redirects != nil && !in.Redirects.Accepted:
		out = append(out, Finding{Warning, "redirects",
			in.Redirects.Why + "; every client of a VIP is rejected after dsr-agent's redirect",
			[]string{
				"sed -i 's/^StrictForwardPorts=.*/StrictForwardPorts=no/' /etc/firewalld/firewalld.conf && firewall-cmd --reload",
			}})
	}
	return out
}

func consequence(k Kind) string {
	switch k {
	case VIPPort:
		return "clients of the VIP are rejected while health stays up (the director keeps sending them here)"
	case Health:
		return "the director cannot poll /healthz and takes this server out (or never puts it in)"
	case AgentCheck:
		return "HAProxy's agent-check cannot reach the agent"
	}
	return "it is rejected"
}

func subjectOf(w Want) string {
	p := fmt.Sprintf("%d/%s", w.Port, protoOr(w.Proto))
	switch w.Kind {
	case VIPPort:
		return fmt.Sprintf("vip %s port %s", w.Addr, p)
	default:
		if w.Addr != "" {
			return fmt.Sprintf("%s on %s port %s", w.Kind, w.Addr, p)
		}
		return fmt.Sprintf("%s port %s", w.Kind, p)
	}
}

// fixLines: the runtime line (in force at once, lost on reload) and the
// --permanent one (survives reload and reboot). The dsr-agent service is used
// for the health and agent-check ports it covers when firewalld knows it:
// one name in the zone, and the package keeps the definition up to date.
// Installed but not yet loaded (the package was installed while firewalld
// ran), only the permanent configuration has it: the permanent line, then a
// reload (a runtime --add-service would fail with INVALID_SERVICE).
func fixLines(ch Checked, svc ServiceState, def *Service) []string {
	zone := ch.Zone
	if zone == "" {
		return nil
	}
	byService := false
	if ch.Kind == Health || ch.Kind == AgentCheck {
		if def != nil {
			// The definition in force (maybe overridden in /etc).
			_, byService = serviceOpens(*def, nil, ch.Port, protoOr(ch.Proto), maxIncludeDepth)
		} else {
			byService = protoOr(ch.Proto) == "tcp" &&
				((ch.Kind == Health && ch.Port == ServiceHealthPort) || (ch.Kind == AgentCheck && ch.Port == ServiceAgentCheckPort))
		}
	}
	switch {
	case byService && svc == ServiceLoaded:
		arg := "--add-service=" + ServiceName
		return []string{
			fmt.Sprintf("firewall-cmd --zone=%s %s", zone, arg),
			fmt.Sprintf("firewall-cmd --permanent --zone=%s %s", zone, arg),
		}
	case byService && svc == ServiceInstalled:
		return []string{
			fmt.Sprintf("firewall-cmd --permanent --zone=%s --add-service=%s", zone, ServiceName),
			"firewall-cmd --reload",
		}
	}
	arg := fmt.Sprintf("--add-port=%d/%s", ch.Port, protoOr(ch.Proto))
	return []string{
		fmt.Sprintf("firewall-cmd --zone=%s %s", zone, arg),
		fmt.Sprintf("firewall-cmd --permanent --zone=%s %s", zone, arg),
	}
}

func protoOr(p inet.Protocol) string {
	if p == "" {
		return string(inet.TCP)
	}
	return string(p)
}
