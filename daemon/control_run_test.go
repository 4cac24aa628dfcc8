package daemon

import (
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"
)

// ctlResult is one run of the dsr-agent CLI.
type ctlResult struct {
	out  string
	code int
}

// ctl runs the CLI against d's config and state dir (on the host: drain,
// undrain and reload only talk to the control socket), with a short wait
// for the daemon's confirmation.
func (d *runningDaemon) ctl(args ...string) ctlResult {
	d.t.Helper()
	argv := append([]string{"--config", d.cfgPath, "--state-dir", d.stateDir}, args...)
	cmd := exec.Command(dsrAgentBinary(d.t), argv...)
	cmd.Env = append(os.Environ(), "DSR_AGENT_CONFIRM_TIMEOUT=300ms")
	out, err := cmd.CombinedOutput()
	var ee *exec.ExitError
	code := 0
	if errors.As(err, &ee) {
		code = ee.ExitCode()
	} else if err != nil {
		d.t.Fatal(err)
	}
	return ctlResult{string(out), code}
}

func (d *runningDaemon) signal(sig syscall.Signal) {
	d.t.Helper()
	// `ip netns exec` execs the agent: the child is the daemon itself.
	if err := d.cmd.Process.Signal(sig); err != nil {
		d.t.Fatalf("signal %v: %v", sig, err)
	}
}

func drainFile(t *testing.T, stateDir string) string {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(stateDir, "drain"))
	if errors.Is(err, os.ErrNotExist) {
		return "(none)"
	}
	if err != nil {
		t.Fatal(err)
	}
	return strings.TrimSpace(string(b))
}

