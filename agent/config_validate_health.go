package agent

import (
	"errors"
	"fmt"
	"net"
	"net/netip"
	"strconv"
	"strings"
	"time"
)

// Validation of the health section (listeners, checks, the agent-check
// weight) and the host:port parsing it needs.

// parseHostAddr accepts one unicast address a host can serve: not a
// network, not loopback, multicast, link-local, unspecified or broadcast.
func parseHostAddr(s string) (netip.Addr, error) {
	if s == "" {
		return netip.Addr{}, errors.New("an IPv4 or IPv6 host address (required)")
	}
	if strings.Contains(s, "/") {
		p, err := netip.ParsePrefix(s)
		if err != nil || !p.IsSingleIP() {
			return netip.Addr{}, errors.New("a single host address, not a network (write 192.0.2.10, not a prefix)")
		}
		s = p.Addr().String()
	}
	a, err := netip.ParseAddr(s)
	if err != nil {
		return netip.Addr{}, errors.New("an IPv4 or IPv6 host address")
	}
	switch {
	case a.Zone() != "":
		return a, errors.New("a global address without a zone")
	case a.Is4In6():
		return a, errors.New("a plain IPv4 address, not IPv4-mapped IPv6")
	case a.IsUnspecified(), a.IsLoopback(), a.IsMulticast(), a.IsLinkLocalUnicast():
		return a, errors.New("a unicast host address (not unspecified, loopback, multicast or link-local)")
	case a == netip.AddrFrom4([4]byte{255, 255, 255, 255}):
		return a, errors.New("a unicast host address, not broadcast")
	case a.Is4() && (a.As4()[0] == 0 || a.As4()[0] >= 240):
		return a, errors.New("a usable unicast address (not in 0.0.0.0/8 or the reserved 240.0.0.0/4)")
	}
	return a, nil
}

func (rh *rawHealth) validate(errs *fieldErrors) *HealthConfig {
	h := &HealthConfig{Listen: rh.Listen, ListenerGrace: DefaultListenerGrace}
	if rh.ListenerGrace != nil {
		d, err := time.ParseDuration(*rh.ListenerGrace)
		if err != nil || d < 0 {
			errs.add("health.listener_grace", *rh.ListenerGrace, "a duration such as 30s or 2m (0: report a missing listener at once)")
		} else {
			h.ListenerGrace = d
		}
	}
	if rh.Listen != "" {
		if _, err := netip.ParseAddrPort(rh.Listen); err != nil {
			errs.add("health.listen", rh.Listen, "ip:port of this host (e.g. 192.0.2.21:8558 or [2001:db8::21]:8558)")
		}
	}
	for i, s := range rh.AllowedSources {
		field := fmt.Sprintf("health.allowed_sources[%d]", i)
		var p netip.Prefix
		var err error
		if strings.Contains(s, "/") {
			p, err = netip.ParsePrefix(s)
		} else {
			var a netip.Addr
			a, err = netip.ParseAddr(s)
			p = netip.PrefixFrom(a, a.BitLen())
		}
		if err != nil {
			errs.add(field, s, "an address or CIDR prefix")
			continue
		}
		h.AllowedSources = append(h.AllowedSources, p.Masked())
	}
	names := map[string]bool{}
	for i, rc := range rh.Checks {
		c := rc.validate(fmt.Sprintf("health.checks[%d]", i), errs)
		if c.Name != "" && names[c.Name] {
			errs.add(fmt.Sprintf("health.checks[%d].name", i), c.Name, "a unique check name")
		}
		names[c.Name] = true
		h.Checks = append(h.Checks, c)
	}
	if rh.AgentCheck != nil {
		if _, err := netip.ParseAddrPort(rh.AgentCheck.Listen); err != nil {
			errs.add("health.agent_check.listen", rh.AgentCheck.Listen, "ip:port for the HAProxy agent-check listener")
		}
		h.AgentCheck = &AgentCheckConfig{Listen: rh.AgentCheck.Listen}
		if rh.AgentCheck.Weight != nil {
			h.AgentCheck.Weight = rh.AgentCheck.Weight.validate("health.agent_check.weight", h.Checks, errs)
		}
	}
	return h
}

func (rw *rawWeight) validate(field string, checks []CheckConfig, errs *fieldErrors) *WeightConfig {
	w := &WeightConfig{
		CPU:       rw.CPU.value(errs, field+".cpu", false),
		Load:      rw.Load.value(errs, field+".load", false),
		Smoothing: DefaultWeightSmoothing,
	}
	w.Connections, _ = rw.Connections.value(errs, field+".connections", 0, 0, 10_000_000,
		"a whole number of established connections at which the weight reaches its floor (0: off)")
	w.Min, _ = rw.Min.value(errs, field+".min", DefaultWeightMin, 0, 100, "a whole percentage 0..100")
	if rw.Smoothing != nil {
		d, err := time.ParseDuration(*rw.Smoothing)
		if err != nil || d < 0 || d > time.Hour {
			errs.add(field+".smoothing", *rw.Smoothing, "a duration 0s..1h (the moving average's time constant; 0s: none)")
		} else {
			w.Smoothing = d
		}
	}
	if rw.Exec != "" {
		found := false
		for _, c := range checks {
			if c.Name == rw.Exec && c.Kind == CheckExec {
				found = true
			}
		}
		if !found {
			errs.add(field+".exec", rw.Exec, "the name of an exec check in health.checks")
		}
		w.Exec = rw.Exec
	}
	if !w.CPU && !w.Load && w.Connections == 0 && rw.Exec == "" {
		errs.add(field, "{}", "at least one of cpu: true, load: true, connections: N, exec: CHECK")
	}
	return w
}

// splitHostPort is net.SplitHostPort (brackets, zones) with a host and a
// port 1-65535 required.
func splitHostPort(s string) (string, int, error) {
	host, p, err := net.SplitHostPort(s)
	if err != nil {
		return "", 0, err
	}
	if host == "" {
		return "", 0, errors.New("no host")
	}
	port, err := strconv.Atoi(p)
	if err != nil || port < 1 || port > 65535 {
		return "", 0, errors.New("bad port")
	}
	return host, port, nil
}
