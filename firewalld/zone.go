package firewalld

import (
	"fmt"
	"sort"
	"strconv"
	"strings"

	"github.com/godbus/dbus/v5"
)

// PortProto is one entry of a zone's or service's port list: Port is "80"
// or a range "8000-8100", Proto "tcp", "udp", "sctp" or "dccp".
type PortProto struct {
	Port  string
	Proto string
}

// Zone is the part of a zone's runtime settings that decides whether a new
// connection to a port is let in.
type Zone struct {
	Name string
	// Target is what happens to packets no rule of the zone accepts:
	// "default" (reject, ICMP allowed), "ACCEPT", "%%REJECT%%" or "DROP".
	Target     string
	Services   []string
	Ports      []PortProto
	Protocols  []string // whole protocols let in ("tcp" opens every TCP port)
	RichRules  []string
	Sources    []string
	Interfaces []string
}

// Service is the part of a service definition that opens ports.
type Service struct {
	Name        string
	Ports       []PortProto
	Protocols   []string
	Destination map[string]string // "ipv4"/"ipv6" -> address: the service only opens that destination
	Includes    []string
}

// Status is the answer to "does the zone let this port in".
type Status int

const (
	// Closed: no port, service, protocol or target of the zone lets it in.
	Closed Status = iota
	// Open: the zone lets it in (How says by what).
	Open
	// Unknown: not decided by what this package evaluates (a rich rule may
	// open or close it, a service opens it for one destination only).
	Unknown
)

func (s Status) String() string {
	switch s {
	case Open:
		return "open"
	case Closed:
		return "closed"
	default:
		return "unknown"
	}
}

// Admission is Status with the reason: "port 80/tcp", "service dsr-agent",
// "target ACCEPT", "rich rules not evaluated".
type Admission struct {
	Status Status
	How    string
}

// ZoneAllows decides, from a zone's runtime settings and the definitions of
// its services, whether a new connection to port/proto is let in. Pure: the
// rules follow firewalld's own order of precedence for what is evaluated
// (zone ports, protocols and services accept; the target applies last).
func ZoneAllows(z Zone, services map[string]Service, port uint16, proto string) Admission {
	proto = strings.ToLower(proto)
	if proto == "" {
		proto = "tcp"
	}
	if pp, ok := matchPorts(z.Ports, port, proto); ok {
		return Admission{Open, "port " + pp.Port + "/" + pp.Proto}
	}
	if contains(z.Protocols, proto) {
		return Admission{Open, "protocol " + proto}
	}
	var partial []string
	for _, name := range z.Services {
		s, ok := services[name]
		if !ok {
			// Not described (firewalld could not tell us): cannot decide
			// from it, but a later service or the target still may.
			partial = append(partial, "service "+name+" not readable")
			continue
		}
		if by, ok := serviceOpens(s, services, port, proto, 0); ok {
			if len(s.Destination) > 0 {
				partial = append(partial, "service "+by+" opens it only for destination "+destinations(s.Destination))
				continue
			}
			return Admission{Open, "service " + by}
		}
	}
	if strings.EqualFold(z.Target, "ACCEPT") {
		return Admission{Open, "zone target ACCEPT"}
	}
	if len(z.RichRules) > 0 {
		partial = append(partial, fmt.Sprintf("%d rich rule(s) not evaluated", len(z.RichRules)))
	}
	if len(partial) > 0 {
		return Admission{Unknown, strings.Join(partial, "; ")}
	}
	return Admission{Closed, "not in the ports or services of zone " + z.Name + " (target " + z.Target + ")"}
}

// serviceOpens follows includes (bounded: includes may form a loop).
func serviceOpens(s Service, all map[string]Service, port uint16, proto string, depth int) (string, bool) {
	if _, ok := matchPorts(s.Ports, port, proto); ok {
		return s.Name, true
	}
	if contains(s.Protocols, proto) {
		return s.Name, true
	}
	if depth >= maxIncludeDepth {
		return "", false
	}
	for _, inc := range s.Includes {
		if is, ok := all[inc]; ok {
			if by, ok := serviceOpens(is, all, port, proto, depth+1); ok {
				return s.Name + " (includes " + by + ")", true
			}
		}
	}
	return "", false
}

func matchPorts(list []PortProto, port uint16, proto string) (PortProto, bool) {
	for _, pp := range list {
		if !strings.EqualFold(pp.Proto, proto) {
			continue
		}
		lo, hi, err := portRange(pp.Port)
		if err != nil {
			continue // firewalld validated it; an unreadable entry opens nothing we can prove
		}
		if port >= lo && port <= hi {
			return pp, true
		}
	}
	return PortProto{}, false
}

