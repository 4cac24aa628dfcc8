package arp

import (
	"reflect"
	"slices"
	"testing"

	"github.com/dsr-agent/dsr-agent/sysctl"
)

func TestSuppressionTable(t *testing.T) {
	got := Suppression([]string{"eth0.100"})
	var keys []string
	for _, s := range got {
		keys = append(keys, s.Path.String()+"="+s.Value())
	}
	want := []string{
		"net.ipv4.conf.all.arp_ignore=1",
		"net.ipv4.conf.all.arp_announce=2",
		"net.ipv4.conf.default.arp_ignore=1",
		"net.ipv4.conf.default.arp_announce=2",
		"net/ipv4/conf/eth0.100/arp_ignore=1",
		"net/ipv4/conf/eth0.100/arp_announce=2",
	}
	if !reflect.DeepEqual(keys, want) {
		t.Fatalf("Suppression = %v, want %v", keys, want)
	}
}

// TestIgnore8Caveat: arp_ignore 8 suppresses (TestIgnoreMatchesKernel) at
// the cost of the host's own address, which the operator must hear about.
func TestIgnore8Caveat(t *testing.T) {
	if Ignore.Caveat(8) == "" {
		t.Error("arp_ignore 8 has no caveat")
	}
	if c := Ignore.Caveat(1); c != "" {
		t.Errorf("arp_ignore 1 has a caveat: %s", c)
	}
}

// TestNeeded: each current state of all/default/iface against what must be
// written, judged by max(all, iface) and the kernel's rules.
func TestNeeded(t *testing.T) {
	type vals struct{ all, def, eth0 string }
	cases := []struct {
		name   string
		ignore vals
		want   []string // paths written for arp_ignore
	}{
		{"fresh host", vals{"0", "0", "0"}, []string{"all", "eth0"}},
		{"already right", vals{"1", "0", "1"}, nil},
		{"2 is as good", vals{"2", "0", "2"}, nil},
		{"3 on all answers", vals{"3", "0", "1"}, []string{"all"}},
		{"3 on eth0 answers", vals{"1", "0", "3"}, []string{"eth0"}},
		{"4 answers", vals{"4", "0", "0"}, []string{"all", "eth0"}},
		{"9 answers", vals{"9", "0", "1"}, []string{"all"}},
		{"255 answers", vals{"255", "0", "1"}, []string{"all"}},
		{"8 suppresses", vals{"8", "0", "8"}, nil},
		{"default 3: later interfaces would answer", vals{"1", "3", "1"}, []string{"default"}},
		{"default 8 with all 1 is max 8: suppresses", vals{"1", "8", "1"}, nil},
		{"default 3 with all 8: max 8", vals{"8", "3", "1"}, nil},
		{"all 3 and default 3: all becomes 1, default 3 would still win", vals{"3", "3", "1"}, []string{"all", "default"}},
		{"missing interface", vals{"1", "0", ""}, []string{"eth0"}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			cur := map[string]string{
				sysctl.ConfPath("all", "arp_ignore").Key(): c.ignore.all, sysctl.ConfPath("default", "arp_ignore").Key(): c.ignore.def,
				sysctl.ConfPath("eth0", "arp_ignore").Key():  c.ignore.eth0,
				sysctl.ConfPath("all", "arp_announce").Key(): "2", sysctl.ConfPath("default", "arp_announce").Key(): "0",
				sysctl.ConfPath("eth0", "arp_announce").Key(): "2",
			}
			var got []string
			for _, v := range sysctl.Needed(Suppression([]string{"eth0"}), cur) {
				if v.Setting.Rule.Key != "arp_ignore" {
					t.Errorf("unexpected %s: %s", v.Setting.Path, v.Reason)
					continue
				}
				got = append(got, v.Setting.Path[3])
			}
			if !slices.Equal(got, c.want) {
				t.Errorf("writes %v, want %v", got, c.want)
			}
		})
	}
	// arp_announce: only 2 is right; 3 and above behave as 0.
	for _, v := range []string{"0", "1", "3", "4", "255"} {
		cur := map[string]string{}
		for _, s := range Suppression([]string{"eth0"}) {
			cur[s.Path.Key()] = "1"
			if s.Rule.Key == "arp_announce" {
				cur[s.Path.Key()] = "2"
			}
		}
		cur[sysctl.ConfPath("all", "arp_announce").Key()] = v
		n := sysctl.Needed(Suppression([]string{"eth0"}), cur)
		if len(n) != 1 || n[0].Setting.Path.String() != "net.ipv4.conf.all.arp_announce" {
			t.Errorf("all.arp_announce=%s: Needed = %v, want all.arp_announce only", v, n)
		}
	}
}
