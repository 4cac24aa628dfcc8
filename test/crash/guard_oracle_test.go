//go:build crash

package crash

import (
	"net/netip"
	"os"
	"strings"
	"testing"

	"github.com/dsr-agent/dsr-agent/internal/netnstest"
)

// The oracle counts firewalld mode's ARP guard (its table replaces
// arptables mode's during a switch while VIPs are still on the NIC) as
// suppression only when both chains are there: without the output drop, a
// gratuitous request from a VIP sender passes input and the kernel's answer
// would leave with the VIP as sender.
func TestOracleGuard(t *testing.T) {
	netnstest.RequireRoot(t)
	guard, err := os.ReadFile("../../firewall/testdata/arpguard.render.nft")
	if err != nil {
		t.Fatal(err)
	}
	lines := strings.Split(strings.TrimSpace(string(guard)), "\n")
	script := strings.Join(lines[1:len(lines)-1], "\n") // drop the heredoc lines
	vip := netip.MustParseAddr("192.0.2.10")
	vips := map[netip.Addr]bool{vip: true}
	for _, tc := range []struct {
		name  string
		after string // nft commands run after the guard is loaded
		want  bool
	}{
		{"whole guard", "", true},
		{"no output chain", "delete chain arp dsr-agent output", false},
		{"no input chain", "delete chain arp dsr-agent input", false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ns := netnstest.New(t)
			if _, err := nftIn(ns, script, "-f", "-"); err != nil {
				t.Fatal(err)
			}
			if tc.after != "" {
				if _, err := nftIn(ns, "", strings.Fields(tc.after)...); err != nil {
					t.Fatal(err)
				}
			}
			tab, err := readARPTable(ns, vips)
			if err != nil {
				t.Fatal(err)
			}
			v := &kernelView{On: map[netip.Addr][]string{vip: {"eth0"}}, Ignore: map[string]int{"all": 0, "eth0": 0},
				Announce: map[string]int{"all": 0, "eth0": 0}, ARP: tab}
			if got := len(v.violations([]string{"eth0"})) == 0; got != tc.want {
				t.Errorf("suppressed = %v, want %v: %v", got, tc.want, v.violations([]string{"eth0"}))
			}
		})
	}
}
