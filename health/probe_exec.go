package health

import (
	"context"
	"errors"
	"os"
	"os/exec"
	"strings"
	"sync"
	"syscall"
	"time"
)

// execProber runs a command with keepalived MISC_CHECK's exit codes: 0 up,
// 1 down, 2-255 up with the dynamic weight code-2 (recorded in the check's
// status; nothing acts on it yet). It runs without a shell, in its own
// process group, with stdin on /dev/null; at the timeout the whole group is
// killed (SIGKILL), so a hung grandchild does not outlive the probe. The
// first execOutputMax bytes of stdout and stderr are kept for the reason.
type execProber struct{ argv []string }

const (
	execOutputMax = 4 << 10
	execReasonMax = 200
)

// NewExecProber checks a command; argv[0] must be an absolute path.
func NewExecProber(argv []string) (Prober, error) {
	if len(argv) == 0 {
		return nil, errors.New("exec: no command")
	}
	return &execProber{argv: argv}, nil
}

func (p *execProber) Probe(ctx context.Context) (Result, error) {
	cmd := exec.CommandContext(ctx, p.argv[0], p.argv[1:]...)
	cmd.Dir = "/"
	cmd.Env = checkEnv()
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	cmd.Cancel = func() error {
		// The group's id is the leader's pid (Setpgid).
		return syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL)
	}
	// Killed children close the pipe; anything that escaped the group and
	// still holds it is not waited for.
	cmd.WaitDelay = 500 * time.Millisecond
	out := &boundedBuffer{max: execOutputMax}
	cmd.Stdout, cmd.Stderr = out, out
	err := cmd.Run()
	if ctx.Err() != nil {
		return Result{}, ctx.Err() // the group was killed by cmd.Cancel
	}
	var ee *exec.ExitError
	switch {
	case err == nil:
		return Result{}, nil
	case errors.As(err, &ee):
		ws, _ := ee.Sys().(syscall.WaitStatus)
		if ws.Signaled() {
			return Result{}, failf("killed by signal %s%s", ws.Signal(), out.reason())
		}
		code := ee.ExitCode()
		if code >= 2 {
			w := code - 2
			return Result{Weight: &w}, nil
		}
		return Result{}, failf("exit %d%s", code, out.reason())
	default:
		return Result{}, failf("exec %s: %v", p.argv[0], unwrapAll(err))
	}
}

// checkEnv is the daemon's environment without systemd's per-service
// variables: a check command must not talk to the service manager as if it
// were the daemon (sd_notify) or take its sockets.
func checkEnv() []string {
	var env []string
	for _, kv := range os.Environ() {
		name, _, _ := strings.Cut(kv, "=")
		switch {
		case name == "NOTIFY_SOCKET", strings.HasPrefix(name, "WATCHDOG_"), strings.HasPrefix(name, "LISTEN_"):
			continue
		}
		env = append(env, kv)
	}
	return env
}

// unwrapAll drops "fork/exec /path:" prefixes down to the errno.
func unwrapAll(err error) error {
	var errno syscall.Errno
	if errors.As(err, &errno) {
		return errno
	}
	return err
}

// boundedBuffer keeps the first max bytes written and counts the rest
// (writes never fail, so the command is never stopped by a full buffer).
type boundedBuffer struct {
	mu      sync.Mutex
	max     int
	b       []byte
	dropped int
}

func (w *boundedBuffer) Write(p []byte) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	keep := min(len(p), w.max-len(w.b))
	w.b = append(w.b, p[:keep]...)
	w.dropped += len(p) - keep
	return len(p), nil
}

// reason is ": " and the output's first non-empty line, shortened; empty
// when the command printed nothing.
func (w *boundedBuffer) reason() string {
	w.mu.Lock()
	defer w.mu.Unlock()
	for l := range strings.SplitSeq(string(w.b), "\n") {
		if l = strings.TrimSpace(l); l != "" {
			if len(l) > execReasonMax {
				l = l[:execReasonMax] + "…"
			}
			return ": " + l
		}
	}
	return ""
}
