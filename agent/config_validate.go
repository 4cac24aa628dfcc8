package agent

import (
	"fmt"
	"net/netip"
	"strings"

	"github.com/dsr-agent/dsr-agent/anyip"
)

func (raw *rawConfig) validate() (*Config, error) {
	var errs fieldErrors
	cfg := &Config{Mode: Mode(raw.Mode)}
	switch cfg.Mode {
	case "":
		cfg.Mode = ModeLoopback
	case ModeLoopback, ModeARPTables, ModeFirewalld, ModeTunnel:
	default:
		errs.add("mode", raw.Mode, "loopback, arptables, firewalld or tunnel")
	}
	switch {
	case raw.Tunnel != nil && cfg.Mode == ModeTunnel:
		cfg.Tunnel = raw.Tunnel.validate(&errs)
	case raw.Tunnel != nil:
		errs.add("tunnel", "", "a tunnel section only with mode: tunnel (mode is "+string(cfg.Mode)+")")
	case cfg.Mode == ModeTunnel:
		cfg.Tunnel = (&rawTunnel{}).validate(&errs)
	}
	seenIf := map[string]bool{}
	for i, name := range raw.Interfaces {
		field := fmt.Sprintf("interfaces[%d]", i)
		switch {
		case !validIfName(name):
			errs.add(field, name, "an interface name (1-15 characters, no '/', whitespace or ':')")
		case name == "lo":
			errs.add(field, name, "an LB-facing NIC, not lo (VIPs go on lo by themselves in loopback mode)")
		case seenIf[name]:
			errs.add(field, name, "each interface listed once")
		}
		seenIf[name] = true
		cfg.Interfaces = append(cfg.Interfaces, name)
	}
	own := ownTCPPorts(raw.Health)
	var rawVIPs []rawVIP
	seenVIP := map[netip.Addr]string{}
	if raw.VIPs == nil {
		errs.add("vips", "", "a list of VIPs (write `vips: []` for none)")
	} else {
		rawVIPs = *raw.VIPs
	}
	var prefixField []string
	for i, rv := range rawVIPs {
		if rv.Prefix != "" {
			p, ok := rv.validatePrefix(fmt.Sprintf("vips[%d]", i), cfg.Mode, &errs)
			if ok {
				cfg.Prefixes = append(cfg.Prefixes, p)
				prefixField = append(prefixField, fmt.Sprintf("vips[%d]", i))
				if cfg.Mode == ModeFirewalld {
					checkRedirectsSpareHealth(fmt.Sprintf("vips[%d]", i), VIP{Ports: p.Ports}, rv, own, &errs)
				}
			}
			continue
		}
		v, ok := rv.validate(fmt.Sprintf("vips[%d]", i), cfg.Mode, &errs)
		if !ok {
			continue
		}
		if prev, dup := seenVIP[v.Address]; dup {
			errs.add(fmt.Sprintf("vips[%d].address", i), rv.Address, "each VIP listed once (also at "+prev+")")
			continue
		}
		seenVIP[v.Address] = fmt.Sprintf("vips[%d]", i)
		cfg.VIPs = append(cfg.VIPs, v)
		if cfg.Mode == ModeFirewalld {
			checkRedirectsSpareHealth(fmt.Sprintf("vips[%d]", i), v, rv, own, &errs)
		}
	}
	checkOverlaps(cfg, prefixField, seenVIP, &errs)
	cfg.prefixFields = prefixField
	if raw.Health != nil {
		cfg.Health = raw.Health.validate(&errs)
		checkListeners(cfg, seenVIP, &errs)
	}
	if raw.ReturnVia != nil {
		vips := map[netip.Addr]bool{}
		for _, v := range cfg.VIPs {
			vips[v.Address] = true
		}
		cfg.ReturnVia = raw.ReturnVia.validate(vips, &errs)
		for _, gw := range []struct {
			field string
			a     netip.Addr
		}{{"return_via.gateway", cfg.ReturnVia.Gateway}, {"return_via.gateway6", cfg.ReturnVia.Gateway6}} {
			if p := prefixOf(cfg, gw.a); gw.a.IsValid() && p != "" {
				errs.add(gw.field, gw.a.String(), "the load balancer's own address, not an address of prefix VIP "+p)
			}
		}
		for i, p := range cfg.ReturnVia.Ports {
			if l, ok := own[p.Port]; ok && p.Protocol == TCP {
				errs.add(fmt.Sprintf("return_via.ports[%d].port", i), fmt.Sprint(p.Port),
					"a service port other than that of "+l+": its rule would send the replies of dsr-agent's own listener via the L7 load balancer, "+
						"and the director's health checks from the LB-facing segment would time out")
			}
		}
		if raw.VIPs != nil && len(*raw.VIPs) == 0 {
			errs.add("return_via", "", "no return_via with `vips: []` (an empty VIP list plans nothing at all; list the VIPs or drop return_via)")
		}
	}
	if err := errs.err(); err != nil {
		return nil, err
	}
	return cfg, nil
}

