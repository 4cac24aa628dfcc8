package agent

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"net/netip"
	"regexp"
	"strconv"
	"strings"
	"time"

	"go.yaml.in/yaml/v3"

	"github.com/dsr-agent/dsr-agent/internal/inet"
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
	// ReturnVia: replies of an L7 LB in transparent mode go back through it
	// (nil: off).
	ReturnVia *ReturnViaConfig
	// Tunnel is mode tunnel's encapsulation (nil in the other modes).
	Tunnel *TunnelConfig
	// origin names where a field was written (see Origin); nil for a
	// config parsed from bytes.
	origin func(field string) string
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
	Protocol Protocol
	ToPort   uint16
}

// Protocol is a port's transport: "tcp" or "udp".
type Protocol = inet.Protocol

const (
	TCP = inet.TCP
	UDP = inet.UDP
)

// HealthConfig configures the daemon's health endpoint.
type HealthConfig struct {
	// Listen is "ip:port"; Host.Validate fills the default (first IPv4 of the
	// first interface, port DefaultHealthPort).
	Listen         string
	AllowedSources []netip.Prefix
	Checks         []CheckConfig
	AgentCheck     *AgentCheckConfig
	// ListenerGrace is how long after the daemon starts a VIP port without
	// a listener stays out of /healthz (services may start after
	// dsr-agent at boot); 0 reports it at once. Status always reports it.
	ListenerGrace time.Duration
}

// CheckConfig is one local service check. Kind names the check and Target
// what it probes; the kind-specific fields are zero for other kinds.
type CheckConfig struct {
	Name   string
	Kind   CheckKind
	Target string // host:port (tcp, tls, dns, udp), URL (http), the command line (exec, display only)
	// http
	ExpectStatus int
	// tls
	ServerName        string        // SNI and, with Verify, the name the certificate must match
	Verify            bool          // verify the chain (system roots) and the name; off by default
	CertExpiryWarning time.Duration // warn (the check stays up) when the certificate expires within this
	// dns
	Query string // the name asked
	Type  string // the record type asked (A, AAAA, TXT, ...)
	// Expect: dns: one answer record of Type must equal it (an address, a
	// name, TXT text); empty: any answer.
	Expect string
	// exec
	Command []string // argv; run without a shell
	// udp
	Payload     string
	ExpectReply bool
	Interval    time.Duration
	Timeout     time.Duration
	Rise, Fall  int
}

// CheckKind names a kind of check; it is the YAML key that carries the target.
type CheckKind string

const (
	CheckTCP  CheckKind = "tcp"
	CheckHTTP CheckKind = "http"
	CheckTLS  CheckKind = "tls"
	CheckDNS  CheckKind = "dns"
	CheckExec CheckKind = "exec"
	CheckUDP  CheckKind = "udp"
)

// AgentCheckConfig enables the HAProxy agent-check listener.
type AgentCheckConfig struct {
	Listen string
	// Weight adds a weight ("up 75%") to the answer; nil: no weight, the
	// director keeps its configured one.
	Weight *WeightConfig
}

// WeightConfig says what the agent-check weight is computed from. Each
// enabled signal gives a headroom in percent (100 idle, 0 saturated); the
// weight is the smallest of them (the most loaded resource decides),
// smoothed, and never below Min.
type WeightConfig struct {
	CPU bool // idle share of all CPUs over the last sample (/proc/stat)
	// Load: the 1-minute load average per online CPU; headroom 0 at one
	// runnable task per CPU.
	Load bool
	// Connections: headroom 0 at this many established TCP connections to
	// the VIPs (sock_diag); 0 off.
	Connections int
	// Exec names an exec check whose dynamic weight (exit code-2,
	// keepalived MISC_CHECK) is a signal; empty off.
	Exec string
	// Smoothing is the time constant of the exponential moving average of
	// the raw weight, sampled every WeightSampleInterval; 0 no smoothing.
	Smoothing time.Duration
	Min       int // floor in percent, 0..100
}

// Defaults.
const (
	DefaultHealthPort    = 8558
	DefaultListenerGrace = 30 * time.Second
	// DefaultWeightSmoothing keeps a one-second spike from moving the
	// weight more than about a tenth of the way.
	DefaultWeightSmoothing = 10 * time.Second
	DefaultWeightMin       = 1
	WeightSampleInterval   = time.Second
	defaultCheckInterval   = 2 * time.Second
	defaultCheckTimeout    = time.Second
	defaultRise            = 2
	defaultFall            = 3
)

// The raw YAML shapes. Strings are parsed by hand so errors can name the
// field and the value; KnownFields rejects unknown keys.
type rawConfig struct {
	Mode       string   `yaml:"mode"`
	Interfaces []string `yaml:"interfaces"`
	// VIPs is a pointer so a missing key can be told from an explicit
	// `vips: []`: only the latter means "no VIPs".
	VIPs      *[]rawVIP     `yaml:"vips"`
	Health    *rawHealth    `yaml:"health"`
	ReturnVia *rawReturnVia `yaml:"return_via"`
	Tunnel    *rawTunnel    `yaml:"tunnel"`
}

