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

// learnsVIP reports whether the client learns the VIP 192.0.2.10 at the
// server's MAC from the ARP request the server sends when it replies from
// the VIP (what arp_announce governs).
func (l *arpLab) learnsVIP(t *testing.T) bool {
	t.Helper()
	l.client.Exec(t, "ip", "neigh", "flush", "dev", "eth0")
	l.server.Exec(t, "ip", "neigh", "flush", "dev", "eth0")
	// A packet from the VIP to the client makes the server ARP for it.
	_, _ = l.server.ExecErr("ping", "-c", "1", "-W", "1", "-I", "192.0.2.10", "198.51.100.31")
	return strings.Contains(l.client.Exec(t, "ip", "neigh", "show", "dev", "eth0"), "192.0.2.10")
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
	l := newARPLab(t)
	l.server.Exec(t, "ip", "addr", "add", "192.0.2.10/32", "dev", "eth0")
	if !l.learnsVIP(t) {
		t.Fatal("negative control: client did not learn the VIP from the server's ARP; the test could not fail")
	}
	l.server.Exec(t, "ip", "addr", "del", "192.0.2.10/32", "dev", "eth0")
	cfg := mustConfig(t, "mode: arptables\ninterfaces: [eth0]\nvips: [{address: 192.0.2.10}]\n")
	if _, err := l.host.Apply(cfg); err != nil {
		t.Fatal(err)
	}
	if l.learnsVIP(t) {
		t.Fatal("client learned the VIP from the server's ARP despite the mangle rule")
	}
	if !strings.Contains(l.client.Exec(t, "ip", "neigh", "show", "dev", "eth0"), "198.51.100.21") {
		t.Fatal("client did not learn the server's real IP from the rewritten ARP")
	}
}

// TestARPValuesThatAnswer: sysctl values an operator (or an image) may have
// left that make the kernel answer ARP for a VIP on lo, although "a higher
// value is stricter" would call them safe. After apply, arping must get no
// answer, and status must call the host in sync only when that holds. Each
// preset is first shown to answer (the negative control).
func TestARPValuesThatAnswer(t *testing.T) {
	for _, preset := range []string{
		"net.ipv4.conf.all.arp_ignore=3", "net.ipv4.conf.all.arp_ignore=4", "net.ipv4.conf.all.arp_ignore=5",
		"net.ipv4.conf.all.arp_ignore=7", "net.ipv4.conf.all.arp_ignore=9", "net.ipv4.conf.all.arp_ignore=255",
		"net.ipv4.conf.eth0.arp_ignore=3",
	} {
		t.Run(preset, func(t *testing.T) {
			l := newARPLab(t)
			l.server.Exec(t, "sysctl", "-qw", preset)
			l.server.Exec(t, "ip", "addr", "add", "192.0.2.10/32", "dev", "lo")
			if got := l.answers(t, "192.0.2.10"); len(got) == 0 {
				t.Fatalf("negative control: %s leaves the VIP on lo unanswered; the test could not fail", preset)
			}
			l.server.Exec(t, "ip", "addr", "del", "192.0.2.10/32", "dev", "lo")
			cfg := mustConfig(t, "interfaces: [eth0]\nvips: [{address: 192.0.2.10}]\n")
			if _, err := l.host.Apply(cfg); err != nil {
				t.Fatal(err)
			}
			if got := l.answers(t, "192.0.2.10"); len(got) != 0 {
				t.Fatalf("after apply, ARP for the VIP answered by %v (all=%s eth0=%s)", got,
					l.server.Sysctl(t, "net", "ipv4", "conf", "all", "arp_ignore"), l.server.Sysctl(t, "net", "ipv4", "conf", "eth0", "arp_ignore"))
			}
			rep, err := l.host.Status(cfg)
			if err != nil || !rep.InSync {
				t.Fatalf("status after apply: %v %v", rep, err)
			}
			// Reset by hand: status must see it and say suppression is off.
			l.server.Exec(t, "sysctl", "-qw", preset)
			rep, err = l.host.Status(cfg)
			if err != nil {
				t.Fatal(err)
			}
			if rep.InSync || rep.Suppression {
				t.Fatalf("status with %s: in_sync=%v suppression=%v, want both false\n%s", preset, rep.InSync, rep.Suppression, rep)
			}
			if got := l.answers(t, "192.0.2.10"); len(got) == 0 {
				t.Fatal("the kernel no longer answers with the preset back: the check above proves nothing")
			}
			// remove restores what was found.
			if _, err := l.host.Apply(cfg); err != nil {
				t.Fatal(err)
			}
			if _, err := l.host.Remove(); err != nil {
				t.Fatal(err)
			}
			name, want, _ := strings.Cut(preset, "=")
			parts := strings.Split(name, ".")
			if got := l.server.Sysctl(t, parts...); got != want {
				t.Errorf("after remove %s = %s, want the value found before (%s)", name, got, want)
			}
		})
	}
}

