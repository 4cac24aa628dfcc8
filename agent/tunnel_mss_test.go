package agent

import (
	"strings"
	"testing"
)

// TestTunnelMSSTooLargeIsNoted: tunnel.mss is one value for both families;
// where it exceeds what a family's encapsulation fits on the LB-facing link
// (1400 > 1388 for GUE over IPv6 on 1500, the probe's VM finding), apply
// and status say so and keep the operator's value; where it fits, nothing.
func TestTunnelMSSTooLargeIsNoted(t *testing.T) {
	for _, c := range []struct {
		name, yaml, want string
	}{
		{"gue-ipv6-1400", "mode: tunnel\ntunnel: {encap: gue, mss: 1400}\ninterfaces: [eth0.100]\nvips: [{address: 192.0.2.10}, {address: '2001:db8::10'}]\n",
			"tunnel.mss 1400 is more than gue over IPv6 fits on a 1500-byte link (1388)"},
		{"gue-ipv4-only-1400", "mode: tunnel\ntunnel: {encap: gue, mss: 1400}\ninterfaces: [eth0.100]\nvips: [{address: 192.0.2.10}]\n", ""},
		{"gue-ipv6-1388", "mode: tunnel\ntunnel: {encap: gue, mss: 1388}\ninterfaces: [eth0.100]\nvips: [{address: '2001:db8::10'}]\n", ""},
		{"ipip-ipv4-1441", "mode: tunnel\ntunnel: {encap: ipip, mss: 1441}\ninterfaces: [eth0.100]\nvips: [{address: 192.0.2.10}]\n",
			"tunnel.mss 1441 is more than ipip over IPv4 fits on a 1500-byte link (1440)"},
		{"default-mss", "mode: tunnel\ntunnel: {encap: gue}\ninterfaces: [eth0.100]\nvips: [{address: '2001:db8::10'}]\n", ""},
	} {
		t.Run(c.name, func(t *testing.T) {
			h := newSimHost()
			p := h.planned(t, mustConfig(t, c.yaml))
			notes := strings.Join(p.notes(noteApply), "\n")
			if c.want == "" && notes != "" {
				t.Errorf("notes for an MSS that fits: %q", notes)
			}
			if !strings.Contains(notes, c.want) {
				t.Errorf("notes %q, want %q", notes, c.want)
			}
			if r := p.report(); c.want != "" && !strings.Contains(strings.Join(r.Warnings, "\n"), c.want) {
				t.Errorf("status warnings %q lack %q", r.Warnings, c.want)
			}
		})
	}
}
