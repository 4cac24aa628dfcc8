package main

import (
	"fmt"
	"os/exec"
	"strings"

	"github.com/urfave/cli/v2"

	"github.com/dsr-agent/dsr-agent/agent"
	"github.com/dsr-agent/dsr-agent/tunnel"
)

// prepareCommand loads the kernel modules the config needs. The daemon runs
// without CAP_SYS_MODULE and with module syscalls filtered; the kernel loads
// ipip and ip6_tunnel on demand for it, but fou only through modprobe. So
// the unit runs this first, outside its sandbox (ExecStartPre=-+...).
func prepareCommand() *cli.Command {
	return &cli.Command{
		Name:  "prepare",
		Usage: "load the kernel modules the config needs (mode tunnel: ipip, ip6_tunnel, fou); the unit runs it before the daemon",
		Action: func(c *cli.Context) error {
			cfg, err := agent.LoadConfig(c.String("config"), c.String("config-dir"))
			if err != nil {
				return err
			}
			var failed []string
			for _, m := range cfg.KernelModules() {
				if tunnel.ModuleLoaded(m) {
					continue
				}
				if out, err := exec.Command(tunnel.Modprobe, m).CombinedOutput(); err != nil {
					failed = append(failed, fmt.Sprintf("modprobe %s: %v: %s", m, err, strings.TrimSpace(string(out))))
					continue
				}
				fmt.Fprintf(c.App.Writer, "modprobe %s\n", m)
			}
			if len(failed) > 0 {
				return fmt.Errorf("load kernel modules: %s", strings.Join(failed, "; "))
			}
			return nil
		},
	}
}
