package daemon

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"os/signal"
	"runtime/debug"
	"slices"
	"strings"
	"syscall"
	"time"

	sd "github.com/coreos/go-systemd/v22/daemon"

	"github.com/dsr-agent/dsr-agent/agent"
	"github.com/dsr-agent/dsr-agent/health"
)

// Options configure Run.
type Options struct {
	ConfigPath string
	// ConfigDir holds the drop-ins read after ConfigPath ("" none).
	ConfigDir string
	StateDir  string
	Engine    Engine
	Log       *slog.Logger
	// Resync is the period of the full resync, the backstop for anything
	// the notifications and the sysctl poll miss.
	Resync time.Duration
	// SysctlPoll is how often the ARP sysctls are read to see a reset
	// (default agent.DefaultSysctlPoll).
	SysctlPoll time.Duration
	// ListenerPoll is how often the sockets of the VIP ports are read to
	// notice a service that started or stopped (default
	// agent.DefaultListenerPoll).
	ListenerPoll time.Duration
	// Debounce is how long to let a burst of events (ip addr flush) settle
	// before a pass; the pass repairs all of them at once.
	Debounce time.Duration
	// Notify sends a systemd notification; default sd_notify(3) via NOTIFY_SOCKET.
	Notify func(state string)
	// Signals overrides the OS signals (tests); nil means SIGHUP/SIGTERM/SIGINT.
	Signals <-chan os.Signal
}

const (
	DefaultResync   = 30 * time.Second
	DefaultDebounce = time.Millisecond
	// maxRetry caps the backoff between failed applies.
	maxRetry = 30 * time.Second
)

type daemon struct {
	o        Options
	log      *slog.Logger
	state    *health.State
	checker  *health.Checker
	w        *waker
	watchers *agent.Watchers
	// cfg is the running config, want what it resolved to on this host.
	cfg     *agent.Config
	want    *agent.Desired
	applied bool // first apply done (READY sent)

	httpSrv     *health.Server
	agentSrv    *health.AgentServer
	httpCancel  context.CancelFunc
	agentCancel context.CancelFunc
	httpAddr    string
	agentAddr   string
	// weight is the agent-check weight's sampler, nil when off.
	weight *weightLoop

	retryDelay time.Duration
	retryTimer *time.Timer
	// lastInSync lets a pass that changed nothing skip the second observation.
	lastInSync bool
	// lastNotes are the notes last logged: a note repeats on every pass
	// (an empty VIP list, a lost state file) but is logged when it changes.
	lastNotes []string
}

// Run is `dsr-agent run`. It returns nil after SIGTERM/SIGINT or ctx
// cancellation, leaving the host configured. A config that does not load at
// start is returned as is (it wraps agent.ErrInvalidConfig: exit 2).
func Run(ctx context.Context, o Options) error {
	o = o.withDefaults()
	cfg, want, err := loadWhenHostReady(ctx, o)
	if err != nil {
		return err
	}
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()

	d := &daemon{o: o, log: o.Log, state: health.NewState(), w: newWaker(), watchers: agent.NewWatchers(), cfg: cfg, want: want, retryDelay: time.Second}
	d.checker = health.NewChecker(d.state)
	defer d.checker.Stop()
	d.restoreDrain()

	ctl, err := listenControl(o.StateDir, d.state, d.log)
	if err != nil {
		return err
	}
	defer ctl.Close()
	go ctl.serve(ctx)

	d.configureHealth(ctx, nil)
	defer d.stopHealth()
	defer d.stopWeight()

	// Subscribe before the first apply so nothing changed between the apply
	// and the subscription goes unnoticed.
	d.watchers.Follow(want)
	go d.watchers.Run(ctx, d.w.wake, d.log, agent.WatchOptions{SysctlPoll: o.SysctlPoll, ListenerPoll: o.ListenerPoll})

	return d.loop(ctx, ctl)
}

// withDefaults fills in what the caller left unset.
func (o Options) withDefaults() Options {
	if o.Log == nil {
		o.Log = slog.Default()
	}
	if o.Resync <= 0 {
		o.Resync = DefaultResync
	}
	if o.Debounce < 0 {
		o.Debounce = 0
	}
	if o.Notify == nil {
		log := o.Log
		o.Notify = func(state string) {
			if _, err := sd.SdNotify(false, state); err != nil {
				log.Warn("systemd notify failed", "state", state, "err", err)
			}
		}
	}
	return o
}

// restoreDrain puts back the operator's persisted drain.
func (d *daemon) restoreDrain() {
	mode, err := health.LoadDrain(d.o.StateDir)
	if err != nil {
		// A corrupt drain file must not keep the host out of service silently
		// nor crash the daemon: log it loudly and treat as in rotation.
		d.log.Error("cannot read drain state; assuming in rotation", "err", err)
	}
	d.state.SetDrain(mode)
	if mode != health.InRotation {
		d.log.Warn("host is drained (persisted); run `dsr-agent undrain` to put it back", "drain", mode)
	}
}

