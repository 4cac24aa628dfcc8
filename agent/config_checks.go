package agent

import (
	"fmt"
	"net/netip"
	"path/filepath"
	"strings"
	"time"
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

// checkKinds is each check kind: the key that names it and carries its
// target, and the validator of that key and the keys that refine it. A new
// kind is one entry here, one validator and its probe in health/.
var checkKinds = []struct {
	kind     CheckKind
	set      func(*rawCheck) bool
	validate func(*rawCheck, *CheckConfig, checkErrs)
}{
	{CheckTCP, func(rc *rawCheck) bool { return rc.TCP != "" }, validateTCP},
	{CheckHTTP, func(rc *rawCheck) bool { return rc.HTTP != "" }, validateHTTP},
	{CheckTLS, func(rc *rawCheck) bool { return rc.TLS != "" }, validateTLS},
	{CheckDNS, func(rc *rawCheck) bool { return rc.DNS != "" }, validateDNS},
	{CheckExec, func(rc *rawCheck) bool { return rc.Exec != nil }, validateExec},
	{CheckUDP, func(rc *rawCheck) bool { return rc.UDP != "" }, validateUDP},
}

// checkErrs adds the errors of one check, under its field (health.checks[1]).
type checkErrs struct {
	field string
	errs  *fieldErrors
}

func (v checkErrs) add(key, value, expected string) { v.errs.add(v.field+"."+key, value, expected) }

func (v checkErrs) hostPort(key, s string) {
	if _, _, err := splitHostPort(s); err != nil {
		v.add(key, s, "host:port (e.g. 127.0.0.1:443 or [::1]:443)")
	}
}

func (rc *rawCheck) validate(field string, errs *fieldErrors) CheckConfig {
	c := CheckConfig{Name: rc.Name, Interval: defaultCheckInterval, Timeout: defaultCheckTimeout}
	c.Rise, _ = rc.Rise.value(errs, field+".rise", defaultRise, 1, 100, "1-100 consecutive successes")
	c.Fall, _ = rc.Fall.value(errs, field+".fall", defaultFall, 1, 100, "1-100 consecutive failures")
	if c.Name == "" {
		errs.add(field+".name", "", "a name for the check")
	}
	v := checkErrs{field: field, errs: errs}
	c.Kind = rc.kind(v)
	for _, k := range checkKinds {
		if k.kind == c.Kind {
			k.validate(rc, &c, v)
		}
	}
	rc.otherKindKeys(c.Kind, v)
	if c.Kind == CheckHTTP {
		c.ExpectStatus, _ = rc.ExpectStatus.value(errs, field+".expect_status", 200, 100, 599, "an HTTP status 100-599")
	}
	rc.schedule(&c, v)
	return c
}

// kind is the one kind key set ("" and an error if none or several).
func (rc *rawCheck) kind(v checkErrs) CheckKind {
	var kinds []CheckKind
	for _, k := range checkKinds {
		if k.set(rc) {
			kinds = append(kinds, k.kind)
		}
	}
	switch len(kinds) {
	case 0:
		v.errs.add(v.field, rc.Name, "exactly one of tcp, http, tls, dns, exec or udp (the key names the kind, its value the target)")
	case 1:
		return kinds[0]
	default:
		v.errs.add(v.field, rc.Name, fmt.Sprintf("exactly one of tcp, http, tls, dns, exec or udp, not %d (%s)", len(kinds), joinKinds(kinds)))
	}
	return ""
}

// checkRefiningKeys are the keys that refine one kind of check.
var checkRefiningKeys = []struct {
	key   string
	kind  CheckKind
	value func(*rawCheck) (string, bool) // its text, and whether it is set
}{
	{"expect_status", CheckHTTP, func(rc *rawCheck) (string, bool) { return rawOf(rc.ExpectStatus), rc.ExpectStatus != nil }},
	{"server_name", CheckTLS, func(rc *rawCheck) (string, bool) { return rc.ServerName, rc.ServerName != "" }},
	{"verify", CheckTLS, func(rc *rawCheck) (string, bool) { return boolRaw(rc.Verify), rc.Verify != nil }},
	{"cert_expiry_warning", CheckTLS, func(rc *rawCheck) (string, bool) { return rc.CertExpiryWarning, rc.CertExpiryWarning != "" }},
	{"query", CheckDNS, func(rc *rawCheck) (string, bool) { return rc.Query, rc.Query != "" }},
	{"type", CheckDNS, func(rc *rawCheck) (string, bool) { return rc.Type, rc.Type != "" }},
	{"expect", CheckDNS, func(rc *rawCheck) (string, bool) { return strOf(rc.Expect), rc.Expect != nil }},
	{"payload", CheckUDP, func(rc *rawCheck) (string, bool) { return strOf(rc.Payload), rc.Payload != nil }},
	{"expect_reply", CheckUDP, func(rc *rawCheck) (string, bool) { return boolRaw(rc.ExpectReply), rc.ExpectReply != nil }},
}

// otherKindKeys: keys of another kind are mistakes, not silently ignored.
func (rc *rawCheck) otherKindKeys(kind CheckKind, v checkErrs) {
	for _, k := range checkRefiningKeys {
		if value, set := k.value(rc); set && kind != "" && kind != k.kind {
			v.add(k.key, value, fmt.Sprintf("%s only with %s checks (this is a %s check)", k.key, k.kind, kind))
		}
	}
}

// keysHelp lists a check's keys as an unknown one's error says them: the
// name, the kind keys, each kind's refining keys, the schedule.
func (*rawCheck) keysHelp() string {
	var kinds []string
	groups := []string{}
	for _, k := range checkKinds {
		kinds = append(kinds, string(k.kind))
		var keys []string
		for _, r := range checkRefiningKeys {
			if r.kind == k.kind {
				keys = append(keys, r.key)
			}
		}
		if len(keys) > 0 {
			groups = append(groups, strings.Join(keys, ", ")+" ("+string(k.kind)+")")
		}
	}
	return "name, one of " + strings.Join(kinds, ", ") + "; " + strings.Join(groups, "; ") + "; interval, timeout, rise, fall"
}

// schedule: interval, timeout (no longer than the interval).
func (rc *rawCheck) schedule(c *CheckConfig, v checkErrs) {
	parseDur := func(name, s string, dst *time.Duration) {
		if s == "" {
			return
		}
		d, err := time.ParseDuration(s)
		if err != nil || d <= 0 {
			v.add(name, s, "a positive duration such as 2s or 500ms")
			return
		}
		*dst = d
	}
	parseDur("interval", rc.Interval, &c.Interval)
	parseDur("timeout", rc.Timeout, &c.Timeout)
	if c.Timeout > c.Interval {
		v.add("timeout", c.Timeout.String(), "a timeout no longer than the interval ("+c.Interval.String()+")")
	}
}

func validateTCP(rc *rawCheck, c *CheckConfig, v checkErrs) {
	c.Target = rc.TCP
	v.hostPort("tcp", rc.TCP)
}

// validateHTTP: the URL (expect_status is read once the other kinds' keys
// are refused).
func validateHTTP(rc *rawCheck, c *CheckConfig, v checkErrs) {
	c.Target = rc.HTTP
	if !strings.HasPrefix(rc.HTTP, "http://") && !strings.HasPrefix(rc.HTTP, "https://") {
		v.add("http", rc.HTTP, "an http:// or https:// URL")
	}
}

func validateTLS(rc *rawCheck, c *CheckConfig, v checkErrs) {
	c.Target = rc.TLS
	v.hostPort("tls", rc.TLS)
	c.ServerName = rc.ServerName
	if c.ServerName == "" {
		c.ServerName, _, _ = splitHostPort(rc.TLS)
	} else if !validDNSName(c.ServerName) {
		v.add("server_name", rc.ServerName, "a DNS name (the SNI the server selects its certificate by)")
	}
	c.Verify = rc.Verify.value(v.errs, v.field+".verify", false)
	c.CertExpiryWarning = DefaultCertExpiryWarning
	if rc.CertExpiryWarning != "" {
		d, ok := parseLongDuration(rc.CertExpiryWarning)
		if !ok {
			v.add("cert_expiry_warning", rc.CertExpiryWarning, "a duration such as 14d or 72h (0 turns the warning off)")
		}
		c.CertExpiryWarning = d
	}
}

func validateDNS(rc *rawCheck, c *CheckConfig, v checkErrs) {
	c.Target = rc.DNS
	v.hostPort("dns", rc.DNS)
	c.Query, c.Type = rc.Query, strings.ToUpper(rc.Type)
	if c.Type == "" {
		c.Type = "A"
	}
	switch {
	case rc.Query == "":
		v.add("query", "", "the name to ask (e.g. example.com)")
	case !validDNSName(rc.Query) && rc.Query != ".":
		v.add("query", rc.Query, "a DNS name (labels of 1-63 characters, at most 253 in all)")
	}
	if _, ok := DNSTypes[c.Type]; !ok {
		v.add("type", rc.Type, "a record type: A, AAAA, CNAME, MX, NS, PTR, SOA, SRV or TXT")
	}
	if rc.Expect == nil {
		return
	}
	c.Expect = *rc.Expect
	switch c.Type {
	case "A", "AAAA":
		a, err := netip.ParseAddr(c.Expect)
		if err != nil || a.Is4() != (c.Type == "A") {
			v.add("expect", c.Expect, "an "+map[bool]string{true: "IPv4", false: "IPv6"}[c.Type == "A"]+" address (the answer's "+c.Type+" record)")
		} else {
			c.Expect = a.String()
		}
	case "CNAME", "NS", "PTR", "MX":
		if !validDNSName(c.Expect) {
			v.add("expect", c.Expect, "a DNS name (the answer's "+c.Type+" target)")
		}
		c.Expect = strings.TrimSuffix(strings.ToLower(c.Expect), ".") + "."
	case "TXT":
	default:
		v.add("expect", c.Expect, "expect only with type "+dnsExpectTypes)
	}
}

func validateExec(rc *rawCheck, c *CheckConfig, v checkErrs) {
	c.Target = rc.Exec.raw
	switch {
	case !rc.Exec.ok:
		v.add("exec", rc.Exec.raw, "a list: the command and its arguments, run without a shell (e.g. [/usr/bin/redis-cli, ping])")
	case len(rc.Exec.items) == 0:
		v.add("exec", "[]", "a command and its arguments (e.g. [/usr/bin/redis-cli, ping])")
	case !filepath.IsAbs(rc.Exec.items[0]):
		v.add("exec[0]", rc.Exec.items[0], "an absolute path (the command runs without a shell or PATH lookup)")
	default:
		c.Command = rc.Exec.items
		c.Target = strings.Join(c.Command, " ")
	}
}

func validateUDP(rc *rawCheck, c *CheckConfig, v checkErrs) {
	c.Target = rc.UDP
	v.hostPort("udp", rc.UDP)
	if rc.Payload != nil {
		c.Payload = *rc.Payload
	}
	c.ExpectReply = rc.ExpectReply.value(v.errs, v.field+".expect_reply", true)
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
