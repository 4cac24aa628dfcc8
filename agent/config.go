package agent

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"net/netip"
	"os"
	"regexp"
	"strconv"
	"strings"
	"time"

	"go.yaml.in/yaml/v3"
)

// ErrInvalidConfig marks every config error; the CLI maps it to exit 2.
var ErrInvalidConfig = errors.New("invalid config")

// ErrHostMismatch additionally marks config errors that depend on the host
// (an interface missing, no default route): at boot the daemon waits for
// the host to catch up instead of giving up.
var ErrHostMismatch = errors.New("config does not match this host")

// Mode selects how the host is kept from answering ARP for its VIPs.
type Mode string

const (
	ModeLoopback  Mode = "loopback"
	ModeARPTables Mode = "arptables"
	ModeFirewalld Mode = "firewalld"
)

// Config is a validated configuration.
type Config struct {
	Mode Mode
	// Interfaces are the LB-facing NICs; empty until Host.Validate resolves
	// the default (the interface of the default route).
	Interfaces []string
	VIPs       []VIP
	Health     *HealthConfig
}

// VIP is one virtual address and the ports served on it.
type VIP struct {
	Address netip.Addr
	// RealIP is the sender address ARP from this VIP is rewritten to in
	// arptables mode; invalid (zero) means the NIC's primary IPv4.
	RealIP netip.Addr
	Ports  []Port
}

// Port is one service port; ToPort is the local port in firewalld mode.
type Port struct {
	Port     uint16
	Protocol string // "tcp" or "udp"
	ToPort   uint16
}

// HealthConfig configures the daemon's health endpoint.
type HealthConfig struct {
	// Listen is "ip:port"; Host.Validate fills the default (first IPv4 of the
	// first interface, port DefaultHealthPort).
	Listen         string
	AllowedSources []netip.Prefix
	Checks         []CheckConfig
	AgentCheck     *AgentCheckConfig
}

// CheckConfig is one local service check.
type CheckConfig struct {
	Name         string
	TCP          string // host:port to connect to
	HTTP         string // URL to GET
	ExpectStatus int
	Interval     time.Duration
	Timeout      time.Duration
	Rise, Fall   int
}

// AgentCheckConfig enables the HAProxy agent-check listener.
type AgentCheckConfig struct {
	Listen string
}

// Defaults.
const (
	DefaultHealthPort    = 8558
	defaultCheckInterval = 2 * time.Second
	defaultCheckTimeout  = time.Second
	defaultRise          = 2
	defaultFall          = 3
)

// The raw YAML shapes. Strings are parsed by hand so errors can name the
// field and the value; KnownFields rejects unknown keys.
type rawConfig struct {
	Mode       string   `yaml:"mode"`
	Interfaces []string `yaml:"interfaces"`
	// VIPs is a pointer so a missing key can be told from an explicit
	// `vips: []`: only the latter means "no VIPs".
	VIPs   *[]rawVIP  `yaml:"vips"`
	Health *rawHealth `yaml:"health"`
}

func (raw *rawConfig) empty() bool {
	return raw.Mode == "" && raw.Interfaces == nil && raw.VIPs == nil && raw.Health == nil
}

type rawVIP struct {
	Address string    `yaml:"address"`
	RealIP  string    `yaml:"real_ip"`
	Ports   []rawPort `yaml:"ports"`
}

type rawPort struct {
	Port     *strictInt `yaml:"port"`
	Protocol string     `yaml:"protocol"`
	ToPort   *strictInt `yaml:"to_port"`
}

// strictInt is a YAML integer and nothing else: yaml.v3 would truncate
// `port: 80.9` to 80 without a word. Decoding never fails; validate reports
// a non-integer with the field's name.
type strictInt struct {
	n   int
	raw string
	ok  bool
}

func (i *strictInt) UnmarshalYAML(n *yaml.Node) error {
	i.raw = n.Value
	if n.Kind != yaml.ScalarNode || n.ShortTag() != "!!int" {
		return nil
	}
	v, err := strconv.ParseInt(n.Value, 0, 32)
	i.n, i.ok = int(v), err == nil
	return nil
}

