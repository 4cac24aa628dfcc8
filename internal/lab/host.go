package lab

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
)

// HostState is what the lab promises not to change in the host's network
// namespace: links, addresses, routes, nftables ruleset and /proc/sys/net.
type HostState struct {
	cmds    map[string]string
	sysctls map[string]string
}

// SnapshotHost records the host's network state. Call it from a thread in
// the host namespace (any goroutine: lab code never leaves threads elsewhere).
func SnapshotHost() (*HostState, error) {
	h := &HostState{cmds: map[string]string{}, sysctls: map[string]string{}}
	for _, c := range [][]string{
		{"ip", "-o", "link", "show"},
		{"ip", "-o", "addr", "show"},
		{"ip", "-4", "route", "show", "table", "all"},
		{"ip", "-6", "route", "show", "table", "all"},
		{"nft", "list", "ruleset"},
	} {
		out, err := exec.Command(c[0], c[1:]...).Output()
		if err != nil {
			return nil, fmt.Errorf("%s: %w", strings.Join(c, " "), err)
		}
		h.cmds[strings.Join(c, " ")] = string(out)
	}
	err := filepath.WalkDir("/proc/sys/net", func(path string, d os.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return nil
		}
		// Counters the kernel changes on its own, whoever runs.
		if strings.HasSuffix(path, "_count") || strings.Contains(path, "nf_conntrack_buckets") {
			return nil
		}
		b, err := os.ReadFile(path)
		if err == nil {
			h.sysctls[path] = string(b)
		}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("walk /proc/sys/net: %w", err)
	}
	return h, nil
}

// Diff describes how o differs from h; empty when identical.
func (h *HostState) Diff(o *HostState) string {
	var b strings.Builder
	for k, v := range h.cmds {
		if o.cmds[k] != v {
			fmt.Fprintf(&b, "  `%s` differs\n", k)
		}
	}
	for k, v := range h.sysctls {
		if ov, ok := o.sysctls[k]; ok && ov != v {
			fmt.Fprintf(&b, "  %s: %q -> %q\n", k, strings.TrimSpace(v), strings.TrimSpace(ov))
		}
	}
	return b.String()
}

// Sysctls is the number of sysctl values recorded.
func (h *HostState) Sysctls() int { return len(h.sysctls) }