// ownTCPPorts are the ports dsr-agent's own TCP listeners serve (the health
// endpoint, default port included, and the agent check), each with the
// field and value that set it: a setting that routes or redirects those
// ports breaks the director's view of this host.
func ownTCPPorts(rh *rawHealth) map[uint16]string {
	own := map[uint16]string{}
	if rh == nil {
		return own
	}
	if rh.Listen == "" {
		own[DefaultHealthPort] = fmt.Sprintf("health.listen (default port %d)", DefaultHealthPort)
	} else if ap, err := netip.ParseAddrPort(rh.Listen); err == nil {
		own[ap.Port()] = fmt.Sprintf("health.listen %q", rh.Listen)
	}
	if rh.AgentCheck != nil {
		if ap, err := netip.ParseAddrPort(rh.AgentCheck.Listen); err == nil {
			if _, dup := own[ap.Port()]; !dup {
				own[ap.Port()] = fmt.Sprintf("health.agent_check.listen %q", rh.AgentCheck.Listen)
			}
		}
	}
	return own
}

// checkRedirectsSpareHealth rejects a firewalld-mode redirect whose local
// port is one of dsr-agent's own TCP listeners: the VIP's clients would be
// handed to the health server (the redirect goes to the incoming
// interface's primary address, where health listens). A VIP port equal to
// a health port is refused too, though the nat map is keyed on the VIP (the
// director's checks of the host's own address never match it): the port
// then means dsr-agent on one address and the service on the VIP, and a
// check or a firewall rule written for one takes the other.
func checkRedirectsSpareHealth(field string, v VIP, rv rawVIP, own map[uint16]string, errs *fieldErrors) {
	for j, p := range v.Ports {
		if l, ok := own[p.Port]; ok && p.Protocol == TCP && p.ToPort != p.Port {
			errs.add(fmt.Sprintf("%s.ports[%d].port", field, j), fmt.Sprint(p.Port),
				"a VIP port other than that of "+l+": in firewalld mode the port is redirected on this host, so it would mean dsr-agent's listener on the host's address and the service on the VIP")
		}
		l, ok := own[p.ToPort]
		if !ok || p.Protocol != TCP || p.ToPort == 0 {
			continue
		}
		pf, expected := fmt.Sprintf("%s.ports[%d].to_port", field, j), "a local port other than that of "+l
		if j < len(rv.Ports) && rv.Ports[j].ToPort == nil {
			pf, expected = fmt.Sprintf("%s.ports[%d].port", field, j), "a to_port other than that of "+l+" (to_port defaults to port)"
		}
		errs.add(pf, fmt.Sprint(p.ToPort), expected+": the redirect would hand the VIP's clients to dsr-agent's own listener")
	}
}

// checkListeners rejects health and agent-check addresses the director
// could not use: the health endpoint answers for this host, so it must be
// the host's own address, never a VIP (every real server would claim it) or
// the wildcard; and the two listeners cannot share an address.
func checkListeners(cfg *Config, vipField map[netip.Addr]string, errs *fieldErrors) {
	check := func(field, s string) netip.AddrPort {
		ap, err := netip.ParseAddrPort(s)
		if err != nil {
			return netip.AddrPort{} // reported by the field's own parse
		}
		switch a := ap.Addr().Unmap(); {
		case a.IsUnspecified():
			errs.add(field, s, "the host's own IP (the director's heartbeat target), not the wildcard")
		case prefixOf(cfg, a) != "":
			errs.add(field, s, "the host's own IP, not an address of prefix VIP "+prefixOf(cfg, a)+" (every real server has it; the director would reach any of them)")
		case vipField[a] != "":
			errs.add(field, s, "the host's own IP, not a VIP (every real server has the VIP; the director would reach any of them)")
			// Name the VIP's own place too: with drop-ins it is often the
			// other file that is wrong.
			errs.add(vipField[a]+".address", a.String(), "a VIP that is not "+field+" (the host's own address)")
		case a.IsMulticast() || a == netip.AddrFrom4([4]byte{255, 255, 255, 255}):
			errs.add(field, s, "a unicast IP of this host")
		case ap.Port() == 0:
			errs.add(field, s, "ip:port with a port 1-65535")
		}
		return ap
	}
	h := cfg.Health
	health := check("health.listen", h.Listen)
	if h.AgentCheck != nil {
		agentAddr := check("health.agent_check.listen", h.AgentCheck.Listen)
		if agentAddr.IsValid() && agentAddr == health {
			errs.add("health.agent_check.listen", h.AgentCheck.Listen, "an ip:port other than health.listen (both listeners cannot bind it)")
		}
	}
}

// prefixOf is the configured prefix that holds a ("" none).
func prefixOf(cfg *Config, a netip.Addr) string {
	for _, p := range cfg.Prefixes {
		if p.Prefix.Contains(a) {
			return p.Prefix.String()
		}
	}
	return ""
}

