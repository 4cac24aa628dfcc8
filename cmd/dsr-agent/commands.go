package main

import (
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"

	"github.com/urfave/cli/v2"

	"github.com/dsr-agent/dsr-agent/agent"
	"github.com/dsr-agent/dsr-agent/internal/confdir"
	"github.com/dsr-agent/dsr-agent/internal/instance"
)

// configFiles reads the config file and its drop-ins, with validate's
// --drop-in NAME=FILE standing in for (or added as) the drop-in NAME: what
// Ansible's `validate:` needs to check a drop-in template in the context of
// the host's config before it is written.
func configFiles(c *cli.Context) ([]confdir.File, error) {
	dir := c.String("config-dir")
	files, err := confdir.Read(c.String("config"), dir, agent.MaxConfigSize)
	if err != nil {
		return nil, fmt.Errorf("%w: %w", agent.ErrInvalidConfig, err)
	}
	for _, spec := range c.StringSlice("drop-in") {
		name, file, ok := strings.Cut(spec, "=")
		if !ok || name == "" || file == "" || strings.Contains(name, "/") {
			return nil, fmt.Errorf("%w: --drop-in %q: expected NAME=FILE (NAME a file name such as 50-host.yaml)", errUsage, spec)
		}
		if m, _ := filepath.Match(confdir.DropInPattern, name); !m {
			return nil, fmt.Errorf("%w: --drop-in %q: NAME must match %s (other names are not read as drop-ins)", errUsage, spec, confdir.DropInPattern)
		}
		info, err := os.Stat(file)
		if err != nil {
			return nil, fmt.Errorf("%w: --drop-in %s: %w", agent.ErrInvalidConfig, spec, err)
		}
		if info.Size() > agent.MaxConfigSize {
			return nil, fmt.Errorf("%w: --drop-in %s: larger than %d KiB", agent.ErrInvalidConfig, spec, agent.MaxConfigSize>>10)
		}
		data, err := os.ReadFile(file)
		if err != nil {
			return nil, fmt.Errorf("%w: --drop-in %s: %w", agent.ErrInvalidConfig, spec, err)
		}
		// Shown under its place in the directory, so the order and the
		// messages are the ones the host will see.
		path := filepath.Join(dir, name)
		files = slices.DeleteFunc(files, func(f confdir.File) bool { return f.DropIn && f.Path == path })
		files = append(files, confdir.File{Path: path, Data: data, DropIn: true})
	}
	slices.SortStableFunc(files[1:], func(a, b confdir.File) int { return strings.Compare(a.Path, b.Path) })
	return files, nil
}

