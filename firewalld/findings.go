package firewalld

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"syscall"
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
	Proto string // "tcp" (default) or "udp"
}

// Request is what Gather asks firewalld about.
type Request struct {
	// Mode is the config's mode. In "firewalld" mode the VIP ports are
	// not judged by zone (dsr-agent redirects them; firewalld lets NATed
	// traffic in or not as a whole): AcceptsRedirects is asked instead.
	Mode  string
	Wants []Want
}

// Checked is one Want with firewalld's answer.
type Checked struct {
	Want
	Zone        string
	DefaultZone bool // Iface is in no zone: the default zone applies
	Verdict     Verdict
	Err         error // firewalld could not answer for this port
}

// Input is everything Findings needs: the answers, gathered or made up by a
// test.
type Input struct {
	// Running is false when firewalld is not running: no findings at all.
	Running bool
	Mode    string
	Checked []Checked
	// Redirects is set in firewalld mode.
	Redirects    *Redirects
	RedirectsErr error
	// Service is how far firewalld knows dsr-agent.xml; it picks the fix
	// for the health and agent-check ports. ServiceDef is the runtime
	// definition when loaded (nil: the packaged ports are assumed).
	Service    ServiceState
	ServiceDef *Service
}

// Gather asks a running firewalld about each wanted port (and, in firewalld
// mode, about redirects). An error is returned only when firewalld's presence
// cannot be told, or when it refuses to show its zones to this user (wrapping
// ErrNotAuthorized: one line for the caller to print, not one per port);
// other per-port failures are recorded in Checked.Err so one unreadable zone
// does not hide the others.
func Gather(ctx context.Context, c *Client, req Request) (Input, error) {
	in := Input{Mode: req.Mode}
	running, err := c.Running(ctx)
	if err != nil {
		return in, err
	}
	in.Running = running
	if !running {
		return in, nil
	}
	type zoneOf struct {
		zone      string
		isDefault bool
		err       error
	}
	zones := map[string]zoneOf{}
	// One read of each zone (and its services) however many ports ask.
	type settings struct {
		z    Zone
		svcs map[string]Service
		err  error
	}
	read := map[string]settings{}
	for _, w := range req.Wants {
		if req.Mode == "firewalld" && w.Kind == VIPPort {
			continue
		}
		zo, ok := zones[w.Iface]
		if !ok {
			zo.zone, zo.isDefault, zo.err = c.ZoneOfInterface(ctx, w.Iface)
			zones[w.Iface] = zo
		}
		ch := Checked{Want: w, Zone: zo.zone, DefaultZone: zo.isDefault, Err: zo.err}
		if zo.err == nil {
			st, ok := read[zo.zone]
			if !ok {
				st.z, st.err = c.Zone(ctx, zo.zone)
				if st.err == nil {
					// A service firewalld cannot describe is left out of
					// the map; ZoneAllows then says "unknown" for a port
					// only it might open. A refusal is not that.
					var err error
					st.svcs, err = c.Services(ctx, st.z)
					if err != nil && IsNotAuthorized(err) {
						st.err = err
					}
				}
				read[zo.zone] = st
			}
			if st.err != nil && IsNotAuthorized(st.err) {
				return in, fmt.Errorf("%w: %w", ErrNotAuthorized, st.err)
			}
			if st.err != nil {
				ch.Err = st.err
			} else {
				ch.Verdict = ZoneAllows(st.z, st.svcs, w.Port, protoOr(w.Proto))
			}
		}
		in.Checked = append(in.Checked, ch)
	}
	for _, w := range req.Wants {
		if w.Kind == Health || w.Kind == AgentCheck {
			st, def, err := c.ServiceStateOf(ctx, ServiceName)
			if err != nil && IsNotAuthorized(err) {
				return in, fmt.Errorf("%w: %w", ErrNotAuthorized, err)
			}
			// Another error: leave it absent, so the fix is --add-port,
			// which works whatever firewalld knows.
			in.Service, in.ServiceDef = st, def
			break
		}
	}
	if req.Mode == "firewalld" {
		r, err := c.AcceptsRedirects(ctx)
		if err != nil {
			in.RedirectsErr = err
		} else {
			in.Redirects = &r
		}
	}
	return in, nil
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
		case ch.Verdict.Status == Open:
			// Nothing to say: status lists differences only.
		case ch.Verdict.Status == Unknown:
			out = append(out, Finding{Warning, subject,
				fmt.Sprintf("%s may not let it in (%s); check it or open it explicitly", where, ch.Verdict.How),
				fixLines(ch, in.Service, in.ServiceDef)})
		default:
			out = append(out, Finding{Warning, subject,
				fmt.Sprintf("%s does not let it in: %s", where, consequence(ch.Kind)),
				fixLines(ch, in.Service, in.ServiceDef)})
		}
	}
	if in.Mode == "firewalld" {
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

func protoOr(p string) string {
	if p == "" {
		return "tcp"
	}
	return strings.ToLower(p)
}

// Check is the one call for validate and status: connect to the system bus,
// ask firewalld about req, and return the findings. A host without a system
// bus or without firewalld has nothing to report (nil, nil). An error is
// either ErrNotAuthorized (print it once: run as root) or a bus that exists
// but fails; callers report it as a warning, not as drift.
func Check(ctx context.Context, req Request) ([]Finding, error) {
	c, err := Connect(ctx)
	if err != nil {
		if noBus(err) {
			return nil, nil
		}
		return nil, err
	}
	defer c.Close()
	in, err := Gather(ctx, c, req)
	if err != nil {
		return nil, err
	}
	return Findings(in), nil
}

// noBus: no system bus socket, or nobody listening on it (a container or a
// minimal host): then there is no firewalld either.
func noBus(err error) bool {
	return errors.Is(err, syscall.ENOENT) || errors.Is(err, syscall.ECONNREFUSED)
}
