package agent

import (
	"fmt"
	"slices"
	"testing"
)

// TestFirewalldRequest: the ports firewalld is asked about, per mode.
func TestFirewalldRequest(t *testing.T) {
	cases := []struct {
		config string
		want   []string
	}{
		{"mode: loopback\ninterfaces: [eth0.100]\nvips: [{address: 192.0.2.10, ports: [{port: 80}, {port: 53, protocol: udp}]}]\n" +
			"health: {listen: '198.51.100.21:8558', agent_check: {listen: '198.51.100.21:3333'}}\n",
			[]string{"vip eth0.100 192.0.2.10 80/tcp", "vip eth0.100 192.0.2.10 53/udp", "health eth0.100 198.51.100.21 8558/tcp", "agent-check eth0.100 198.51.100.21 3333/tcp"}},
		// A prefix's ports are asked about as a VIP's, named by the prefix.
		{"mode: arptables\ninterfaces: [eth0.100]\nvips: [{address: 192.0.2.10, ports: [{port: 80}]}, {prefix: 203.0.113.0/24, ports: [{port: 443}]}]\n",
			[]string{"vip eth0.100 192.0.2.10 80/tcp", "vip eth0.100 203.0.113.0/24 443/tcp"}},
		{"mode: firewalld\ninterfaces: [eth0.100]\nvips: [{prefix: 203.0.113.0/24, ports: [{port: 443}]}]\n", nil},
		// firewalld mode: VIP ports are redirected; firewalld judges NAT as a whole.
		{"mode: firewalld\ninterfaces: [eth0.100]\nvips: [{address: 192.0.2.10, ports: [{port: 80, to_port: 8080}]}]\nhealth: {}\n",
			[]string{"health eth0.100 198.51.100.21 8558/tcp"}},
		// vips: [] changes nothing, so there is nothing to ask.
		{"mode: loopback\ninterfaces: [eth0.100]\nvips: []\nhealth: {}\n", nil},
	}
	for _, c := range cases {
		h := newSimHost()
		d, err := Resolve(mustConfig(t, c.config), h.facts)
		if err != nil {
			t.Fatal(err)
		}
		var got []string
		req := firewalldRequest(d, h.facts)
		for _, w := range req.Wants {
			got = append(got, fmt.Sprintf("%s %s %s %d/%s", w.Kind, w.Iface, w.Addr, w.Port, w.Proto))
		}
		if !slices.Equal(got, c.want) {
			t.Errorf("%s\nwants %q\nwant  %q", c.config, got, c.want)
		}
		if req.VIPsRedirected != (d.Mode == ModeFirewalld) {
			t.Errorf("VIPsRedirected %v in mode %s", req.VIPsRedirected, d.Mode)
		}
	}
}