// TestControlWhileDaemonStopped (issue 17 point 5): with the daemon stopped
// (SIGSTOP) drain, undrain and reload cannot be confirmed. The CLI must say
// exactly what is known -- recorded, takes effect when the daemon resumes --
// with exit 3, and after SIGCONT the host must be in the state it said. A
// drain followed by an undrain while stopped must never flip the host out of
// rotation: the daemon acts on the recorded state, not on stale requests.
func TestControlWhileDaemonStopped(t *testing.T) {
	ns := setupNS(t)
	dir := t.TempDir()
	base := `mode: loopback
interfaces: [eth0]
vips: [{address: 10.77.100.1}%s]
health:
  listen: 10.77.0.2:8558
`
	d := startDaemon(t, ns, dir, fmt.Sprintf(base, ""), "--resync", "1h")
	d.waitNote("READY=1", 10*time.Second)
	hz := "10.77.0.2:8558"
	eventually(t, 3*time.Second, "healthz up", healthIs(t, ns, hz, 200, "up"))
	stopped := false
	t.Cleanup(func() {
		if stopped {
			_ = d.cmd.Process.Signal(syscall.SIGCONT)
		}
	})
	stop := func() { d.signal(syscall.SIGSTOP); stopped = true }
	cont := func() { d.signal(syscall.SIGCONT); stopped = false }

	// drain while stopped: exit 3, recorded now, in effect after SIGCONT.
	stop()
	r := d.ctl("drain")
	if r.code != 3 || !strings.Contains(r.out, "did not answer within 300ms") || !strings.Contains(r.out, "recorded") ||
		!strings.Contains(r.out, "when it resumes") {
		t.Fatalf("drain with the daemon stopped: exit %d, want 3 saying it is recorded and takes effect when the daemon resumes:\n%s", r.code, r.out)
	}
	if f := drainFile(t, d.stateDir); f != "drain" {
		t.Fatalf("after exit 3 the drain file says %q, want drain (the CLI said it was recorded)", f)
	}
	cont()
	eventually(t, 3*time.Second, "drain in effect after SIGCONT", healthIs(t, ns, hz, 503, "draining"))
	// A retry is idempotent and now confirmed.
	if r := d.ctl("drain"); r.code != 0 || !strings.Contains(r.out, "drained") {
		t.Fatalf("drain again: exit %d:\n%s", r.code, r.out)
	}
	if c, body := nsGet(t, ns, "", hz, "/healthz"); c != 503 || !strings.Contains(body, "draining") {
		t.Fatalf("drain twice: %d %q, want still draining", c, body)
	}

	// undrain while stopped: the same, back in rotation after SIGCONT.
	stop()
	r = d.ctl("undrain")
	if r.code != 3 || !strings.Contains(r.out, "did not answer within 300ms") || !strings.Contains(r.out, "resumes") {
		t.Fatalf("undrain with the daemon stopped: exit %d, want 3:\n%s", r.code, r.out)
	}
	if f := drainFile(t, d.stateDir); f != "(none)" {
		t.Fatalf("after undrain's exit 3 the drain file says %q, want none", f)
	}
	cont()
	eventually(t, 3*time.Second, "undrain in effect after SIGCONT", healthIs(t, ns, hz, 200, "up"))

	// drain, then undrain (a script rolling back), both while stopped: the
	// host must never leave rotation, not even for a moment after SIGCONT.
	logBefore := len(d.log.String())
	stop()
	if r := d.ctl("drain"); r.code != 3 {
		t.Fatalf("drain (stopped): exit %d:\n%s", r.code, r.out)
	}
	if r := d.ctl("undrain"); r.code != 3 {
		t.Fatalf("undrain (stopped): exit %d:\n%s", r.code, r.out)
	}
	cont()
	// The daemon answers the two queued requests; a confirmed status
	// request after them proves they were handled.
	if r := d.ctl("undrain"); r.code != 0 || !strings.Contains(r.out, "undrained") {
		t.Fatalf("undrain after SIGCONT: exit %d:\n%s", r.code, r.out)
	}
	if l := d.log.String()[logBefore:]; strings.Contains(l, "drain=drain") {
		t.Fatalf("a drain the operator took back while the daemon was stopped still took the host out of rotation:\n%s", l)
	}
	eventually(t, 3*time.Second, "in rotation", healthIs(t, ns, hz, 200, "up"))

	// reload while stopped: exit 3, queued, runs after SIGCONT.
	if err := os.WriteFile(d.cfgPath, []byte(fmt.Sprintf(base, ", {address: 10.77.100.2}")), 0o600); err != nil {
		t.Fatal(err)
	}
	stop()
	r = d.ctl("reload")
	if r.code != 3 || !strings.Contains(r.out, "did not answer within 300ms") || !strings.Contains(r.out, "resumes") {
		t.Fatalf("reload with the daemon stopped: exit %d, want 3:\n%s", r.code, r.out)
	}
	cont()
	if s := d.waitNote("READY=1", 5*time.Second); !strings.Contains(s, "reloaded") {
		t.Fatalf("queued reload: %q", s)
	}
	if ok, out := hasAddr(ns, "lo", "10.77.100.2/32"); !ok {
		t.Fatalf("the queued reload did not add the new VIP:\n%s", out)
	}

	// With the daemon running, reload says what happened: a bad config is
	// refused (exit 1, the reason named), a good one reloaded (exit 0).
	if err := os.WriteFile(d.cfgPath, []byte("mode: loopback\nvips: [{address: not-an-ip}]\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if r := d.ctl("reload"); r.code != 1 || !strings.Contains(r.out, "refused") || !strings.Contains(r.out, "not-an-ip") {
		t.Fatalf("reload of a bad config: exit %d, want 1 naming the reason:\n%s", r.code, r.out)
	}
	if err := os.WriteFile(d.cfgPath, []byte(fmt.Sprintf(base, "")), 0o600); err != nil {
		t.Fatal(err)
	}
	if r := d.ctl("reload"); r.code != 0 || !strings.Contains(r.out, "reloaded: mode loopback, 1 VIP(s)") {
		t.Fatalf("reload: exit %d:\n%s", r.code, r.out)
	}
	d.stop()

	// No daemon: drain still records the choice (exit 0); reload has
	// nothing to reload (exit 1).
	if r := d.ctl("drain"); r.code != 0 || !strings.Contains(r.out, "not running") || drainFile(t, d.stateDir) != "drain" {
		t.Fatalf("drain without a daemon: exit %d, file %q:\n%s", r.code, drainFile(t, d.stateDir), r.out)
	}
	if r := d.ctl("reload"); r.code != 1 || !strings.Contains(r.out, "not running") {
		t.Fatalf("reload without a daemon: exit %d:\n%s", r.code, r.out)
	}
}
