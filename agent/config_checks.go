package agent

import (
	"fmt"
	"net/netip"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"go.yaml.in/yaml/v3"
)

// The health checks' config: one key names the kind and carries its target
// (`tcp: 127.0.0.1:8080`, `exec: [/usr/bin/redis-cli, ping]`); the other
// keys refine that kind and are errors on any other.

// DefaultCertExpiryWarning is how close to its end a tls check's certificate
// makes the check warn (it stays up).
const DefaultCertExpiryWarning = 14 * 24 * time.Hour

// DNSTypes are the record types a dns check can ask, by name.
var DNSTypes = map[string]uint16{
	"A": 1, "NS": 2, "CNAME": 5, "SOA": 6, "PTR": 12, "MX": 15, "TXT": 16, "AAAA": 28, "SRV": 33,
}

// dnsExpectTypes are the types whose answers `expect` can be compared with.
var dnsExpectTypes = "A, AAAA, CNAME, NS, PTR, MX or TXT"

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

func (rc *rawCheck) validate(field string, errs *fieldErrors) CheckConfig {
	c := CheckConfig{Name: rc.Name, Interval: defaultCheckInterval, Timeout: defaultCheckTimeout}
	c.Rise, _ = rc.Rise.value(errs, field+".rise", defaultRise, 1, 100, "1-100 consecutive successes")
	c.Fall, _ = rc.Fall.value(errs, field+".fall", defaultFall, 1, 100, "1-100 consecutive failures")
	if c.Name == "" {
		errs.add(field+".name", "", "a name for the check")
	}

	// Exactly one kind key.
	var kinds []CheckKind
	for _, k := range []struct {
		kind CheckKind
		set  bool
	}{
		{CheckTCP, rc.TCP != ""}, {CheckHTTP, rc.HTTP != ""}, {CheckTLS, rc.TLS != ""},
		{CheckDNS, rc.DNS != ""}, {CheckExec, rc.Exec != nil}, {CheckUDP, rc.UDP != ""},
	} {
		if k.set {
			kinds = append(kinds, k.kind)
		}
	}
	switch len(kinds) {
	case 0:
		errs.add(field, rc.Name, "exactly one of tcp, http, tls, dns, exec or udp (the key names the kind, its value the target)")
	case 1:
		c.Kind = kinds[0]
	default:
		errs.add(field, rc.Name, fmt.Sprintf("exactly one of tcp, http, tls, dns, exec or udp, not %d (%s)", len(kinds), joinKinds(kinds)))
	}

	hostPort := func(key, s string) {
		if _, _, err := splitHostPort(s); err != nil {
			errs.add(field+"."+key, s, "host:port (e.g. 127.0.0.1:443 or [::1]:443)")
		}
	}
	switch c.Kind {
	case CheckTCP:
		c.Target = rc.TCP
		hostPort("tcp", rc.TCP)
	case CheckHTTP:
		c.Target = rc.HTTP
		if !strings.HasPrefix(rc.HTTP, "http://") && !strings.HasPrefix(rc.HTTP, "https://") {
			errs.add(field+".http", rc.HTTP, "an http:// or https:// URL")
		}
	case CheckTLS:
		c.Target = rc.TLS
		hostPort("tls", rc.TLS)
		c.ServerName = rc.ServerName
		if c.ServerName == "" {
			c.ServerName, _, _ = splitHostPort(rc.TLS)
		} else if !validDNSName(c.ServerName) {
			errs.add(field+".server_name", rc.ServerName, "a DNS name (the SNI the server selects its certificate by)")
		}
		c.Verify = rc.Verify.value(errs, field+".verify", false)
		c.CertExpiryWarning = DefaultCertExpiryWarning
		if rc.CertExpiryWarning != "" {
			d, ok := parseLongDuration(rc.CertExpiryWarning)
			if !ok {
				errs.add(field+".cert_expiry_warning", rc.CertExpiryWarning, "a duration such as 14d or 72h (0 turns the warning off)")
			}
			c.CertExpiryWarning = d
		}
	case CheckDNS:
		c.Target = rc.DNS
		hostPort("dns", rc.DNS)
		c.Query, c.Type = rc.Query, strings.ToUpper(rc.Type)
		if c.Type == "" {
			c.Type = "A"
		}
		switch {
		case rc.Query == "":
			errs.add(field+".query", "", "the name to ask (e.g. example.com)")
		case !validDNSName(rc.Query) && rc.Query != ".":
			errs.add(field+".query", rc.Query, "a DNS name (labels of 1-63 characters, at most 253 in all)")
		}
		if _, ok := DNSTypes[c.Type]; !ok {
			errs.add(field+".type", rc.Type, "a record type: A, AAAA, CNAME, MX, NS, PTR, SOA, SRV or TXT")
		}
		if rc.Expect != nil {
			c.Expect = *rc.Expect
			switch c.Type {
			case "A", "AAAA":
				a, err := netip.ParseAddr(c.Expect)
				if err != nil || a.Is4() != (c.Type == "A") {
					errs.add(field+".expect", c.Expect, "an "+map[bool]string{true: "IPv4", false: "IPv6"}[c.Type == "A"]+" address (the answer's "+c.Type+" record)")
				} else {
					c.Expect = a.String()
				}
			case "CNAME", "NS", "PTR", "MX":
				if !validDNSName(c.Expect) {
					errs.add(field+".expect", c.Expect, "a DNS name (the answer's "+c.Type+" target)")
				}
				c.Expect = strings.TrimSuffix(strings.ToLower(c.Expect), ".") + "."
			case "TXT":
			default:
				errs.add(field+".expect", c.Expect, "expect only with type "+dnsExpectTypes)
			}
		}
	case CheckExec:
		c.Target = rc.Exec.raw
		switch {
		case !rc.Exec.ok:
			errs.add(field+".exec", rc.Exec.raw, "a list: the command and its arguments, run without a shell (e.g. [/usr/bin/redis-cli, ping])")
		case len(rc.Exec.items) == 0:
			errs.add(field+".exec", "[]", "a command and its arguments (e.g. [/usr/bin/redis-cli, ping])")
		case !filepath.IsAbs(rc.Exec.items[0]):
			errs.add(field+".exec[0]", rc.Exec.items[0], "an absolute path (the command runs without a shell or PATH lookup)")
		default:
			c.Command = rc.Exec.items
			c.Target = strings.Join(c.Command, " ")
		}
	case CheckUDP:
		c.Target = rc.UDP
		hostPort("udp", rc.UDP)
		if rc.Payload != nil {
			c.Payload = *rc.Payload
		}
		c.ExpectReply = rc.ExpectReply.value(errs, field+".expect_reply", true)
	}

	// Keys of another kind are mistakes, not silently ignored.
	only := func(key string, set bool, kind CheckKind, value string) {
		if set && c.Kind != "" && c.Kind != kind {
			errs.add(field+"."+key, value, fmt.Sprintf("%s only with %s checks (this is a %s check)", key, kind, c.Kind))
		}
	}
	only("expect_status", rc.ExpectStatus != nil, CheckHTTP, rawOf(rc.ExpectStatus))
	only("server_name", rc.ServerName != "", CheckTLS, rc.ServerName)
	only("verify", rc.Verify != nil, CheckTLS, boolRaw(rc.Verify))
	only("cert_expiry_warning", rc.CertExpiryWarning != "", CheckTLS, rc.CertExpiryWarning)
	only("query", rc.Query != "", CheckDNS, rc.Query)
	only("type", rc.Type != "", CheckDNS, rc.Type)
	only("expect", rc.Expect != nil, CheckDNS, strOf(rc.Expect))
	only("payload", rc.Payload != nil, CheckUDP, strOf(rc.Payload))
	only("expect_reply", rc.ExpectReply != nil, CheckUDP, boolRaw(rc.ExpectReply))
	if c.Kind == CheckHTTP {
		c.ExpectStatus, _ = rc.ExpectStatus.value(errs, field+".expect_status", 200, 100, 599, "an HTTP status 100-599")
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
	return c
}

func joinKinds(ks []CheckKind) string {
	s := make([]string, len(ks))
	for i, k := range ks {
		s[i] = string(k)
	}
	return strings.Join(s, ", ")
}

func rawOf(i *strictInt) string {
	if i == nil {
		return ""
	}
	return i.raw
}

func boolRaw(b *strictBool) string {
	if b == nil {
		return ""
	}
	return b.raw
}

func strOf(s *string) string {
	if s == nil {
		return ""
	}
	return *s
}

// validDNSName accepts a hostname-like DNS name: dot-separated labels of
// 1-63 characters, at most 253 in all, a trailing dot allowed.
func validDNSName(s string) bool {
	s = strings.TrimSuffix(s, ".")
	if s == "" || len(s) > 253 {
		return false
	}
	for l := range strings.SplitSeq(s, ".") {
		if l == "" || len(l) > 63 || strings.ContainsAny(l, " \t\n\\/:") {
			return false
		}
	}
	return true
}