// loop is the reconcile loop: one pass at start, then one per wake-up,
// reload, resync or retry, until a signal or ctx ends it.
func (d *daemon) loop(ctx context.Context, ctl *control) error {
	sigs, stopSignals := d.signals()
	defer stopSignals()
	watchdog, stopWatchdog := d.watchdog()
	defer stopWatchdog()
	resync := time.NewTicker(d.o.Resync)
	defer resync.Stop()

	d.log.Info("dsr-agent daemon starting", "config", d.o.ConfigPath, "mode", d.cfg.Mode, "vips", len(d.cfg.VIPs), "prefixes", len(d.cfg.Prefixes), "resync", d.o.Resync)
	d.reconcile([]string{"start"})
	for {
		var retry <-chan time.Time
		if d.retryTimer != nil {
			retry = d.retryTimer.C
		}
		select {
		case <-ctx.Done():
			d.stop("context cancelled")
			return nil
		case sig := <-sigs:
			if sig != syscall.SIGHUP {
				d.stop(sig.String())
				return nil
			}
			_, _ = d.reload(ctx)
		case <-d.w.ch:
			d.woken()
		case answer := <-ctl.reloads:
			msg, err := d.reload(ctx)
			r := ctl.reply("")
			if err != nil {
				r.Error = err.Error()
			}
			r.Message = msg
			answer <- r
		case <-resync.C:
			d.resync(ctl)
		case <-retry:
			d.retryTimer = nil
			d.reconcile([]string{"retry"})
		case <-watchdog:
			// Sent from the reconcile loop itself: if a pass hangs, the
			// pings stop and systemd restarts the daemon.
			d.o.Notify("WATCHDOG=1")
		}
	}
}

// signals are SIGHUP (reload), SIGTERM and SIGINT, or the test's.
func (d *daemon) signals() (<-chan os.Signal, func()) {
	if d.o.Signals != nil {
		return d.o.Signals, func() {}
	}
	ch := make(chan os.Signal, 4)
	signal.Notify(ch, syscall.SIGHUP, syscall.SIGTERM, syscall.SIGINT)
	return ch, func() { signal.Stop(ch) }
}

// watchdog ticks at a third of systemd's watchdog interval (never when the
// unit has none).
func (d *daemon) watchdog() (<-chan time.Time, func()) {
	wd, err := sd.SdWatchdogEnabled(false)
	if err != nil || wd <= 0 {
		return nil, func() {}
	}
	t := time.NewTicker(wd / 3)
	d.log.Info("systemd watchdog enabled", "interval", wd)
	return t.C, t.Stop
}

// woken is a pass for what the watchers saw.
func (d *daemon) woken() {
	if d.o.Debounce > 0 {
		time.Sleep(d.o.Debounce)
	}
	// Empty when the triggers were already handled by the pass that
	// followed an earlier wake-up.
	triggers := d.w.take()
	if d.retryTimer == nil {
		// An added address only matters to a pass that failed.
		triggers = slices.DeleteFunc(triggers, func(t string) bool { return t == agent.TriggerAddressAdded })
	}
	if len(triggers) > 0 {
		d.reconcile(triggers)
	}
}

// resync is the periodic full pass, the backstop for what the watchers miss.
func (d *daemon) resync(ctl *control) {
	// The drain file is the operator's choice; a CLI whose request never
	// reached the daemon (its socket backlog full) recorded it all the
	// same, and so did a hand edit.
	_ = ctl.syncDrain("resync")
	d.reconcile([]string{"resync"}) // and gives back what a health flood grew the heap to
}

func (d *daemon) stop(why string) {
	d.o.Notify("STOPPING=1")
	d.state.SetStopping()
	d.log.Info("dsr-agent daemon stopping; host configuration left in place", "reason", why)
}

