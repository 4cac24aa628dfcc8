package lab

// Tearing labs down: Close, the process-wide registry signal handlers use, and
// the sweep of namespaces left by killed runs; plus the /proc/sys helpers the
// nodes' setup and checks share.

import (
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"syscall"

	"github.com/vishvananda/netns"
	"golang.org/x/sys/unix"
)

var (
	liveMu sync.Mutex
	live   = map[*Lab]struct{}{}
)

// CloseAll tears down every lab of this process; signal handlers call it so an
// interrupted run leaves nothing behind.
func CloseAll() {
	liveMu.Lock()
	labs := make([]*Lab, 0, len(live))
	for l := range live {
		labs = append(labs, l)
	}
	liveMu.Unlock()
	for _, l := range labs {
		_ = l.Close()
	}
}

// Close deletes every namespace of the lab (links go with them). Safe to call
// more than once and from a signal handler.
func (l *Lab) Close() error {
	l.closeOnce.Do(func() {
		var errs []error
		// Servers first, hub last: purely cosmetic, namespaces are independent.
		for i := len(l.created) - 1; i >= 0; i-- {
			n := l.created[i]
			if n.NL != nil {
				n.NL.Close()
			}
			_ = n.Handle.Close()
			if err := netns.DeleteNamed(n.NS); err != nil && !errors.Is(err, os.ErrNotExist) {
				errs = append(errs, fmt.Errorf("delete netns %s: %w", n.NS, err))
			}
		}
		l.closeErr = errors.Join(errs...)
		liveMu.Lock()
		delete(live, l)
		liveMu.Unlock()
		l.log.Info("lab down", "id", l.ID, "err", l.closeErr)
	})
	return l.closeErr
}

var orphanRE = regexp.MustCompile(`^` + regexp.QuoteMeta(NamePrefix) + `(\d+)-[0-9a-f]{8}-[a-z0-9]+$`)

// SweepOrphans deletes lab namespaces whose creating process is gone (a test
// binary killed by a timeout cannot run its cleanups). Only names matching the
// lab's own pattern are considered, never anything else.
func SweepOrphans(log *slog.Logger) {
	ents, err := os.ReadDir("/run/netns")
	if err != nil {
		return
	}
	for _, e := range ents {
		m := orphanRE.FindStringSubmatch(e.Name())
		if m == nil {
			continue
		}
		pid, _ := strconv.Atoi(m[1])
		if pid == os.Getpid() || processAlive(pid) {
			continue
		}
		// A server process (unbound) that outlived its lab would keep the
		// namespace alive after the name is gone.
		killProcsIn(filepath.Join("/run/netns", e.Name()), log)
		if err := netns.DeleteNamed(e.Name()); err != nil {
			log.Warn("delete orphaned lab netns", "netns", e.Name(), "err", err)
			continue
		}
		log.Info("deleted orphaned lab netns", "netns", e.Name())
	}
}

// killProcsIn kills every process whose network namespace is the one bound
// at nsPath (compared by device and inode, as `ip netns pids` does).
func killProcsIn(nsPath string, log *slog.Logger) {
	var ns unix.Stat_t
	if err := unix.Stat(nsPath, &ns); err != nil {
		return
	}
	procs, _ := filepath.Glob("/proc/[0-9]*/ns/net")
	for _, p := range procs {
		var st unix.Stat_t
		if unix.Stat(p, &st) != nil || st.Dev != ns.Dev || st.Ino != ns.Ino {
			continue
		}
		pid, err := strconv.Atoi(strings.Split(p, "/")[2])
		if err != nil || pid == os.Getpid() {
			continue
		}
		if err := syscall.Kill(pid, syscall.SIGKILL); err == nil {
			log.Info("killed process left in orphaned lab netns", "pid", pid, "netns", nsPath)
		}
	}
}

func processAlive(pid int) bool {
	err := syscall.Kill(pid, 0)
	return err == nil || errors.Is(err, syscall.EPERM)
}

func writeSysctl(components []string, val string) error {
	p := "/proc/sys/" + strings.Join(components, "/")
	if err := os.WriteFile(p, []byte(val), 0o644); err != nil {
		return fmt.Errorf("write %s: %w", p, err)
	}
	return nil
}

func readSysctl(components []string) (string, error) {
	p := "/proc/sys/" + strings.Join(components, "/")
	b, err := os.ReadFile(p)
	if err != nil {
		return "", fmt.Errorf("read %s: %w", p, err)
	}
	return strings.TrimSpace(string(b)), nil
}