// value returns the integer, or adds an error naming field when it is not a
// whole number in [lo, hi]. A nil (absent) field returns def.
func (i *strictInt) value(errs *fieldErrors, field string, def, lo, hi int, expected string) (int, bool) {
	if i == nil {
		return def, true
	}
	if !i.ok || i.n < lo || i.n > hi {
		errs.add(field, i.raw, expected)
		return def, false
	}
	return i.n, true
}

type rawHealth struct {
	Listen         string         `yaml:"listen"`
	AllowedSources []string       `yaml:"allowed_sources"`
	Checks         []rawCheck     `yaml:"checks"`
	AgentCheck     *rawAgentCheck `yaml:"agent_check"`
}

type rawCheck struct {
	Name         string     `yaml:"name"`
	TCP          string     `yaml:"tcp"`
	HTTP         string     `yaml:"http"`
	ExpectStatus *strictInt `yaml:"expect_status"`
	Interval     string     `yaml:"interval"`
	Timeout      string     `yaml:"timeout"`
	Rise         *strictInt `yaml:"rise"`
	Fall         *strictInt `yaml:"fall"`
}

type rawAgentCheck struct {
	Listen string `yaml:"listen"`
}

// LoadConfig reads and validates the config file. It touches nothing on the
// host; checks that need the host (interfaces, its addresses) are in
// Host.Validate.
func LoadConfig(path string) (*Config, error) {
	data, err := readCapped(path, MaxConfigSize)
	if err != nil {
		return nil, fmt.Errorf("%w: %w", ErrInvalidConfig, err)
	}
	cfg, err := ParseConfig(data)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	return cfg, nil
}

// MaxConfigSize bounds what is read of a config file: a real one is a few
// kilobytes, and a huge invalid one must not cost a gigabyte of memory and a
// million error lines.
const MaxConfigSize = 1 << 20

func readCapped(path string, limit int64) ([]byte, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("read %s: %w", path, err)
	}
	defer f.Close()
	data, err := io.ReadAll(io.LimitReader(f, limit+1))
	if err != nil {
		return nil, fmt.Errorf("read %s: %w", path, err)
	}
	if int64(len(data)) > limit {
		return nil, fmt.Errorf("%s: larger than %d KiB: expected a config file (a few KiB)", path, limit>>10)
	}
	return data, nil
}

// yamlKeyErr rewrites yaml.v3's "field x not found in type agent.rawVIP".
var yamlKeyErr = regexp.MustCompile(`field (\S+) not found in type agent\.raw(\w+)`)

var knownKeys = map[string]string{
	"Config":     "mode, interfaces, vips, health",
	"VIP":        "address, real_ip, ports",
	"Port":       "port, protocol, to_port",
	"Health":     "listen, allowed_sources, checks, agent_check",
	"Check":      "name, tcp, http, expect_status, interval, timeout, rise, fall",
	"AgentCheck": "listen",
}

// yamlTypeErr matches yaml.v3's "cannot unmarshal !!str `http` into int".
var yamlTypeErr = regexp.MustCompile("cannot unmarshal !!(\\w+)(?: `([^`]*)`)? into (\\S+)")

var goTypeWords = map[string]string{
	"int": "a number", "*int": "a number", "string": "a string",
	"[]string": "a list of strings", "[]agent.rawVIP": "a list of VIPs",
	"[]agent.rawPort": "a list of ports", "[]agent.rawCheck": "a list of checks",
}

// yamlMessage rewrites yaml.v3 errors in the config's own terms: unknown
// keys with the keys allowed there, type errors without Go type names.
func yamlMessage(err error) string {
	msg := yamlKeyErr.ReplaceAllStringFunc(err.Error(), func(m string) string {
		sub := yamlKeyErr.FindStringSubmatch(m)
		return fmt.Sprintf("unknown key %q (expected one of: %s)", sub[1], knownKeys[sub[2]])
	})
	msg = yamlTypeErr.ReplaceAllStringFunc(msg, func(m string) string {
		sub := yamlTypeErr.FindStringSubmatch(m)
		want, ok := goTypeWords[sub[3]]
		if !ok {
			want = "a mapping of keys"
		}
		val := sub[2]
		if val == "" {
			val = "a " + sub[1]
		}
		return fmt.Sprintf("%q: expected %s", val, want)
	})
	return strings.TrimPrefix(msg, "yaml: ")
}