// portRange reads "80" or "8000-8100" (firewalld's port syntax).
func portRange(s string) (uint16, uint16, error) {
	a, b, isRange := strings.Cut(s, "-")
	lo, err := strconv.ParseUint(strings.TrimSpace(a), 10, 16)
	if err != nil {
		return 0, 0, fmt.Errorf("port %q: %w", s, err)
	}
	hi := lo
	if isRange {
		hi, err = strconv.ParseUint(strings.TrimSpace(b), 10, 16)
		if err != nil {
			return 0, 0, fmt.Errorf("port range %q: %w", s, err)
		}
	}
	return uint16(lo), uint16(hi), nil
}

func contains(list []string, s string) bool {
	for _, x := range list {
		if strings.EqualFold(x, s) {
			return true
		}
	}
	return false
}

func destinations(m map[string]string) string {
	var out []string
	for k, v := range m {
		out = append(out, k+" "+v)
	}
	sort.Strings(out)
	return strings.Join(out, ", ")
}

// zoneFromDict decodes getZoneSettings2's a{sv}. firewalld leaves out keys
// whose value is empty, so a missing key is an empty list, not an error; a
// key of the wrong type is an error (a firewalld we do not understand).
func zoneFromDict(name string, m map[string]dbus.Variant) (Zone, error) {
	z := Zone{Name: name}
	var err error
	if z.Target, err = dictString(m, "target"); err != nil {
		return Zone{}, err
	}
	if z.Target == "" {
		z.Target = "default"
	}
	if z.Services, err = dictStrings(m, "services"); err != nil {
		return Zone{}, err
	}
	if z.Ports, err = dictPorts(m, "ports"); err != nil {
		return Zone{}, err
	}
	if z.Protocols, err = dictStrings(m, "protocols"); err != nil {
		return Zone{}, err
	}
	if z.RichRules, err = dictStrings(m, "rules_str"); err != nil {
		return Zone{}, err
	}
	if z.Sources, err = dictStrings(m, "sources"); err != nil {
		return Zone{}, err
	}
	if z.Interfaces, err = dictStrings(m, "interfaces"); err != nil {
		return Zone{}, err
	}
	return z, nil
}

// serviceFromDict decodes getServiceSettings2's a{sv}.
func serviceFromDict(name string, m map[string]dbus.Variant) (Service, error) {
	s := Service{Name: name}
	var err error
	if s.Ports, err = dictPorts(m, "ports"); err != nil {
		return Service{}, err
	}
	if s.Protocols, err = dictStrings(m, "protocols"); err != nil {
		return Service{}, err
	}
	if s.Includes, err = dictStrings(m, "includes"); err != nil {
		return Service{}, err
	}
	if v, ok := m["destination"]; ok {
		if err := v.Store(&s.Destination); err != nil {
			return Service{}, fmt.Errorf("destination: %s: %w", v.Signature(), err)
		}
	}
	return s, nil
}

func dictString(m map[string]dbus.Variant, key string) (string, error) {
	v, ok := m[key]
	if !ok {
		return "", nil
	}
	var s string
	if err := v.Store(&s); err != nil {
		return "", fmt.Errorf("%s: %s: %w", key, v.Signature(), err)
	}
	return s, nil
}

func dictStrings(m map[string]dbus.Variant, key string) ([]string, error) {
	v, ok := m[key]
	if !ok {
		return nil, nil
	}
	var s []string
	if err := v.Store(&s); err != nil {
		return nil, fmt.Errorf("%s: %s: %w", key, v.Signature(), err)
	}
	return s, nil
}

// dictPorts decodes a(ss): D-Bus structs arrive as []any of two strings.
func dictPorts(m map[string]dbus.Variant, key string) ([]PortProto, error) {
	v, ok := m[key]
	if !ok {
		return nil, nil
	}
	var raw [][]any
	if err := v.Store(&raw); err != nil {
		return nil, fmt.Errorf("%s: %s: %w", key, v.Signature(), err)
	}
	out := make([]PortProto, 0, len(raw))
	for i, r := range raw {
		if len(r) != 2 {
			return nil, fmt.Errorf("%s[%d]: %d fields, want 2 (port, protocol)", key, i, len(r))
		}
		p, ok1 := r[0].(string)
		pr, ok2 := r[1].(string)
		if !ok1 || !ok2 {
			return nil, fmt.Errorf("%s[%d]: %T, %T, want two strings", key, i, r[0], r[1])
		}
		out = append(out, PortProto{Port: p, Proto: pr})
	}
	return out, nil
}
