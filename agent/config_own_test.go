package agent

import (
	"errors"
	"strings"
	"testing"
)

// Issue 17.3: a setting that routes, redirects or drops dsr-agent's own
// health traffic is an invalid config naming both fields and values: a
// return_via TCP port that is a listener's port (its rule sends the health
// replies via the L7 LB), and in firewalld mode a redirect whose local
// port (to_port, default: port) is one (the VIP's clients would be handed
// to the health server), and a VIP port that is one (the list: the
// port would mean dsr-agent on the host's address and the service on the
// VIP). What does not touch them stays valid: a UDP port, another port.
func TestOwnHealthTrafficIsNotRouted(t *testing.T) {
	const health = "health: {listen: '198.51.100.21:8558', agent_check: {listen: '198.51.100.21:3333'}}\n"
	const lb = "mode: loopback\nvips: [{address: 192.0.2.10}]\n"
	const fw = "mode: firewalld\nvips:\n  - address: 192.0.2.10\n    ports: "
	for _, c := range []struct {
		name, yaml string
		want       []string // empty: valid
	}{
		{"return_via lists the health port", lb + health + "return_via: {gateway: 198.51.100.252, ports: [{port: 443}, {port: 8558}]}\n",
			[]string{"return_via.ports[1].port", `"8558"`, "health.listen", "198.51.100.21:8558", "via the L7 load balancer"}},
		{"return_via lists the agent-check port", lb + health + "return_via: {gateway: 198.51.100.252, ports: [{port: 3333, protocol: tcp}]}\n",
			[]string{"return_via.ports[0].port", `"3333"`, "health.agent_check.listen", "198.51.100.21:3333"}},
		{"return_via lists the default health port", lb + "health: {}\nreturn_via: {gateway: 198.51.100.252, ports: [{port: 8558}]}\n",
			[]string{"return_via.ports[0].port", `"8558"`, "health.listen", "default port 8558"}},
		{"return_via lists the health port for udp", lb + health + "return_via: {gateway: 198.51.100.252, ports: [{port: 8558, protocol: udp}]}\n", nil},
		{"return_via without health", lb + "return_via: {gateway: 198.51.100.252, ports: [{port: 8558}]}\n", nil},
		{"firewalld to_port is the health port", fw + "[{port: 80, to_port: 8558}]\n" + health,
			[]string{"vips[0].ports[0].to_port", `"8558"`, "health.listen", "198.51.100.21:8558"}},
		{"firewalld port is the agent-check port, to_port defaulted", fw + "[{port: 3333}]\n" + health,
			[]string{"vips[0].ports[0].port", `"3333"`, "to_port defaults to port", "health.agent_check.listen"}},
		{"firewalld port is the health port, to_port elsewhere", fw + "[{port: 8558, to_port: 8080}]\n" + health,
			[]string{"vips[0].ports[0].port", `"8558"`, "health.listen", "198.51.100.21:8558"}},
		{"firewalld udp to_port is the health port", fw + "[{port: 53, protocol: udp, to_port: 8558}]\n" + health, nil},
		{"loopback VIP port is the health port", "mode: loopback\nvips: [{address: 192.0.2.10, ports: [{port: 8558}]}]\n" + health, nil},
	} {
		t.Run(c.name, func(t *testing.T) {
			_, err := ParseConfig([]byte(c.yaml))
			if len(c.want) == 0 {
				if err != nil {
					t.Fatalf("refused: %v", err)
				}
				return
			}
			if !errors.Is(err, ErrInvalidConfig) {
				t.Fatalf("ParseConfig = %v, want an invalid config", err)
			}
			for _, w := range c.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error %q lacks %q", err, w)
				}
			}
		})
	}
}