func (raw *rawConfig) empty() bool {
	return raw.Mode == "" && raw.Interfaces == nil && raw.VIPs == nil && raw.Health == nil && raw.ReturnVia == nil && raw.Tunnel == nil
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
	ListenerGrace  *string        `yaml:"listener_grace"`
}

type rawCheck struct {
	Name string `yaml:"name"`
	// The kind keys: exactly one is set.
	TCP  string      `yaml:"tcp"`
	HTTP string      `yaml:"http"`
	TLS  string      `yaml:"tls"`
	DNS  string      `yaml:"dns"`
	Exec *strictList `yaml:"exec"`
	UDP  string      `yaml:"udp"`

	ExpectStatus      *strictInt  `yaml:"expect_status"`
	ServerName        string      `yaml:"server_name"`
	Verify            *strictBool `yaml:"verify"`
	CertExpiryWarning string      `yaml:"cert_expiry_warning"`
	Query             string      `yaml:"query"`
	Type              string      `yaml:"type"`
	Expect            *string     `yaml:"expect"`
	Payload           *string     `yaml:"payload"`
	ExpectReply       *strictBool `yaml:"expect_reply"`

	Interval string     `yaml:"interval"`
	Timeout  string     `yaml:"timeout"`
	Rise     *strictInt `yaml:"rise"`
	Fall     *strictInt `yaml:"fall"`
}

type rawAgentCheck struct {
	Listen string     `yaml:"listen"`
	Weight *rawWeight `yaml:"weight"`
}

type rawWeight struct {
	CPU         *strictBool `yaml:"cpu"`
	Load        *strictBool `yaml:"load"`
	Connections *strictInt  `yaml:"connections"`
	Exec        string      `yaml:"exec"`
	Smoothing   *string     `yaml:"smoothing"`
	Min         *strictInt  `yaml:"min"`
}

// MaxConfigSize bounds what is read of a config file: a real one is a few
// kilobytes, and a huge invalid one must not cost a gigabyte of memory and a
// million error lines.
const MaxConfigSize = 1 << 20

// yamlKeyErr rewrites yaml.v3's "field x not found in type agent.rawVIP".
var yamlKeyErr = regexp.MustCompile(`field (\S+) not found in type agent\.raw(\w+)`)

var knownKeys = map[string]string{
	"Config":     "mode, interfaces, vips, health, return_via, tunnel",
	"Tunnel":     "encap, port, mss",
	"ReturnVia":  "gateway, gateway6, ports, table",
	"ReturnPort": "port, protocol",
	"VIP":        "address, real_ip, ports",
	"Port":       "port, protocol, to_port",
	"Health":     "listen, allowed_sources, checks, agent_check, listener_grace",
	"Check": "name, one of tcp, http, tls, dns, exec, udp; expect_status (http); server_name, verify, cert_expiry_warning (tls); " +
		"query, type, expect (dns); payload, expect_reply (udp); interval, timeout, rise, fall",
	"AgentCheck": "listen, weight",
	"Weight":     "cpu, load, connections, exec, smoothing, min",
}

// yamlTypeErr matches yaml.v3's "cannot unmarshal !!str `http` into int".
var yamlTypeErr = regexp.MustCompile("cannot unmarshal !!(\\w+)(?: `([^`]*)`)? into (\\S+)")

var goTypeWords = map[string]string{
	"int": "a number", "*int": "a number", "string": "a string",
	"[]string": "a list of strings", "[]agent.rawVIP": "a list of VIPs",
	"[]agent.rawPort": "a list of ports", "[]agent.rawCheck": "a list of checks",
	"[]agent.rawReturnPort": "a list of ports",
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
type fieldErrors []fieldError

// fieldError is one problem: the field (vips[1].address) and what is wrong.
type fieldError struct{ field, msg string }

func (e *fieldErrors) add(field, value, expected string) {
	*e = append(*e, fieldError{field, fmt.Sprintf("%q: expected %s", value, expected)})
}

// maxErrorLines caps what one run prints: the first errors say what is
// wrong, a million more only flood the journal.
const maxErrorLines = 20

func (e fieldErrors) err() error {
	if len(e) == 0 {
		return nil
	}
	return &fieldErrorList{items: e}
}

// fieldErrorList is the error of a config that fails validation. where, when
// set, names the file and line each field was written at (drop-ins).
type fieldErrorList struct {
	items fieldErrors
	where func(field string) string
}

func (l *fieldErrorList) Error() string {
	lines := make([]string, len(l.items))
	for i, it := range l.items {
		lines[i] = it.field + ": " + it.msg
		if l.where != nil {
			if at := l.where(it.field); at != "" {
				lines[i] = at + ": " + lines[i]
			}
		}
	}
	return ErrInvalidConfig.Error() + ":\n  " + capLines(strings.Join(lines, "\n  "))
}

func (l *fieldErrorList) Unwrap() error { return ErrInvalidConfig }

// withOrigins makes err's field errors name where each field was written.
func withOrigins(err error, where func(string) string) error {
	var l *fieldErrorList
	if where != nil && errors.As(err, &l) {
		l.where = where
	}
	return err
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
