package agent

import (
	"errors"
	"fmt"
	"os/exec"
	"strings"

	"github.com/dsr-agent/dsr-agent/tunnel"
)

// LoadModules loads, through modprobe, the kernel modules cfg needs
// (KernelModules) that are not loaded yet, and returns those it loaded. The
// error names each module that failed and modprobe's answer.
func LoadModules(cfg *Config) (loaded []string, err error) {
	var failed []string
	for _, m := range cfg.KernelModules() {
		if tunnel.ModuleLoaded(m) {
			continue
		}
		if out, err := exec.Command(tunnel.Modprobe, m).CombinedOutput(); err != nil {
			failed = append(failed, fmt.Sprintf("modprobe %s: %v: %s", m, err, strings.TrimSpace(string(out))))
			continue
		}
		loaded = append(loaded, m)
	}
	if len(failed) > 0 {
		return loaded, errors.New("load kernel modules: " + strings.Join(failed, "; "))
	}
	return loaded, nil
}
