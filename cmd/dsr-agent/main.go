// Command dsr-agent turns a Linux host into a Direct Server Return real server
// and keeps it that way. This file only wires flags to the agent package and
// maps outcomes to the exit codes of the contract (0 ok, 1 failure or drift,
// 2 bad usage or invalid config).
package main

import (
	"errors"
	"fmt"
	"log/slog"
	"os"

	"github.com/urfave/cli/v2"

	dsragent "github.com/dsr-agent/dsr-agent"
	"github.com/dsr-agent/dsr-agent/agent"
	"github.com/dsr-agent/dsr-agent/internal/safedir"
)

// The release version (the repository's VERSION file, embedded) and the
// commit (go build's VCS stamp); see the root package dsragent.
var (
	version = dsragent.Version()
	commit  = dsragent.Commit()
)

const (
	exitOK      = 0
	exitFailure = 1
	exitUsage   = 2
)

func main() {
	os.Exit(run(os.Args))
}

func run(args []string) int {
	app := newApp()
	if err := app.Run(args); err != nil {
		return reportError(err)
	}
	return exitOK
}

// reportError prints err once and returns its exit code.
func reportError(err error) int {
	var ec cli.ExitCoder
	code := exitFailure
	switch {
	case errors.As(err, &ec):
		code = ec.ExitCode()
	case errors.Is(err, agent.ErrInvalidConfig), errors.Is(err, agent.ErrPrivileges), errors.Is(err, errUsage),
		errors.Is(err, agent.ErrUnsafeStateDir), errors.Is(err, safedir.ErrUnsafe):
		code = exitUsage
	}
	if msg := err.Error(); msg != "" {
		fmt.Fprintln(os.Stderr, "dsr-agent:", msg)
	}
	return code
}

var errUsage = errors.New("usage")

func newApp() *cli.App {
	cli.VersionPrinter = func(c *cli.Context) {
		fmt.Fprintf(c.App.Writer, "dsr-agent %s (commit %s)\n", version, commit)
	}
	return &cli.App{
		Name:  "dsr-agent",
		Usage: "configure and keep a Linux host correct as a Direct Server Return real server",
		Description: "dsr-agent brings a backend behind an LVS-DR / keepalived / KEMP director to the\n" +
			"real-server state: it accepts traffic for the VIPs, replies from them, and never\n" +
			"answers ARP for them. Modes: loopback (sysctls + VIP on lo), arptables (nftables\n" +
			"ARP filter + VIP on the NIC), firewalld (nftables redirect, VIP not on the host),\n" +
			"tunnel (L3 DSR over IPIP or GUE: VIP on tunl0, real servers in any subnet).",
		Version:              version,
		EnableBashCompletion: true,
		HideHelpCommand:      true,
		Flags: []cli.Flag{
			&cli.StringFlag{Name: "config", Value: "/etc/dsr-agent/config.yaml", EnvVars: []string{"DSR_AGENT_CONFIG"}, Usage: "config `FILE`"},
			&cli.StringFlag{Name: "config-dir", Value: agent.DefaultConfigDir, EnvVars: []string{"DSR_AGENT_CONFIG_DIR"}, Usage: "drop-in `DIR`: *.yaml read after the config file in lexical order (lists appended, later values win)"},
			&cli.StringFlag{Name: "state-dir", Value: "/var/lib/dsr-agent", EnvVars: []string{"DSR_AGENT_STATE_DIR"}, Usage: "state `DIR` (owned addresses, saved sysctls, drain)"},
			&cli.StringFlag{Name: "log-level", Value: "info", EnvVars: []string{"DSR_AGENT_LOG_LEVEL"}, Usage: "debug, info, warn or error"},
		},
		Before: func(c *cli.Context) error {
			var level slog.Level
			if err := level.UnmarshalText([]byte(c.String("log-level"))); err != nil {
				return fmt.Errorf("%w: --log-level %q: expected debug, info, warn or error", errUsage, c.String("log-level"))
			}
			slog.SetDefault(slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: level})))
			return nil
		},
		// Errors are printed once by reportError, with their exit code.
		ExitErrHandler: func(*cli.Context, error) {},
		OnUsageError:   usageError,
		CommandNotFound: func(c *cli.Context, name string) {
			fmt.Fprintf(c.App.ErrWriter, "dsr-agent: unknown command %q (see dsr-agent --help)\n", name)
			os.Exit(exitUsage)
		},
		Action: func(c *cli.Context) error {
			_ = cli.ShowAppHelp(c)
			return fmt.Errorf("%w: a command is required", errUsage)
		},
		Commands: withUsageErrors(commands()),
	}
}

func usageError(_ *cli.Context, err error, _ bool) error {
	return fmt.Errorf("%w: %v", errUsage, err)
}

// withUsageErrors makes a bad flag on any command exit 2 like one on the app.
func withUsageErrors(cmds []*cli.Command) []*cli.Command {
	for _, c := range cmds {
		c.OnUsageError = usageError
	}
	return cmds
}