func validIfName(s string) bool {
	return len(s) >= 1 && len(s) <= 15 && s != "." && s != ".." && !strings.ContainsAny(s, "/: \t\n")
}

func (rv *rawVIP) validate(field string, mode Mode, errs *fieldErrors) (VIP, bool) {
	var v VIP
	ok := true
	addr, err := parseHostAddr(rv.Address)
	if err != nil {
		errs.add(field+".address", rv.Address, err.Error())
		ok = false
	}
	v.Address = addr
	if rv.RealIP != "" {
		real, err := netip.ParseAddr(rv.RealIP)
		switch {
		case err != nil || !real.Is4():
			errs.add(field+".real_ip", rv.RealIP, "an IPv4 address of this host")
			ok = false
		case mode != ModeARPTables:
			errs.add(field+".real_ip", rv.RealIP, "real_ip only in arptables mode")
			ok = false
		case addr.IsValid() && !addr.Is4():
			errs.add(field+".real_ip", rv.RealIP, "real_ip only for IPv4 VIPs (ARP is IPv4)")
			ok = false
		}
		v.RealIP = real
	}
	ports, pok := rv.validatePorts(field, mode, errs)
	v.Ports = ports
	return v, ok && pok
}

// validatePorts is the ports of an entry, `address:` or `prefix:` alike.
func (rv *rawVIP) validatePorts(field string, mode Mode, errs *fieldErrors) ([]Port, bool) {
	var ports []Port
	ok := true
	if mode == ModeFirewalld && len(rv.Ports) == 0 {
		errs.add(field+".ports", "", "at least one port in firewalld mode (packets are redirected per port)")
		ok = false
	}
	seen := map[string]bool{}
	for j, rp := range rv.Ports {
		pf := fmt.Sprintf("%s.ports[%d]", field, j)
		p := Port{Protocol: Protocol(rp.Protocol)}
		if p.Protocol == "" {
			p.Protocol = TCP
		}
		if p.Protocol != TCP && p.Protocol != UDP {
			errs.add(pf+".protocol", rp.Protocol, "tcp or udp")
			ok = false
		}
		if rp.Port == nil {
			errs.add(pf+".port", "", "a port number 1-65535")
			ok = false
		} else if n, good := rp.Port.value(errs, pf+".port", 0, 1, 65535, "a port number 1-65535"); good {
			p.Port = uint16(n)
			p.ToPort = p.Port
		} else {
			ok = false
		}
		if n, good := rp.ToPort.value(errs, pf+".to_port", int(p.Port), 1, 65535, "a port number 1-65535"); good {
			p.ToPort = uint16(n)
		} else {
			ok = false
		}
		key := fmt.Sprintf("%s/%d", p.Protocol, p.Port)
		if p.Port != 0 && seen[key] {
			errs.add(pf, key, "each protocol/port listed once per VIP")
			ok = false
		}
		seen[key] = true
		ports = append(ports, p)
	}
	return ports, ok
}

// validatePrefix is a `prefix:` entry: a whole prefix served as VIPs
// (AnyIP). Its overlaps with the other entries are checkOverlaps', with the
// host's subnets and gateways checkPrefixes'.
func (rv *rawVIP) validatePrefix(field string, mode Mode, errs *fieldErrors) (PrefixVIP, bool) {
	var v PrefixVIP
	ok := true
	if rv.Address != "" {
		errs.add(field+".address", rv.Address, "either address or prefix in one entry, not both (prefix is "+rv.Prefix+")")
		ok = false
	}
	if rv.RealIP != "" {
		errs.add(field+".real_ip", rv.RealIP, "real_ip only with address (a prefix's ARP is dropped, never rewritten)")
		ok = false
	}
	p, err := anyip.ParsePrefix(rv.Prefix)
	if err != nil {
		errs.add(field+".prefix", rv.Prefix, err.Error())
		ok = false
	}
	v.Prefix = p
	ports, pok := rv.validatePorts(field, mode, errs)
	v.Ports = ports
	return v, ok && pok
}

// checkOverlaps refuses a prefix that overlaps another prefix or holds a
// single VIP: the same address twice, with two sets of ports and two owners
// in the kernel (a /32 on lo and a local route), removing one of which
// would take the other's address away or leave it.
func checkOverlaps(cfg *Config, prefixField []string, vipField map[netip.Addr]string, errs *fieldErrors) {
	for i, p := range cfg.Prefixes {
		for j := range i {
			if q := cfg.Prefixes[j].Prefix; p.Prefix.Overlaps(q) {
				errs.add(prefixField[i]+".prefix", p.Prefix.String(), "a prefix that overlaps no other VIP ("+prefixField[j]+".prefix "+q.String()+" overlaps it)")
			}
		}
		for _, v := range cfg.VIPs {
			if p.Prefix.Contains(v.Address) {
				errs.add(prefixField[i]+".prefix", p.Prefix.String(), "a prefix that overlaps no other VIP ("+vipField[v.Address]+".address "+v.Address.String()+" is inside it: drop it, the prefix serves it)")
			}
		}
	}
}
