package sysctl

import (
	"context"
	"path/filepath"
	"sync"
	"time"

	"golang.org/x/sys/unix"

	"github.com/dsr-agent/dsr-agent/internal/resubscribe"
)

// DefaultPoll is how often the watched sysctls are read.
//
// A reset arp_ignore/arp_announce is the most dangerous drift there is (the
// host answers ARP for its VIPs at once), and the kernel does not announce
// it: devinet_conf_proc() sends RTM_NEWNETCONF only for forwarding,
// rp_filter, mc_forwarding, proxy_neigh, ignore_routes_with_linkdown and
// bc_forwarding (checked on this kernel with `ip monitor netconf`: writing
// arp_ignore/arp_announce prints nothing, rp_filter does). So the values are
// read: a handful of one-line /proc files five times a second is a few
// hundred syscalls a second and no kernel dump, which keeps idle CPU near
// zero while bounding the exposure to one interval plus one pass.
const DefaultPoll = 200 * time.Millisecond

// missing stands for a sysctl that could not be read (its interface is gone):
// a NUL never appears in a sysctl value, so it cannot equal a real one.
const missing = "\x00"

// Watcher notices a change of the watched sysctls and wakes the loop. It
// does not judge the values (the core decides what is right); it compares
// each read with the previous one.
//
// The daemon's own writes change the values behind its back: after a pass
// that changed the host, the last values read are stale (a reset repaired and
// reset again before the next poll would read as "unchanged"). So such a pass
// marks them stale and the next poll wakes the loop whatever it reads: one
// verification pass per repair, a no-op unless someone reset a value again.
//
// Each file stays open and is re-read with pread at offset 0, which makes
// the kernel format the current value again: one syscall per value instead
// of a path walk, open, read and close, and no new descriptor per poll, so
// the watcher keeps working even if the process is at its descriptor limit.
type Watcher struct {
	mu    sync.Mutex
	files []string // absolute /proc/sys paths
	fds   []int    // -1: not open (the interface is gone)
	last  []string
	stale bool
	// changed is signalled when the set of files changes, so a watcher with
	// nothing to watch sleeps instead of ticking.
	changed chan struct{}
}

// NewWatcher watches nothing until Set.
func NewWatcher() *Watcher { return &Watcher{changed: make(chan struct{}, 1)} }

// Set replaces the watched sysctls and reads their values now. The daemon
// calls it before the pass that applies a config: a reset after this read is
// seen by the next poll; one before it is seen by that pass itself.
func (s *Watcher) Set(paths []Path) {
	s.mu.Lock()
	s.closeAll()
	s.files = make([]string, len(paths))
	s.fds = make([]int, len(paths))
	s.last = make([]string, len(paths))
	var buf [32]byte
	for i, p := range paths {
		s.files[i] = filepath.Join(append([]string{"/proc/sys"}, p...)...)
		s.fds[i] = -1
		s.last[i] = string(s.read(i, buf[:]))
	}
	s.mu.Unlock()
	select {
	case s.changed <- struct{}{}:
	default:
	}
}

// close releases the descriptors.
func (s *Watcher) close() {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.closeAll()
	s.files, s.fds, s.last = nil, nil, nil
}

func (s *Watcher) closeAll() {
	for i, fd := range s.fds {
		if fd >= 0 {
			unix.Close(fd)
			s.fds[i] = -1
		}
	}
}

// Invalidate marks the last values read as stale: the daemon has just
// changed the host.
func (s *Watcher) Invalidate() {
	s.mu.Lock()
	s.stale = true
	s.mu.Unlock()
}

// poll reads every watched sysctl and reports whether any differs from the
// previous read, or the previous read is stale. Nothing is allocated unless a
// value changed.
func (s *Watcher) poll() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	var buf [32]byte
	changed := s.stale && len(s.files) > 0
	s.stale = false
	for i := range s.files {
		v := s.read(i, buf[:])
		if string(v) != s.last[i] {
			s.last[i] = string(v)
			changed = true
		}
	}
	return changed
}

// read returns the value of file i ("1\n": the newline is part of every
// value, no need to trim it), or missing. A descriptor whose sysctl was
// unregistered (its interface deleted, maybe re-created under the same name)
// fails to read; it is reopened once.
func (s *Watcher) read(i int, buf []byte) []byte {
	for attempt := 0; attempt < 2; attempt++ {
		if s.fds[i] < 0 {
			fd, err := unix.Open(s.files[i], unix.O_RDONLY|unix.O_CLOEXEC, 0)
			if err != nil {
				return []byte(missing)
			}
			s.fds[i] = fd
		}
		n, err := unix.Pread(s.fds[i], buf, 0)
		if err == nil && n > 0 {
			return buf[:n]
		}
		unix.Close(s.fds[i])
		s.fds[i] = -1
	}
	return []byte(missing)
}

func (s *Watcher) watching() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.files) > 0
}

// Run polls every interval while there is something to watch and wakes the
// loop with trigger "sysctl" on any change. It closes the files when ctx ends.
func (s *Watcher) Run(ctx context.Context, wake resubscribe.Wake, interval time.Duration) {
	defer s.close()
	t := time.NewTicker(interval)
	defer t.Stop()
	for {
		if !s.watching() {
			t.Stop()
			select {
			case <-ctx.Done():
				return
			case <-s.changed:
				t.Reset(interval)
				continue
			}
		}
		select {
		case <-ctx.Done():
			return
		case <-s.changed:
		case <-t.C:
			if s.poll() {
				wake("sysctl")
			}
		}
	}
}
