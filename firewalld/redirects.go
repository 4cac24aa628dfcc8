package firewalld

import (
	"context"
	"fmt"
	"strconv"
	"strings"
)

// Redirects is whether firewalld lets in traffic that dsr-agent's own nat
// table redirected (firewalld mode).
type Redirects struct {
	Accepted bool
	// Version is firewalld's version; StrictForwardPorts the value read
	// ("" when this firewalld has no such setting, before 2.3).
	Version            string
	StrictForwardPorts string
	// Why says which rule decided, for the finding and the docs.
	Why string
}

// AcceptsRedirects asks firewalld whether it accepts traffic NATed by a table
// it did not create. Before 2.3 its filter_INPUT chain has
// `ct status dnat accept` (since 0.7) so a redirect is accepted in any zone
// without opening a port; 2.3 added StrictForwardPorts, and with =yes that
// blanket accept is gone: only firewalld's own forward-ports are let in.
func (c *Client) AcceptsRedirects(ctx context.Context) (Redirects, error) {
	ver, err := c.Version(ctx)
	if err != nil {
		return Redirects{}, err
	}
	maj, min, err := parseVersion(ver)
	if err != nil {
		return Redirects{}, err
	}
	strict := ""
	if maj > 2 || (maj == 2 && min >= 3) {
		v, err := c.property(ctx, c.cfg, ifaceConfig, "StrictForwardPorts")
		if err != nil {
			return Redirects{}, fmt.Errorf("firewalld %s: read StrictForwardPorts: %w", ver, err)
		}
		s, ok := v.Value().(string)
		if !ok {
			return Redirects{}, fmt.Errorf("firewalld StrictForwardPorts: got %s, want a string", v.Signature())
		}
		strict = s
	}
	return redirectsRule(ver, maj, min, strict), nil
}

// redirectsRule is the pure rule behind AcceptsRedirects.
func redirectsRule(ver string, maj, min int, strict string) Redirects {
	r := Redirects{Version: ver, StrictForwardPorts: strict}
	switch {
	case maj < 2 || (maj == 2 && min < 3):
		r.Accepted = true
		r.Why = fmt.Sprintf("firewalld %s accepts NATed traffic (ct status dnat accept in filter_INPUT)", ver)
	case strings.EqualFold(strict, "yes") || strings.EqualFold(strict, "true"):
		r.Why = fmt.Sprintf("firewalld %s has StrictForwardPorts=%s: it rejects traffic NATed by rules it did not create", ver, strict)
	default:
		r.Accepted = true
		r.Why = fmt.Sprintf("firewalld %s has StrictForwardPorts=%s: it accepts NATed traffic (ct status dnat accept)", ver, strict)
	}
	return r
}

// parseVersion reads "1.3.3" or "2.3.0rc1" as major, minor.
func parseVersion(v string) (int, int, error) {
	parts := strings.SplitN(v, ".", 3)
	if len(parts) < 2 {
		return 0, 0, fmt.Errorf("firewalld version %q: want MAJOR.MINOR[.PATCH]", v)
	}
	maj, err := strconv.Atoi(parts[0])
	if err != nil {
		return 0, 0, fmt.Errorf("firewalld version %q: major: %w", v, err)
	}
	// Keep the leading digits only ("3rc1" -> 3).
	m := parts[1]
	i := 0
	for i < len(m) && m[i] >= '0' && m[i] <= '9' {
		i++
	}
	min, err := strconv.Atoi(m[:i])
	if err != nil {
		return 0, 0, fmt.Errorf("firewalld version %q: minor: %w", v, err)
	}
	return maj, min, nil
}
