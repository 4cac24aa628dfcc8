package agent

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// TestNetmgrWarnings: NetworkManager's and networkd's per-link state files
// say whether they will fight dsr-agent over the VIPs' interfaces.
func TestNetmgrWarnings(t *testing.T) {
	root := t.TempDir()
	old := netmgrRoot
	netmgrRoot = root
	t.Cleanup(func() { netmgrRoot = old })
	write := func(rel, text string) {
		p := filepath.Join(root, rel)
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, []byte(text), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	h := newSimHost()
	h.facts.Index = map[string]int{"lo": 1, "eth0.100": 2}
	h.facts.Addrs = append(h.facts.Addrs, addr("eth0.100", "198.51.100.22/24", ""))
	d, err := Resolve(mustConfig(t, planConfigs["arptables"]), h.facts) // IPv4 VIPs on the NIC, IPv6 on lo
	if err != nil {
		t.Fatal(err)
	}
	if w := netmgrWarnings(d, h.facts); len(w) != 0 {
		t.Fatalf("no manager, warnings %q", w)
	}
	// NetworkManager 1.42 calls lo managed while it only watches it.
	write("run/NetworkManager/devices/1", "[device]\nmanaged=true\nperm-hw-addr-fake=\n")
	write("run/NetworkManager/devices/2", "[device]\nmanaged=false\n")
	if w := netmgrWarnings(d, h.facts); len(w) != 0 {
		t.Fatalf("lo only watched by NetworkManager, warnings %q", w)
	}
	write("run/NetworkManager/devices/1", "[device]\nmanaged=true\nconnection-uuid=5f0c4d3e-0000-4000-8000-000000000001\n")
	write("run/systemd/netif/links/2", "ADMIN_STATE=configured\nOPER_STATE=routable\nNETWORK_FILE=/etc/systemd/network/10-eth0.network\n")
	write("etc/systemd/network/10-eth0.network", "[Match]\nName=eth0.100\n[Network]\nAddress=198.51.100.21/24\n")
	w := strings.Join(netmgrWarnings(d, h.facts), "\n")
	for _, want := range []string{"NetworkManager manages lo", "systemd-networkd manages eth0.100", "KeepConfiguration"} {
		if !strings.Contains(w, want) {
			t.Errorf("warnings lack %q:\n%s", want, w)
		}
	}
	if strings.Contains(w, "NetworkManager manages eth0.100") {
		t.Errorf("managed=false reported as managed:\n%s", w)
	}
	write("etc/systemd/network/10-eth0.network", "[Network]\nKeepConfiguration=static\n")
	if w := strings.Join(netmgrWarnings(d, h.facts), "\n"); strings.Contains(w, "networkd") {
		t.Errorf("KeepConfiguration=static still warned:\n%s", w)
	}
	// vips: [] changes nothing: nothing to fight over.
	none, _ := Resolve(mustConfig(t, "interfaces: [eth0.100]\nvips: []\n"), h.facts)
	if w := netmgrWarnings(none, h.facts); len(w) != 0 {
		t.Errorf("hands-off config warned: %q", w)
	}
}
