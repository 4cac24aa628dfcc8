package main

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"runtime/debug"
	"strings"

	"github.com/urfave/cli/v2"

	"github.com/dsr-agent/dsr-agent/agent"
	"github.com/dsr-agent/dsr-agent/daemon"
	"github.com/dsr-agent/dsr-agent/health"
	"github.com/dsr-agent/dsr-agent/internal/instance"
)

// daemonCommands are run, drain and undrain.
func daemonCommands() []*cli.Command {
	return []*cli.Command{
		{
			Name:  "run",
			Usage: "the daemon: apply, then keep the host converged and serve health",
			Description: "Applies the config, then repairs drift as it happens (netlink and nftables\n" +
				"notifications, plus a periodic full resync) and serves /healthz, /status and\n" +
				"/metrics on health.listen. Runs under systemd as Type=notify: READY=1 after the\n" +
				"first successful apply, WATCHDOG=1 from the reconcile loop, SIGHUP reloads (an\n" +
				"invalid config is refused and the running one kept). Stopping leaves the host\n" +
				"configured; `dsr-agent remove` is the teardown.",
			Flags: []cli.Flag{
				&cli.DurationFlag{Name: "resync", Value: daemon.DefaultResync, EnvVars: []string{"DSR_AGENT_RESYNC"},
					Usage: "period of the full resync, the backstop for anything the notifications and the 200 ms sysctl poll miss"},
			},
			Action: runCmd,
		},
		{
			Name:  "drain",
			Usage: "take the host out of rotation (health says so); survives restarts",
			Description: "Health answers 503 \"draining\" and the HAProxy agent-check \"drain\"; the VIPs stay\n" +
				"so established connections finish. Persisted in the state dir until undrain.",
			Flags: []cli.Flag{
				&cli.BoolFlag{Name: "maint", Usage: "maintenance instead of drain (agent-check answers \"maint\")"},
			},
			Action: func(c *cli.Context) error {
				mode := health.Drained
				if c.Bool("maint") {
					mode = health.Maintenance
				}
				return drainCmd(c, mode)
			},
		},
		{
			Name:   "undrain",
			Usage:  "put the host back into rotation",
			Action: func(c *cli.Context) error { return drainCmd(c, health.InRotation) },
		},
	}
}

func runCmd(c *cli.Context) error {
	if err := agent.CheckPrivileges("run"); err != nil {
		return err
	}
	// The daemon's live heap is a few MB, so at the default GOGC=100 a burst
	// of health requests triggers a GC every few thousand requests; 400 cuts
	// that cost (measured: /healthz req/s +40%) for a few MB of RSS. An
	// operator's GOGC still wins.
	if os.Getenv("GOGC") == "" {
		debug.SetGCPercent(400)
	}
	lock, err := lockNamespace(c, instance.Daemon)
	if err != nil {
		return err
	}
	defer lock.Release()
	host, err := agent.OpenHost(c.String("state-dir"))
	if err != nil {
		return err
	}
	defer host.Close()
	return daemon.Run(context.Background(), daemon.Options{
		ConfigPath: c.String("config"),
		ConfigDir:  c.String("config-dir"),
		StateDir:   c.String("state-dir"),
		Engine:     host,
		Log:        slog.Default(),
		Resync:     c.Duration("resync"),
		Debounce:   daemon.DefaultDebounce,
	})
}

func drainCmd(c *cli.Context, mode health.DrainMode) error {
	dir := c.String("state-dir")
	reply, err := daemon.Request(dir, mode.Request())
	if errors.Is(err, daemon.ErrNotRunning) {
		// No daemon: record the choice; the daemon reads it when it starts.
		if err := health.SaveDrain(dir, mode); err != nil {
			return err
		}
		fmt.Fprintf(c.App.Writer, "%s recorded in %s; the daemon is not running and applies it when it starts\n", describeDrain(mode), dir)
		return nil
	}
	if err != nil {
		return err
	}
	fmt.Fprintf(c.App.Writer, "%s\n", describeDrain(mode))
	if reply.Healthy {
		fmt.Fprintln(c.App.Writer, "health: up")
	} else {
		fmt.Fprintf(c.App.Writer, "health: 503 %s\n", strings.Join(reply.Reasons, "; "))
	}
	return nil
}

func describeDrain(m health.DrainMode) string {
	switch m {
	case health.Drained:
		return "drained: out of rotation, VIPs kept so established connections finish"
	case health.Maintenance:
		return "maintenance: out of rotation (agent-check answers maint), VIPs kept"
	default:
		return "undrained: back in rotation"
	}
}
