package agent

import (
	"bufio"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
)

// netmgrRoot is where network managers publish their per-link state
// (tests point it at a temporary tree).
var netmgrRoot = "/"

// netmgrWarnings says, for each interface that carries dsr-agent's VIPs,
// whether a network manager manages it and so will drop addresses
// it does not know when it (re)configures the link: NetworkManager
// (/run/NetworkManager/devices/<ifindex>, "managed=true"; it can manage lo
// from 1.42) and systemd-networkd (/run/systemd/netif/links/<ifindex>, a
// configured link whose .network file lacks KeepConfiguration=). The daemon
// repairs that within milliseconds; these warnings say how to avoid the
// fight (docs/netmgr.md). Unreadable state means "not managed": nothing to
// warn about.
func netmgrWarnings(d *Desired, f *Facts) []string {
	if d.HandsOff || len(d.Addrs) == 0 {
		return nil
	}
	// Only links that carry VIPs: the managers drop addresses, not the ARP
	// sysctls (measured in test/netmgr).
	links := map[string]bool{}
	for _, a := range d.Addrs {
		links[a.Link] = true
	}
	var out []string
	for _, name := range f.Links {
		idx, ok := f.Index[name]
		if !links[name] || !ok {
			continue
		}
		if nmManages(idx, name == "lo") {
			out = append(out, fmt.Sprintf("NetworkManager manages %s: `nmcli connection up` or `device reapply` drops dsr-agent's addresses (repaired by the daemon); "+
				"keep it unmanaged (unmanaged-devices=interface-name:%s) or see docs/netmgr.md", name, name))
		}
		// networkd was not seen to remove foreign addresses from lo.
		if file, keep := networkdManages(idx); name != "lo" && file != "" && !keep {
			out = append(out, fmt.Sprintf("systemd-networkd manages %s (%s) without KeepConfiguration=: `networkctl reconfigure` and restarts drop dsr-agent's addresses (repaired by the daemon); "+
				"set KeepConfiguration=static in [Network], see docs/netmgr.md", name, file))
		}
	}
	return out
}

// nmManages reads NetworkManager's device state file. NetworkManager 1.42
// reports lo as managed even when it only watches it; only a connection
// profile it activated there (connection-uuid) reconfigures lo.
func nmManages(ifindex int, isLo bool) bool {
	state := filepath.Join(netmgrRoot, "run/NetworkManager/devices", strconv.Itoa(ifindex))
	if keyValue(state, "managed", "=") != "true" {
		return false
	}
	return !isLo || keyValue(state, "connection-uuid", "=") != ""
}

// networkdManages reads networkd's link state: the .network file of a link
// it configures, and whether that file keeps foreign configuration.
func networkdManages(ifindex int) (networkFile string, keeps bool) {
	state := filepath.Join(netmgrRoot, "run/systemd/netif/links", strconv.Itoa(ifindex))
	switch keyValue(state, "ADMIN_STATE", "=") {
	case "configured", "configuring":
	default:
		return "", false
	}
	networkFile = keyValue(state, "NETWORK_FILE", "=")
	if networkFile == "" {
		return "", false
	}
	switch strings.ToLower(keyValue(filepath.Join(netmgrRoot, networkFile), "KeepConfiguration", "=")) {
	case "yes", "static", "true":
		return networkFile, true
	}
	return networkFile, false
}

// keyValue returns the last value of key in a KEY=value file ("" if none).
func keyValue(path, key, sep string) string {
	f, err := os.Open(path)
	if err != nil {
		return ""
	}
	defer f.Close()
	val := ""
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		k, v, ok := strings.Cut(strings.TrimSpace(sc.Text()), sep)
		if ok && strings.TrimSpace(k) == key {
			val = strings.TrimSpace(v)
		}
	}
	return val
}