// ParseConfig parses and validates YAML config text.
func ParseConfig(data []byte) (*Config, error) {
	var raw rawConfig
	dec := yaml.NewDecoder(bytes.NewReader(data))
	dec.KnownFields(true)
	err := dec.Decode(&raw)
	if errors.Is(err, io.EOF) || (err == nil && raw.empty()) {
		// An empty or comment-only file is a truncated write or a
		// mistake, never "no VIPs": tearing the host down is remove's job.
		return nil, fmt.Errorf("%w: the config is empty (or only comments): expected at least `vips:` "+
			"(write `vips: []` for a host with no VIPs; `dsr-agent remove` undoes everything)", ErrInvalidConfig)
	}
	if err != nil {
		return nil, fmt.Errorf("%w: %s", ErrInvalidConfig, capLines(yamlMessage(err)))
	}
	// A second document would be silently ignored by a single Decode.
	var extra yaml.Node
	if err := dec.Decode(&extra); !errors.Is(err, io.EOF) {
		return nil, fmt.Errorf("%w: more than one YAML document (---): expected exactly one", ErrInvalidConfig)
	}
	return raw.validate()
}

// fieldErrors collects every problem so one run reports them all.
type fieldErrors []string

func (e *fieldErrors) add(field, value, expected string) {
	*e = append(*e, fmt.Sprintf("%s: %q: expected %s", field, value, expected))
}

// maxErrorLines caps what one run prints: the first errors say what is
// wrong, a million more only flood the journal.
const maxErrorLines = 20

func (e fieldErrors) err() error {
	if len(e) == 0 {
		return nil
	}
	return fmt.Errorf("%w:\n  %s", ErrInvalidConfig, capLines(strings.Join(e, "\n  ")))
}

// capLines keeps the first maxErrorLines lines and counts the rest.
func capLines(s string) string {
	lines := strings.SplitAfterN(s, "\n", maxErrorLines+1)
	if len(lines) <= maxErrorLines {
		return s
	}
	rest := strings.Count(lines[maxErrorLines], "\n") + 1
	return strings.Join(lines[:maxErrorLines], "") + fmt.Sprintf("  … and %s more", thousands(rest))
}

// thousands renders n with comma separators (1,139,412).
func thousands(n int) string {
	s := strconv.Itoa(n)
	for i := len(s) - 3; i > 0; i -= 3 {
		s = s[:i] + "," + s[i:]
	}
	return s
}

// hostErr is err for problems found by comparing the config with the host.
func (e fieldErrors) hostErr() error {
	if len(e) == 0 {
		return nil
	}
	return &hostMismatch{e.err()}
}

type hostMismatch struct{ error }

func (h *hostMismatch) Unwrap() []error { return []error{h.error, ErrHostMismatch} }

