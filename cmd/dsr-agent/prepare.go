package main

import (
	"fmt"

	"github.com/urfave/cli/v2"

	"github.com/dsr-agent/dsr-agent/agent"
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
			loaded, err := agent.LoadModules(cfg)
			for _, m := range loaded {
				fmt.Fprintf(c.App.Writer, "modprobe %s\n", m)
			}
			return err
		},
	}
}
