package main

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"runtime/debug"
	"strings"
	"syscall"
	"time"

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
				"so established connections finish. Recorded in the state dir until undrain, then\n" +
				"confirmed by the running daemon (exit 3 if it does not answer within\n" +
				"--confirm-timeout: recorded, in effect when it resumes). Repeating it is safe.\n" +
				"With --wait it then counts the established TCP connections to the config's VIPs\n" +
				"(as the agent-check weight does; firewalld mode: to the redirects' target ports),\n" +
				"printing the count as it changes, until at most --max-connections remain (exit 0)\n" +
				"or --timeout passes (exit 1, naming the count left): the step of a rolling change.",
			Flags: []cli.Flag{
				&cli.BoolFlag{Name: "maint", Usage: "maintenance instead of drain (agent-check answers \"maint\")"},
				confirmFlag(),
				&cli.BoolFlag{Name: "wait", Usage: "then wait until the established connections to the VIPs are at most --max-connections (exit 0) or --timeout passes (exit 1)"},
				&cli.DurationFlag{Name: "timeout", Value: defaultDrainTimeout, Usage: "with --wait: give up after `D` (exit 1, naming the connections left)"},
				&cli.IntFlag{Name: "max-connections", Value: 0, Usage: "with --wait: drained when at most `N` connections remain"},
			},
			Action: func(c *cli.Context) error {
				mode := health.Drained
				if c.Bool("maint") {
					mode = health.Maintenance
				}
				if c.Bool("wait") {
					return drainWaitCmd(c, mode)
				}
				for _, f := range []string{"timeout", "max-connections"} {
					if c.IsSet(f) {
						return fmt.Errorf("%w: --%s needs --wait", errUsage, f)
					}
				}
				return drainCmd(c, mode)
			},
		},
		{
			Name:   "undrain",
			Usage:  "put the host back into rotation",
			Flags:  []cli.Flag{confirmFlag()},
			Action: func(c *cli.Context) error { return drainCmd(c, health.InRotation) },
		},
		{
			Name:  "reload",
			Usage: "make the running daemon re-read the config and say whether it took it",
			Description: "What `systemctl reload dsr-agent` (SIGHUP) does, with the outcome: exit 0 reloaded,\n" +
				"1 refused (the reason is printed; the running config stays) or no daemon running,\n" +
				"3 no answer within --confirm-timeout (the request is queued and runs when the\n" +
				"daemon resumes; a restarted daemon reads the config anyway).",
			Flags:  []cli.Flag{confirmFlag()},
			Action: reloadCmd,
		},
	}
}

// defaultDrainTimeout bounds drain --wait: long enough for the short
// requests of a web service to finish, short enough that a rolling change
// with a stuck connection stops in minutes, not hours.
const defaultDrainTimeout = 5 * time.Minute

// exitUnconfirmed is the exit code of a drain, undrain or reload that the
// daemon did not confirm: recorded (drain) or queued (reload), and in effect
// when the daemon runs again. Neither success nor failure, so it is neither
// 0 nor 1: a script must not retry as if nothing happened (although a
// retry is safe) nor go on as if it were in effect.
const exitUnconfirmed = 3

