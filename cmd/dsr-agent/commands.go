package main

import (
	"encoding/json"
	"fmt"

	"github.com/urfave/cli/v2"

	"github.com/dsr-agent/dsr-agent/agent"
)

func commands() []*cli.Command {
	cmds := []*cli.Command{
		{
			Name:   "validate",
			Usage:  "parse and check the config; change nothing",
			Action: validateCmd,
		},
		{
			Name:  "apply",
			Usage: "converge the host to the config, printing each change as the equivalent sysctl / ip / nft command",
			Flags: []cli.Flag{
				&cli.BoolFlag{Name: "dry-run", Usage: "print the plan and change nothing"},
			},
			Action: applyCmd,
		},
		{
			Name:  "status",
			Usage: "compare host and config: exit 0 in sync, 1 listing each difference",
			Flags: []cli.Flag{
				&cli.BoolFlag{Name: "json", Usage: "machine-readable output"},
			},
			Action: statusCmd,
		},
		{
			Name:   "remove",
			Usage:  "undo everything dsr-agent owns and restore the sysctl values it found",
			Action: removeCmd,
		},
	}
	return append(append(cmds, daemonCommands()...), docCommands()...)
}

// openWithConfig parses the config (static checks) and opens the host. The
// host-dependent checks run inside Validate, Plan, Apply and Status against
// the same snapshot they act on, so nothing changes unless all checks pass.
func openWithConfig(c *cli.Context) (*agent.Config, *agent.Host, error) {
	cfg, err := agent.LoadConfig(c.String("config"))
	if err != nil {
		return nil, nil, err
	}
	host, err := agent.OpenHost(c.String("state-dir"))
	if err != nil {
		return nil, nil, err
	}
	return cfg, host, nil
}

func validateCmd(c *cli.Context) error {
	cfg, host, err := openWithConfig(c)
	if err != nil {
		return err
	}
	defer host.Close()
	if err := host.Validate(cfg); err != nil {
		return err
	}
	fmt.Fprintf(c.App.Writer, "config %s is valid: mode %s, %d VIP(s)\n", c.String("config"), cfg.Mode, len(cfg.VIPs))
	return nil
}

func applyCmd(c *cli.Context) error {
	if !c.Bool("dry-run") {
		if err := agent.CheckPrivileges("apply"); err != nil {
			return err
		}
	}
	cfg, host, err := openWithConfig(c)
	if err != nil {
		return err
	}
	defer host.Close()
	if c.Bool("dry-run") {
		plan, err := host.Plan(cfg)
		if err != nil {
			return err
		}
		if plan.Empty() {
			fmt.Fprintln(c.App.Writer, "# nothing to do: host is in sync with the config")
			return nil
		}
		fmt.Fprint(c.App.Writer, plan.String())
		return nil
	}
	plan, err := host.Apply(cfg)
	if plan != nil && !plan.Empty() {
		fmt.Fprint(c.App.Writer, plan.String())
	}
	if err != nil {
		return err
	}
	if plan.Empty() {
		fmt.Fprintln(c.App.Writer, "# nothing to do: host is in sync with the config")
	}
	return nil
}

func statusCmd(c *cli.Context) error {
	cfg, host, err := openWithConfig(c)
	if err != nil {
		return err
	}
	defer host.Close()
	report, err := host.Status(cfg)
	if err != nil {
		return err
	}
	if c.Bool("json") {
		enc := json.NewEncoder(c.App.Writer)
		enc.SetIndent("", "  ")
		if err := enc.Encode(report); err != nil {
			return err
		}
	} else {
		fmt.Fprint(c.App.Writer, report.String())
	}
	if !report.InSync {
		return cli.Exit("", exitFailure)
	}
	return nil
}

func removeCmd(c *cli.Context) error {
	if err := agent.CheckPrivileges("remove"); err != nil {
		return err
	}
	host, err := agent.OpenHost(c.String("state-dir"))
	if err != nil {
		return err
	}
	defer host.Close()
	plan, err := host.Remove()
	if plan != nil && !plan.Empty() {
		fmt.Fprint(c.App.Writer, plan.String())
	}
	if err != nil {
		return err
	}
	if plan.Empty() {
		fmt.Fprintln(c.App.Writer, "# nothing to remove: dsr-agent owns nothing on this host")
	}
	return nil
}
