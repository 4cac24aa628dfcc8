package health

import (
	"context"
	"errors"
	"fmt"
	"io"
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
// process group, with stdin on /dev/null.
//
// The exit status decides, as soon as the command exits: its output goes to
// a pipe read alongside, and a background child still holding that pipe
// does not delay or change the result (os/exec's WaitDelay would turn such
// a success into an error). At exit or at the timeout the whole process
// group is killed (SIGKILL), and descendants that left the group (setsid)
// are found among the orphans re-parented to the daemon and killed too
// (reap.go). The first execOutputMax bytes of output are kept for the
// reason.
type execProber struct{ argv []string }

const (
	execOutputMax = 4 << 10
	execReasonMax = 200
	// execOutputGrace is how long a failed command's output may still take
	// to arrive after it and its descendants were killed; output held by a
	// process that could not be found is not waited for.
	execOutputGrace = 100 * time.Millisecond
)

// NewExecProber checks a command; argv[0] must be an absolute path.
func NewExecProber(argv []string) (Prober, error) {
	if len(argv) == 0 {
		return nil, errors.New("exec: no command")
	}
	return &execProber{argv: argv}, nil
}

func (p *execProber) Probe(ctx context.Context) (Result, error) {
	if err := execRuns.becomeSubreaper(); err != nil {
		return Result{}, fmt.Errorf("exec %s: %w", p.argv[0], err)
	}
	status, timedOut, out, err := p.run(ctx)
	if err != nil {
		return Result{}, failf("exec %s: %v", p.argv[0], unwrapAll(err))
	}
	switch {
	case timedOut && status.Signaled():
		return Result{}, ctx.Err() // killed at the timeout
	case status.Signaled():
		return Result{}, failf("killed by signal %s%s", status.Signal(), out.reason())
	case status.ExitStatus() == 0:
		return Result{}, nil
	case status.ExitStatus() >= 2:
		w := status.ExitStatus() - 2
		return Result{Weight: &w}, nil
	}
	return Result{}, failf("exit %d%s", status.ExitStatus(), out.reason())
}

// run starts the command, waits for it to exit or for ctx, kills its group
// and its escaped descendants, and returns its wait status; timedOut is set
// when it was killed because ctx ended.
func (p *execProber) run(ctx context.Context) (status syscall.WaitStatus, timedOut bool, out *boundedBuffer, err error) {
	out = &boundedBuffer{max: execOutputMax}
	pr, pw, err := os.Pipe()
	if err != nil {
		return 0, false, out, err
	}
	// Both ends are ours to close whatever happens below (pw again after
	// Start: the child has its own copy).
	defer pr.Close()
	defer pw.Close()
	run := execRuns.begin()
	// Once the leader is waited for, the run's orphans are no one's: take
	// the run out of flight, then kill and reap them.
	finished := false
	finish := func() {
		if !finished {
			finished = true
			execRuns.end(run)
			execRuns.sweep()
		}
	}
	defer finish()

	cmd := exec.Command(p.argv[0], p.argv[1:]...)
	cmd.Dir = "/"
	cmd.Env = append(checkEnv(), execRunEnv+"="+run)
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	// An *os.File is handed to the child as is: os/exec starts no copying
	// goroutine, so Wait returns when the command exits, not when every
	// holder of the pipe has closed it.
	cmd.Stdout, cmd.Stderr = pw, pw
	execRuns.spawn.RLock()
	err = cmd.Start()
	if err == nil {
		execRuns.started(run, cmd.Process.Pid)
	}
	execRuns.spawn.RUnlock()
	if err != nil {
		return 0, false, out, err
	}
	pw.Close()
	copied := make(chan struct{})
	go func() {
		defer close(copied)
		_, _ = io.Copy(out, pr)
	}()

	pid := cmd.Process.Pid
	exited := make(chan error, 1)
	go func() { exited <- waitExited(pid) }()
	select {
	case err = <-exited:
	case <-ctx.Done():
		timedOut = true
		// The group's id is the leader's pid (Setpgid).
		_ = syscall.Kill(-pid, syscall.SIGKILL)
		err = <-exited
	}
	if err == nil {
		// The leader is a zombie until Wait: its pid, and so the group id,
		// cannot have been reused.
		_ = syscall.Kill(-pid, syscall.SIGKILL)
	}
	// The exit status; an ExitError is just a non-zero one.
	var ee *exec.ExitError
	if werr := cmd.Wait(); werr != nil && !errors.As(werr, &ee) {
		return 0, timedOut, out, werr
	}
	status, _ = cmd.ProcessState.Sys().(syscall.WaitStatus)

	finish() // the pipe's other holders are dead now: EOF comes at once
	grace := time.Duration(0)
	if !timedOut && (status.ExitStatus() == 1 || status.Signaled()) {
		grace = execOutputGrace // the reason shows the output
	}
	_ = pr.SetReadDeadline(time.Now().Add(grace))
	<-copied
	return status, timedOut, out, nil
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