// TestARPAnnounceValuesThatLeakTheVIP: arp_announce 3 and above behave as 0,
// so the host sends ARP requests with the VIP as sender and the client
// learns the VIP at the server's MAC.
func TestARPAnnounceValuesThatLeakTheVIP(t *testing.T) {
	for _, v := range []string{"3", "4", "255"} {
		t.Run("all.arp_announce="+v, func(t *testing.T) {
			l := newARPLab(t)
			l.server.Exec(t, "sysctl", "-qw", "net.ipv4.conf.all.arp_announce="+v)
			l.server.Exec(t, "sysctl", "-qw", "net.ipv4.conf.all.arp_ignore=1")
			l.server.Exec(t, "ip", "addr", "add", "192.0.2.10/32", "dev", "lo")
			if !l.learnsVIP(t) {
				t.Fatal("negative control: the client did not learn the VIP; the test could not fail")
			}
			l.server.Exec(t, "ip", "addr", "del", "192.0.2.10/32", "dev", "lo")
			cfg := mustConfig(t, "interfaces: [eth0]\nvips: [{address: 192.0.2.10}]\n")
			if _, err := l.host.Apply(cfg); err != nil {
				t.Fatal(err)
			}
			if l.learnsVIP(t) {
				t.Fatalf("after apply the client learned the VIP from the server's ARP (all.arp_announce=%s)",
					l.server.Sysctl(t, "net", "ipv4", "conf", "all", "arp_announce"))
			}
		})
	}
}

// TestARPIgnore8: 8 suppresses (nothing is answered), so it stays, but
// status says the host answers ARP for nothing, not even its own address.
func TestARPIgnore8(t *testing.T) {
	l := newARPLab(t)
	l.server.Exec(t, "sysctl", "-qw", "net.ipv4.conf.all.arp_ignore=8")
	cfg := mustConfig(t, "interfaces: [eth0]\nvips: [{address: 192.0.2.10}]\n")
	if _, err := l.host.Apply(cfg); err != nil {
		t.Fatal(err)
	}
	if got := l.server.Sysctl(t, "net", "ipv4", "conf", "all", "arp_ignore"); got != "8" {
		t.Errorf("all.arp_ignore = %s, want the operator's 8 kept", got)
	}
	if got := l.answers(t, "192.0.2.10"); len(got) != 0 {
		t.Fatalf("VIP answered by %v", got)
	}
	if got := l.answers(t, "198.51.100.21"); len(got) != 0 {
		t.Fatalf("own address answered with arp_ignore 8: %v; the caveat below would be wrong", got)
	}
	rep, err := l.host.Status(cfg)
	if err != nil || !rep.InSync {
		t.Fatalf("status: %v %v", rep, err)
	}
	if !strings.Contains(rep.String(), "not even this host's own address") || len(rep.Warnings) == 0 {
		t.Fatalf("status does not warn about arp_ignore 8:\n%s", rep)
	}
}

// TestARPLaterInterfaceTakesDefault: an interface created after apply starts
// from net.ipv4.conf.default; with default.arp_ignore=3 it would answer for
// the VIP on lo (max(all=1, 3) = 3).
func TestARPLaterInterfaceTakesDefault(t *testing.T) {
	connectSecond := func(l *arpLab) {
		netnstest.Connect(t, l.server, "eth1", []string{"203.0.113.21/24"}, l.client, "eth1", []string{"203.0.113.31/24"})
	}
	answersOnSecond := func(l *arpLab) []string {
		out, _ := l.client.ExecErr("arping", "-i", "eth1", "-c", "3", "-W", "0.1", "-w", "1", "-r", "192.0.2.10")
		return strings.Fields(out)
	}
	{ // negative control
		l := newARPLab(t)
		l.server.Exec(t, "sysctl", "-qw", "net.ipv4.conf.default.arp_ignore=3")
		l.server.Exec(t, "sysctl", "-qw", "net.ipv4.conf.all.arp_ignore=1")
		l.server.Exec(t, "ip", "addr", "add", "192.0.2.10/32", "dev", "lo")
		connectSecond(l)
		if len(answersOnSecond(l)) == 0 {
			t.Fatal("negative control: a new interface with default.arp_ignore=3 did not answer; the test could not fail")
		}
	}
	l := newARPLab(t)
	l.server.Exec(t, "sysctl", "-qw", "net.ipv4.conf.default.arp_ignore=3")
	cfg := mustConfig(t, "interfaces: [eth0]\nvips: [{address: 192.0.2.10}]\n")
	if _, err := l.host.Apply(cfg); err != nil {
		t.Fatal(err)
	}
	connectSecond(l)
	if got := answersOnSecond(l); len(got) != 0 {
		t.Fatalf("a later interface answered ARP for the VIP: %v (default.arp_ignore=%s)", got,
			l.server.Sysctl(t, "net", "ipv4", "conf", "default", "arp_ignore"))
	}
}
