package agent

import (
	"path/filepath"
	"strings"
	"testing"

	"github.com/dsr-agent/dsr-agent/internal/netnstest"
)

// arpLab is a real server and a client on one cable: the client asks, with
// arping, who has the VIP.
type arpLab struct {
	server, client *netnstest.NS
	host           *Host
}

func newARPLab(t *testing.T) *arpLab {
	t.Helper()
	server, client := netnstest.New(t), netnstest.New(t)
	netnstest.Connect(t, server, "eth0", []string{"198.51.100.21/24"}, client, "eth0", []string{"198.51.100.31/24"})
	h, err := OpenHostAt(filepath.Join(t.TempDir(), "state"), server.Handle)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(h.Close)
	return &arpLab{server: server, client: client, host: h}
}

// answers returns the MACs that answered ARP requests for ip.
func (l *arpLab) answers(t *testing.T, ip string) []string {
	t.Helper()
	// arping exits 1 when nobody answers; that is an outcome, not an error.
	out, _ := l.client.ExecErr("arping", "-i", "eth0", "-c", "3", "-W", "0.1", "-w", "1", "-r", ip)
	return strings.Fields(out)
}

// TestARPForVIPUnanswered: with the VIP on the server, ARP for it is
// answered while dsr-agent's suppression is absent (the negative control)
// and unanswered once dsr-agent applied it, in loopback and arptables modes.
func TestARPForVIPUnanswered(t *testing.T) {
	for _, tc := range []struct{ mode, link string }{{"loopback", "lo"}, {"arptables", "eth0"}} {
		t.Run(tc.mode, func(t *testing.T) {
			l := newARPLab(t)
			// Negative control: the VIP where this mode puts it, no suppression.
			l.server.Exec(t, "ip", "addr", "add", "192.0.2.10/32", "dev", tc.link)
			if got := l.answers(t, "192.0.2.10"); len(got) == 0 {
				t.Fatal("negative control: ARP for the VIP unanswered without suppression; the test could not fail")
			}
			l.server.Exec(t, "ip", "addr", "del", "192.0.2.10/32", "dev", tc.link)

			cfg := mustConfig(t, "mode: "+tc.mode+"\ninterfaces: [eth0]\nvips: [{address: 192.0.2.10}, {address: 192.0.2.11}]\n")
			if _, err := l.host.Apply(cfg); err != nil {
				t.Fatal(err)
			}
			l.server.Exec(t, "ip", "-4", "addr", "show", "dev", tc.link) // VIP is there...
			for _, vip := range []string{"192.0.2.10", "192.0.2.11"} {
				if got := l.answers(t, vip); len(got) != 0 {
					t.Fatalf("ARP for VIP %s answered by %v", vip, got)
				}
			}
			// ...and the server still answers for its own address.
			if got := l.answers(t, "198.51.100.21"); len(got) == 0 {
				t.Fatal("server no longer answers ARP for its own address")
			}
		})
	}
}

// TestARPSenderRewritten: in arptables mode, ARP the server sends for
// traffic sourced from a VIP carries the real IP as sender, so the client
// never learns the VIP at the server's MAC. Without the table it does (the
// negative control).
func TestARPSenderRewritten(t *testing.T) {
	learnsVIP := func(t *testing.T, l *arpLab) bool {
		t.Helper()
		l.client.Exec(t, "ip", "neigh", "flush", "dev", "eth0")
		l.server.Exec(t, "ip", "neigh", "flush", "dev", "eth0")
		// A packet from the VIP to the client makes the server ARP for it.
		_, _ = l.server.ExecErr("ping", "-c", "1", "-W", "1", "-I", "192.0.2.10", "198.51.100.31")
		return strings.Contains(l.client.Exec(t, "ip", "neigh", "show", "dev", "eth0"), "192.0.2.10")
	}
	l := newARPLab(t)
	l.server.Exec(t, "ip", "addr", "add", "192.0.2.10/32", "dev", "eth0")
	if !learnsVIP(t, l) {
		t.Fatal("negative control: client did not learn the VIP from the server's ARP; the test could not fail")
	}
	l.server.Exec(t, "ip", "addr", "del", "192.0.2.10/32", "dev", "eth0")
	cfg := mustConfig(t, "mode: arptables\ninterfaces: [eth0]\nvips: [{address: 192.0.2.10}]\n")
	if _, err := l.host.Apply(cfg); err != nil {
		t.Fatal(err)
	}
	if learnsVIP(t, l) {
		t.Fatal("client learned the VIP from the server's ARP despite the mangle rule")
	}
	if !strings.Contains(l.client.Exec(t, "ip", "neigh", "show", "dev", "eth0"), "198.51.100.21") {
		t.Fatal("client did not learn the server's real IP from the rewritten ARP")
	}
}