func (raw *rawConfig) validate() (*Config, error) {
	var errs fieldErrors
	cfg := &Config{Mode: Mode(raw.Mode)}
	switch cfg.Mode {
	case "":
		cfg.Mode = ModeLoopback
	case ModeLoopback, ModeARPTables, ModeFirewalld:
	default:
		errs.add("mode", raw.Mode, "loopback, arptables or firewalld")
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
	var rawVIPs []rawVIP
	seenVIP := map[netip.Addr]string{}
	if raw.VIPs == nil {
		errs.add("vips", "", "a list of VIPs (write `vips: []` for none)")
	} else {
		rawVIPs = *raw.VIPs
	}
	for i, rv := range rawVIPs {
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
	}
	if raw.Health != nil {
		cfg.Health = raw.Health.validate(&errs)
		checkListeners(cfg, &errs)
	}
	if err := errs.err(); err != nil {
		return nil, err
	}
	return cfg, nil
}

// checkListeners rejects health and agent-check addresses the director
// could not use: the health endpoint answers for this host, so it must be
// the host's own address, never a VIP (every real server would claim it) or
// the wildcard; and the two listeners cannot share an address.
func checkListeners(cfg *Config, errs *fieldErrors) {
	vips := map[netip.Addr]bool{}
	for _, v := range cfg.VIPs {
		vips[v.Address] = true
	}
	check := func(field, s string) netip.AddrPort {
		ap, err := netip.ParseAddrPort(s)
		if err != nil {
			return netip.AddrPort{} // reported by the field's own parse
		}
		switch a := ap.Addr().Unmap(); {
		case a.IsUnspecified():
			errs.add(field, s, "the host's own IP (the director's heartbeat target), not the wildcard")
		case vips[a]:
			errs.add(field, s, "the host's own IP, not a VIP (every real server has the VIP; the director would reach any of them)")
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
	if mode == ModeFirewalld && len(rv.Ports) == 0 {
		errs.add(field+".ports", "", "at least one port in firewalld mode (packets are redirected per port)")
		ok = false
	}
	seen := map[string]bool{}
	for j, rp := range rv.Ports {
		pf := fmt.Sprintf("%s.ports[%d]", field, j)
		p := Port{Protocol: rp.Protocol}
		if p.Protocol == "" {
			p.Protocol = "tcp"
		}
		if p.Protocol != "tcp" && p.Protocol != "udp" {
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
		v.Ports = append(v.Ports, p)
	}
	return v, ok
}

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
	h := &HealthConfig{Listen: rh.Listen}
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
		field := fmt.Sprintf("health.checks[%d]", i)
		c := CheckConfig{Name: rc.Name, TCP: rc.TCP, HTTP: rc.HTTP, Interval: defaultCheckInterval, Timeout: defaultCheckTimeout}
		c.ExpectStatus, _ = rc.ExpectStatus.value(errs, field+".expect_status", 200, 100, 599, "an HTTP status 100-599")
		c.Rise, _ = rc.Rise.value(errs, field+".rise", defaultRise, 1, 100, "1-100 consecutive successes")
		c.Fall, _ = rc.Fall.value(errs, field+".fall", defaultFall, 1, 100, "1-100 consecutive failures")
		if c.Name == "" {
			errs.add(field+".name", "", "a name for the check")
		} else if names[c.Name] {
			errs.add(field+".name", c.Name, "a unique check name")
		}
		names[c.Name] = true
		switch {
		case (rc.TCP == "") == (rc.HTTP == ""):
			errs.add(field, rc.Name, "exactly one of tcp or http")
		case rc.TCP != "":
			if _, _, err := splitHostPort(rc.TCP); err != nil {
				errs.add(field+".tcp", rc.TCP, "host:port")
			}
		default:
			if !strings.HasPrefix(rc.HTTP, "http://") && !strings.HasPrefix(rc.HTTP, "https://") {
				errs.add(field+".http", rc.HTTP, "an http:// or https:// URL")
			}
		}
		if rc.TCP != "" && rc.ExpectStatus != nil {
			errs.add(field+".expect_status", rc.ExpectStatus.raw, "expect_status only with http checks")
		}
		parseDur := func(name, s string, dst *time.Duration) {
			if s == "" {
				return
			}
			d, err := time.ParseDuration(s)
			if err != nil || d <= 0 {
				errs.add(field+"."+name, s, "a positive duration such as 2s or 500ms")
				return
			}
			*dst = d
		}
		parseDur("interval", rc.Interval, &c.Interval)
		parseDur("timeout", rc.Timeout, &c.Timeout)
		if c.Timeout > c.Interval {
			errs.add(field+".timeout", c.Timeout.String(), "a timeout no longer than the interval ("+c.Interval.String()+")")
		}
		h.Checks = append(h.Checks, c)
	}
	if rh.AgentCheck != nil {
		if _, err := netip.ParseAddrPort(rh.AgentCheck.Listen); err != nil {
			errs.add("health.agent_check.listen", rh.AgentCheck.Listen, "ip:port for the HAProxy agent-check listener")
		}
		h.AgentCheck = &AgentCheckConfig{Listen: rh.AgentCheck.Listen}
	}
	return h
}

func splitHostPort(s string) (string, int, error) {
	i := strings.LastIndex(s, ":")
	if i <= 0 {
		return "", 0, errors.New("no port")
	}
	port, err := strconv.Atoi(s[i+1:])
	if err != nil || port < 1 || port > 65535 {
		return "", 0, errors.New("bad port")
	}
	return strings.Trim(s[:i], "[]"), port, nil
}