func commands() []*cli.Command {
	cmds := []*cli.Command{
		{
			Name:  "validate",
			Usage: "parse and check the config and its drop-ins; change nothing",
			Flags: []cli.Flag{
				&cli.BoolFlag{Name: "print", Usage: "print the effective config, each value with the file and line it came from"},
				&cli.StringSliceFlag{Name: "drop-in", Usage: "check `NAME=FILE` as if FILE were the drop-in NAME of the config dir (replacing one of that name); repeatable"},
			},
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
	cmds = append(cmds, checkCommand(), prepareCommand(), probeCommand())
	return append(append(cmds, daemonCommands()...), docCommands()...)
}

// openWithConfig parses the config (static checks) and opens the host. The
// host-dependent checks run inside Validate, Plan, Apply and Status against
// the same snapshot they act on, so nothing changes unless all checks pass.
func openWithConfig(c *cli.Context) (*agent.Config, *agent.Host, error) {
	cfg, err := agent.LoadConfig(c.String("config"), c.String("config-dir"))
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
	files, err := configFiles(c)
	if err != nil {
		return err
	}
	cfg, merged, err := agent.ParseFiles(files)
	if err != nil {
		return err
	}
	if c.Bool("print") {
		if err := merged.Print(c.App.Writer); err != nil {
			return err
		}
	}
	host, err := agent.OpenHost(c.String("state-dir"))
	if err != nil {
		return err
	}
	defer host.Close()
	if err := host.Validate(cfg); err != nil {
		return err
	}
	var dropIns []string
	for _, f := range files[1:] {
		dropIns = append(dropIns, filepath.Base(f.Path))
	}
	with := ""
	if len(dropIns) > 0 {
		with = " (drop-ins: " + strings.Join(dropIns, ", ") + ")"
	}
	fmt.Fprintf(c.App.Writer, "config %s is valid: mode %s, %d VIP(s)%s\n", c.String("config"), cfg.Mode, len(cfg.VIPs), with)
	// What a running firewalld would do to this config's traffic: warnings,
	// the config itself is valid.
	findings, err := host.Firewalld(c.Context, cfg)
	if err != nil {
		fmt.Fprintf(c.App.Writer, "warning: firewalld: not checked: %v\n", err)
	}
	for _, f := range findings {
		fmt.Fprintln(c.App.Writer, f.String())
	}
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
		return printPlan(c, plan, nil, nothingToApply)
	}
	lock, err := lockNamespace(c, instance.Apply)
	if err != nil {
		return err
	}
	defer lock.Release()
	plan, err := host.Apply(cfg)
	return printPlan(c, plan, err, nothingToApply)
}

func statusCmd(c *cli.Context) error {
	cfg, host, err := openWithConfig(c)
	if err != nil {
		return err
	}
	defer host.Close()
	report, err := host.StatusWithFirewalld(c.Context, cfg)
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
	lock, err := lockNamespace(c, instance.Remove)
	if err != nil {
		return err
	}
	defer lock.Release()
	host, err := agent.OpenHost(c.String("state-dir"))
	if err != nil {
		return err
	}
	defer host.Close()
	plan, err := host.Remove()
	return printPlan(c, plan, err, "# nothing to remove: dsr-agent owns nothing on this host")
}

const nothingToApply = "# nothing to do: host is in sync with the config"

// printPlan prints what apply or remove did (with err, as far as it got:
// the changes made before the one that failed), or nothing when there was
// nothing to do; it returns err.
func printPlan(c *cli.Context, plan *agent.Plan, err error, nothing string) error {
	printNotesIfEmpty(c, plan)
	if plan != nil && !plan.Empty() {
		fmt.Fprint(c.App.Writer, plan.String())
	}
	if err != nil {
		return err
	}
	if plan.Empty() {
		fmt.Fprintln(c.App.Writer, nothing)
	}
	return nil
}

// printNotesIfEmpty prints a plan's notes when the plan itself prints
// nothing (Plan.String includes them otherwise).
func printNotesIfEmpty(c *cli.Context, p *agent.Plan) {
	if p == nil || !p.Empty() {
		return
	}
	for _, n := range p.Notes {
		fmt.Fprintf(c.App.Writer, "# warning: %s\n", n)
	}
}

// lockNamespace takes this network namespace's one-instance lock. A daemon
// keeping the namespace converged would undo a CLI apply or remove within
// seconds, so those are refused with what to do instead.
func lockNamespace(c *cli.Context, role instance.Role) (*instance.Lock, error) {
	lock, err := instance.Acquire(c.Context, instance.Holder{Role: role, Config: c.String("config"), StateDir: c.String("state-dir")})
	var busy *instance.BusyError
	if !errors.As(err, &busy) {
		return lock, err
	}
	h := busy.Holder
	switch role {
	case instance.Apply:
		return nil, fmt.Errorf("%w: it keeps the host converged to %s and would undo this apply within seconds: "+
			"edit %s and run `systemctl reload dsr-agent` (or `kill -HUP %d`); to apply another config, stop the service first", err, h.Config, h.Config, h.PID)
	case instance.Remove:
		return nil, fmt.Errorf("%w: it would put everything back within seconds: stop it first (`systemctl stop dsr-agent`, then `dsr-agent remove`)", err)
	default:
		return nil, fmt.Errorf("%w: two daemons in one network namespace undo each other's changes; stop that one first", err)
	}
}