func confirmFlag() cli.Flag {
	return &cli.DurationFlag{Name: "confirm-timeout", Value: daemon.DefaultWait, EnvVars: []string{"DSR_AGENT_CONFIRM_TIMEOUT"},
		Usage: "wait `D` for the running daemon to confirm; without an answer exit 3 (recorded, in effect when it resumes)"}
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

// drainCmd records the rotation choice in the state dir, then has the
// running daemon apply it. The file is written first and is what the daemon
// acts on, so every outcome is exact: 0 in effect; 3 recorded but not
// confirmed (in effect when the daemon resumes or restarts); 1 with nothing
// recorded.
func drainCmd(c *cli.Context, mode health.DrainMode) error {
	dir := c.String("state-dir")
	path := filepath.Join(dir, health.DrainFile)
	wait := c.Duration("confirm-timeout")
	client, err := daemon.Dial(dir)
	switch {
	case errors.Is(err, daemon.ErrNotRunning):
		// No daemon: record the choice; the daemon reads it when it starts.
		if err := health.SaveDrain(dir, mode); err != nil {
			return err
		}
		fmt.Fprintf(c.App.Writer, "%s recorded in %s; the daemon is not running and applies it when it starts\n", describeDrain(mode), dir)
		return nil
	case errors.Is(err, syscall.EAGAIN) || os.IsTimeout(err):
		// A daemon listens but its backlog is full (it has not run for a
		// while): the request cannot be queued, the file can.
		if err := health.SaveDrain(dir, mode); err != nil {
			return err
		}
		return cli.Exit(fmt.Sprintf("%s recorded in %s, not confirmed: the daemon could not be reached (%v); it applies the file "+
			"at its next resync (run --resync, 30 s by default) once it runs again, or when it restarts; repeating this command is safe",
			mode.Request(), path, err), exitUnconfirmed)
	case err != nil:
		return fmt.Errorf("%w (nothing recorded)", err)
	}
	defer client.Close()
	if err := health.SaveDrain(dir, mode); err != nil {
		return err
	}
	reply, err := client.Do(daemon.ReqSyncDrain, wait)
	if errors.Is(err, daemon.ErrRefused) {
		// The daemon answered but could not read the file (it keeps its
		// current state and retries at every resync).
		return fmt.Errorf("%s recorded in %s, but the daemon did not apply it: %w", mode.Request(), path, err)
	}
	if err != nil {
		done := fmt.Sprintf("%s recorded in %s", mode.Request(), path)
		if mode == health.InRotation {
			done = fmt.Sprintf("undrain recorded (%s removed)", path)
		}
		when := "it applies the file when it resumes (a restarted daemon reads it at start)"
		if errors.Is(err, daemon.ErrNotSent) {
			when = "it applies the file at its next resync (run --resync, 30 s by default) or when it restarts"
		}
		return unconfirmed(done, when, wait, err)
	}
	if reply.Drain != mode.String() {
		// Another drain or undrain came after this one: the daemon follows
		// the file, so the last one recorded wins.
		return fmt.Errorf("%s recorded, then superseded: the daemon now reports %s (%s changed after this command wrote it)",
			mode.Request(), reply.Drain, path)
	}
	fmt.Fprintf(c.App.Writer, "%s\n", describeDrain(mode))
	printHealth(c, reply)
	return nil
}

// drainWaitCmd is drain --wait: drain, then wait for the established
// connections to the VIPs to fall to --max-connections.
func drainWaitCmd(c *cli.Context, mode health.DrainMode) error {
	timeout, atMost := c.Duration("timeout"), c.Int("max-connections")
	if timeout <= 0 {
		return fmt.Errorf("%w: --timeout %v: expected a positive duration", errUsage, timeout)
	}
	if atMost < 0 {
		return fmt.Errorf("%w: --max-connections %d: expected 0 or more", errUsage, atMost)
	}
	deadline := time.Now().Add(timeout)
	// What to count comes from the config, resolved before anything is
	// recorded: an invalid config exits 2 and leaves the rotation alone.
	cfg, host, err := openWithConfig(c)
	if err != nil {
		return err
	}
	want, err := host.Resolve(cfg)
	host.Close()
	if err != nil {
		return err
	}
	conns, err := daemon.OpenConnections(want)
	if err != nil {
		return err
	}
	defer conns.Close()
	// Not confirmed (exit 3): the health checks may still send new
	// connections, so counting would promise what it cannot.
	if err := drainCmd(c, mode); err != nil {
		return err
	}
	ctx, cancel := context.WithDeadline(c.Context, deadline)
	defer cancel()
	const what = "established connection(s) to the VIPs"
	n, err := daemon.WaitConnections(ctx, conns.Count, atMost, daemon.DrainPoll, func(n int) {
		if n > atMost {
			fmt.Fprintf(c.App.Writer, "draining: %d %s\n", n, what)
		}
	})
	switch {
	case errors.Is(err, context.DeadlineExceeded):
		return fmt.Errorf("timeout after %v: %d %s left (--max-connections %d); the host stays out of rotation", timeout, n, what, atMost)
	case err != nil:
		return err
	}
	fmt.Fprintf(c.App.Writer, "connections drained: %d %s (--max-connections %d)\n", n, what, atMost)
	return nil
}

// unconfirmed is the exit-3 message: what was done, that the daemon did
// not confirm it and why, and when it takes effect.
func unconfirmed(done, when string, wait time.Duration, err error) error {
	why := err.Error()
	if errors.Is(err, daemon.ErrNoAnswer) {
		why = fmt.Sprintf("the daemon did not answer within %v (stopped or hung?)", wait)
	}
	return cli.Exit(fmt.Sprintf("%s, not confirmed: %s; %s; repeating this command is safe and confirms it", done, why, when), exitUnconfirmed)
}

func reloadCmd(c *cli.Context) error {
	wait := c.Duration("confirm-timeout")
	client, err := daemon.Dial(c.String("state-dir"))
	if errors.Is(err, daemon.ErrNotRunning) {
		return fmt.Errorf("nothing to reload: %w; it reads %s when it starts", err, c.String("config"))
	}
	if err != nil {
		return fmt.Errorf("reload not sent: %w", err)
	}
	defer client.Close()
	reply, err := client.Do(daemon.ReqReload, wait)
	switch {
	case errors.Is(err, daemon.ErrRefused):
		return errors.New(reply.Error)
	case errors.Is(err, daemon.ErrNotSent):
		return fmt.Errorf("reload not sent: %w", err)
	case err != nil:
		return unconfirmed("reload queued on the control socket", "it runs when the daemon resumes (a restarted daemon reads the config anyway)", wait, err)
	}
	fmt.Fprintln(c.App.Writer, reply.Message)
	printHealth(c, reply)
	return nil
}

func printHealth(c *cli.Context, reply *daemon.Reply) {
	if reply.Healthy {
		fmt.Fprintln(c.App.Writer, "health: up")
	} else {
		fmt.Fprintf(c.App.Writer, "health: 503 %s\n", strings.Join(reply.Reasons, "; "))
	}
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