// reconcile is one pass: apply (observe, diff, change what differs), then
// publish what the host looks like.
func (d *daemon) reconcile(triggers []string) {
	// A pass's garbage (address dumps, the plan, the status document; the
	// first apply's is the peak of the daemon's life) is dead when it
	// returns: give it back at once rather than carry it as RSS until the
	// next resync -- steady-state RSS is what every host of a fleet pays.
	// With a live heap of 1-2 MB this costs a millisecond or two; passes
	// run on events and every resync (issue 19: the sysctl poll's pass
	// right after READY kept 2-3 MB for 30 s).
	defer debug.FreeOSMemory()
	start := time.Now()
	trigger := strings.Join(triggers, ",")
	// A service that started or stopped is no kernel drift: apply has
	// nothing to do for it, only the observation changes.
	listenerOnly := d.applied && d.retryTimer == nil && slices.Equal(triggers, []string{"listener"})
	var plan *agent.Plan
	var aerr error
	if !listenerOnly {
		var want *agent.Desired
		plan, want, aerr = d.o.Engine.Converge(d.cfg, d.want)
		if want != nil {
			d.want = want
		}
		if notes := plan.NotesOrNil(); plan != nil && !slices.Equal(notes, d.lastNotes) {
			// (No plan: the pass failed before planning; the notes are
			// unknown, not gone.)
			for _, n := range notes {
				d.log.Warn("host", "note", n, "trigger", trigger)
			}
			d.lastNotes = notes
		}
	}
	changes := plan.Visible()
	// Changes after a reload are the new config taking effect, not drift.
	drift := d.applied && !slices.Contains(triggers, "reload")
	if len(changes) > 0 {
		// Our own writes may have moved a watched sysctl: have the next
		// poll verify instead of comparing with a value read before them.
		d.watchers.Changed()
	}
	for _, c := range changes {
		if drift {
			d.state.Metrics().Repair(string(c.Kind))
			d.log.Warn("drift repaired", c.LogAttrs("trigger", trigger)...)
		} else {
			d.log.Info("applied", c.LogAttrs()...)
		}
	}
	if aerr == nil && len(changes) == 0 && d.lastInSync && !slices.Contains(triggers, "listener") {
		// Nothing changed and the host was in sync: the published snapshot
		// still holds; skip the second kernel dump.
		d.state.Metrics().Reconcile(trigger, true, time.Since(start).Seconds())
		d.afterSuccess()
		return
	}
	snap := health.Snapshot{Time: time.Now()}
	rep, oerr := d.o.Engine.Status(d.cfg)
	switch {
	case oerr != nil:
		d.log.Error("observe host failed", "err", oerr)
		snap.Report = agent.Report{Mode: string(d.cfg.Mode)}
		snap.Error = oerr.Error()
	default:
		snap.Report = *rep
	}
	if aerr != nil {
		snap.Error = aerr.Error() // the apply's failure explains the observation's
	}
	d.lastInSync = aerr == nil && oerr == nil && snap.InSync
	d.state.SetSnapshot(snap)
	d.state.Metrics().Reconcile(trigger, aerr == nil && oerr == nil, time.Since(start).Seconds())
	if err := cmp.Or(aerr, oerr); err != nil {
		d.log.Error("reconcile failed; will retry", "err", err, "trigger", trigger, "retry_in", d.retryDelay)
		d.retryTimer = time.NewTimer(d.retryDelay)
		d.retryDelay = min(d.retryDelay*2, maxRetry)
		return
	}
	d.afterSuccess()
	d.log.Debug("reconciled", "trigger", trigger, "changes", len(changes), "took", time.Since(start))
}

// loadWhenHostReady loads the config. At boot the unit starts before the
// network is configured, so a NIC may not exist yet or have no default route
// to infer it from: such host-dependent errors are waited out (systemd's
// start timeout bounds the wait), while a config that is wrong in itself
// fails at once.
func loadWhenHostReady(ctx context.Context, o Options) (*agent.Config, *agent.Desired, error) {
	for delay := 100 * time.Millisecond; ; delay = min(2*delay, 5*time.Second) {
		cfg, want, err := o.Engine.Load(o.ConfigPath, o.ConfigDir)
		if err == nil || !errors.Is(err, agent.ErrHostMismatch) {
			return cfg, want, err
		}
		o.Log.Warn("config does not match the host yet; waiting", "err", err, "retry_in", delay)
		o.Notify("STATUS=waiting for the host: " + strings.ReplaceAll(err.Error(), "\n", " "))
		select {
		case <-ctx.Done():
			return nil, nil, err
		case <-time.After(delay):
		}
	}
}

func (d *daemon) afterSuccess() {
	d.retryDelay = time.Second
	if d.retryTimer != nil {
		d.retryTimer.Stop()
		d.retryTimer = nil
	}
	if !d.applied {
		d.applied = true
		d.o.Notify(fmt.Sprintf("READY=1\nSTATUS=converged: mode %s, %d VIP(s)", d.cfg.Mode, len(d.cfg.VIPs)))
		d.log.Info("host converged; ready", "mode", d.cfg.Mode, "vips", len(d.cfg.VIPs), "prefixes", len(d.cfg.Prefixes))
	}
}

// reload re-reads the config. An invalid config is refused and the running
// one kept: a typo pushed by configuration management must not take the VIPs
// down. It returns the outcome as told to systemd, or why it was refused.
func (d *daemon) reload(ctx context.Context) (string, error) {
	d.o.Notify("RELOADING=1\nMONOTONIC_USEC=" + sd.SdNotifyMonotonicUsec())
	cfg, next, err := d.o.Engine.Load(d.o.ConfigPath, d.o.ConfigDir)
	if err != nil {
		d.log.Error("reload refused: new config is invalid; keeping the running config", "config", d.o.ConfigPath, "err", err)
		d.o.Notify("READY=1\nSTATUS=reload refused (invalid config); running the previous config")
		return "", fmt.Errorf("reload refused: new config %s is invalid; keeping the running config: %w", d.o.ConfigPath, err)
	}
	prev := d.want
	d.cfg, d.want = cfg, next
	d.lastInSync = false
	d.log.Info("reloading config", "config", d.o.ConfigPath, "mode", cfg.Mode, "vips", len(cfg.VIPs), "prefixes", len(cfg.Prefixes))
	d.configureHealth(ctx, prev.Health)
	d.watchers.Follow(next)
	d.reconcile([]string{"reload"})
	msg := fmt.Sprintf("reloaded: mode %s, %d VIP(s)", cfg.Mode, len(cfg.VIPs))
	d.o.Notify("READY=1\nSTATUS=" + msg)
	return msg, nil
}
