// Package instance keeps one dsr-agent per network namespace. Two daemons
// with different state dirs in one namespace would delete each other's VIPs
// and tables thousands of times a second, and a CLI apply or remove would be
// undone by a running daemon without a word. The lock is keyed by the
// namespace (its inode), not by the state dir, and lives in a root-only
// runtime directory so no other user can take it first.
package instance

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"golang.org/x/sys/unix"

	"github.com/dsr-agent/dsr-agent/internal/safedir"
)

// Role is what the holder is doing.
type Role string

const (
	Daemon Role = "run"
	Apply  Role = "apply"
	Remove Role = "remove"
)

// Holder describes the process holding a namespace's lock.
type Holder struct {
	PID      int
	Role     Role
	StateDir string
	Config   string
}

func (h Holder) String() string {
	return fmt.Sprintf("dsr-agent %s (pid %d, config %s, state dir %s)", h.Role, h.PID, h.Config, h.StateDir)
}

// BusyError says who holds the lock.
type BusyError struct{ Holder Holder }

func (e *BusyError) Error() string {
	return e.Holder.String() + " is running in this network namespace"
}

// ErrBusy matches every *BusyError.
var ErrBusy = errors.New("another dsr-agent runs in this network namespace")

func (e *BusyError) Is(target error) bool { return target == ErrBusy }

// Lock is a held namespace lock; Release lets it go (so does process exit).
type Lock struct{ f *os.File }

// Release drops the lock. The file stays: deleting a file another process
// may have open to lock would let two processes each hold "the" lock.
func (l *Lock) Release() {
	if l != nil && l.f != nil {
		l.f.Close()
		l.f = nil
	}
}

// RunDir is where the per-namespace lock files live (tmpfs: they vanish at
// boot, and a stale file is harmless since flock dies with its process).
func RunDir() string {
	if d := os.Getenv("DSR_AGENT_RUN_DIR"); d != "" {
		return d
	}
	return "/run/dsr-agent"
}

// Acquire takes the lock of the caller's network namespace for role. A
// daemon holding it is never waited for: Acquire returns a *BusyError so the
// caller can say what to do instead. Any other holder (a CLI apply or remove
// that finishes in moments) is waited for, until ctx ends. A daemon asking
// while another daemon holds it gets the *BusyError too.
func Acquire(ctx context.Context, who Holder) (*Lock, error) {
	dir := RunDir()
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, fmt.Errorf("create %s for the namespace lock: %w", dir, err)
	}
	if err := safedir.Check(dir); err != nil {
		return nil, fmt.Errorf("namespace lock: %w", err)
	}
	var st unix.Stat_t
	if err := unix.Stat("/proc/thread-self/ns/net", &st); err != nil {
		return nil, fmt.Errorf("identify this network namespace: %w", err)
	}
	path := filepath.Join(dir, fmt.Sprintf("netns-%d-%d.lock", st.Dev, st.Ino))
	f, err := os.OpenFile(path, os.O_CREATE|os.O_RDWR|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0o600)
	if err != nil {
		return nil, fmt.Errorf("open namespace lock %s: %w", path, err)
	}
	waiting := false
	for {
		err := unix.Flock(int(f.Fd()), unix.LOCK_EX|unix.LOCK_NB)
		if err == nil {
			break
		}
		if !errors.Is(err, unix.EWOULDBLOCK) {
			f.Close()
			return nil, fmt.Errorf("lock %s: %w", path, err)
		}
		h, _ := readHolder(path)
		if h.Role == Daemon {
			f.Close()
			return nil, &BusyError{Holder: h}
		}
		if !waiting && h.PID != 0 {
			fmt.Fprintf(os.Stderr, "dsr-agent: waiting for %s to finish\n", h)
			waiting = true
		}
		select {
		case <-ctx.Done():
			f.Close()
			return nil, fmt.Errorf("waiting for the namespace lock: %w", ctx.Err())
		case <-time.After(100 * time.Millisecond):
		}
	}
	who.PID = os.Getpid()
	line := fmt.Sprintf("pid=%d role=%s config=%s state=%s\n", who.PID, who.Role, who.Config, who.StateDir)
	if err := f.Truncate(0); err == nil {
		_, _ = f.WriteAt([]byte(line), 0)
	}
	return &Lock{f: f}, nil
}

func readHolder(path string) (Holder, error) {
	f, err := os.OpenFile(path, os.O_RDONLY|unix.O_NOFOLLOW, 0)
	if err != nil {
		return Holder{}, err
	}
	defer f.Close()
	buf := make([]byte, 4096)
	n, _ := f.Read(buf)
	var h Holder
	for _, field := range strings.Fields(string(buf[:n])) {
		k, v, _ := strings.Cut(field, "=")
		switch k {
		case "pid":
			h.PID, _ = strconv.Atoi(v)
		case "role":
			h.Role = Role(v)
		case "config":
			h.Config = v
		case "state":
			h.StateDir = v
		}
	}
	return h, nil
}
