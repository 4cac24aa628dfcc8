package agent

import (
	"strconv"
	"strings"
	"time"

	"go.yaml.in/yaml/v3"
)

// The raw YAML shapes and the strict scalars they are made of: what the
// decoder fills before validation turns it into a Config.

// The raw YAML shapes. Strings are parsed by hand so errors can name the
// field and the value; decodeRaw refuses keys no yaml tag names.
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
	Prefix  string    `yaml:"prefix"`
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

// strictBool is a YAML boolean (true/false) and nothing else.
type strictBool struct {
	v, ok bool
	raw   string
}

func (b *strictBool) UnmarshalYAML(n *yaml.Node) error {
	b.raw = n.Value
	if n.Kind == yaml.ScalarNode && n.ShortTag() == "!!bool" {
		b.v, b.ok = strings.EqualFold(n.Value, "true"), true
	}
	return nil
}

func (b *strictBool) value(errs *fieldErrors, field string, def bool) bool {
	if b == nil {
		return def
	}
	if !b.ok {
		errs.add(field, b.raw, "true or false")
		return def
	}
	return b.v
}

// strictList is a YAML list of scalars (an argv); anything else is kept as
// its text for the error.
type strictList struct {
	items []string
	raw   string
	ok    bool
}

func (l *strictList) UnmarshalYAML(n *yaml.Node) error {
	l.raw = n.Value
	if n.Kind != yaml.SequenceNode {
		return nil
	}
	for _, c := range n.Content {
		if c.Kind != yaml.ScalarNode {
			l.raw = "a nested " + map[yaml.Kind]string{yaml.MappingNode: "mapping", yaml.SequenceNode: "list"}[c.Kind]
			return nil
		}
		l.items = append(l.items, c.Value)
	}
	l.ok = true
	return nil
}

// parseLongDuration is time.ParseDuration plus a day unit ("14d").
func parseLongDuration(s string) (time.Duration, bool) {
	if d, ok := strings.CutSuffix(s, "d"); ok {
		n, err := strconv.Atoi(d)
		if err != nil || n < 0 || n > 3650 {
			return 0, false
		}
		return time.Duration(n) * 24 * time.Hour, true
	}
	v, err := time.ParseDuration(s)
	return v, err == nil && v >= 0
}
