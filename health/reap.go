package health

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"sync"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

// Exec checks may leave descendants behind: a background child still in the
// check's process group, or one that called setsid and left it. The daemon
// makes itself a child subreaper (PR_SET_CHILD_SUBREAPER) the first time it
// runs an exec check, so every orphan of a check is re-parented to it rather
// than to PID 1 (which on some hosts never reaps), and after each run it
// kills and reaps the orphans that run left.
//
// There is no global wait(-1): it would steal exit statuses from os/exec's
// Wait (the check leaders, and any command another package runs). Only
// processes identified as a check's are touched:
//   - a child of ours in our own process group is never a check's (checks
//     run in their own group; commands other packages run, such as
//     modprobe, stay in ours): left alone;
//   - a check leader that is still ours to Wait for: left to os/exec;
//   - a zombie outside our group: reaped (it can only be a check's orphan,
//     and no one else can Wait for it);
//   - a live process carries the run id of the check that started it in
//     its environment (execRunEnv): if that run is still in flight the
//     process is left to it, otherwise it is killed and reaped. One without
//     the variable (its environment was replaced) is killed only when no
//     check is in flight, so a sibling check's helper is never killed
//     while that check may still need it.
//
// Under systemd the unit's cgroup holds every descendant as well, and
// KillMode=control-group (the default) kills whatever is left at stop.

// execRunEnv is set in every exec check's environment to its run id.
const execRunEnv = "DSR_AGENT_CHECK_RUN"

// reapWait bounds how long a sweep waits for one killed process to die
// (a process in uninterruptible sleep dies when it wakes; a later sweep
// reaps it).
const reapWait = time.Second

type execRegistry struct {
	// spawn is held shared while a run starts its command and registers
	// it, and exclusively by a sweep: a sweep never sees a leader that is
	// not registered yet.
	spawn sync.RWMutex
	mu    sync.Mutex
	seq   uint64
	// live maps each run in flight to its leader's pid (0 until started).
	live map[string]int

	subreaper sync.Once
	subErr    error
}

var execRuns = &execRegistry{live: map[string]int{}}

// becomeSubreaper makes this process the reaper of its descendants' orphans.
func (r *execRegistry) becomeSubreaper() error {
	r.subreaper.Do(func() {
		if err := unix.Prctl(unix.PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0); err != nil {
			r.subErr = fmt.Errorf("prctl PR_SET_CHILD_SUBREAPER: %w", err)
		}
	})
	return r.subErr
}

// begin allocates a run id; the run is in flight until end.
func (r *execRegistry) begin() string {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.seq++
	id := strconv.FormatUint(r.seq, 10)
	r.live[id] = 0
	return id
}

// started records the run's leader; call with spawn held shared.
func (r *execRegistry) started(id string, pid int) {
	r.mu.Lock()
	r.live[id] = pid
	r.mu.Unlock()
}

// end takes the run out of flight (its leader has been waited for).
func (r *execRegistry) end(id string) {
	r.mu.Lock()
	delete(r.live, id)
	r.mu.Unlock()
}

// sweep kills and reaps the orphans of finished runs, until a pass finds
// none (killing one re-parents its own children to us, and the next pass
// finds them).
func (r *execRegistry) sweep() {
	r.spawn.Lock()
	defer r.spawn.Unlock()
	self, pgrp := os.Getpid(), syscall.Getpgrp()
	for range 64 {
		r.mu.Lock()
		leaders := make(map[int]bool, len(r.live))
		runs := make(map[string]bool, len(r.live))
		for id, pid := range r.live {
			runs[id] = true
			if pid != 0 {
				leaders[pid] = true
			}
		}
		r.mu.Unlock()
		var kill []int
		for _, pid := range ourChildren(self) {
			if leaders[pid] {
				continue
			}
			st, err := readProcStat(pid)
			if err != nil || st.ppid != self || st.pgrp == pgrp {
				continue
			}
			if st.state == 'Z' {
				reap(pid)
				continue
			}
			if leaders[st.pgrp] {
				continue // still in a running check's group
			}
			switch run, ok := procEnv(pid, execRunEnv); {
			case ok && runs[run]:
				continue
			case !ok && len(runs) > 0:
				continue
			}
			kill = append(kill, pid)
		}
		if len(kill) == 0 {
			return
		}
		for _, pid := range kill {
			// Still our child (only we reap it), so the pid is not reused.
			_ = syscall.Kill(pid, syscall.SIGKILL)
		}
		for _, pid := range kill {
			reapWithin(pid, reapWait)
		}
	}
}

// reap collects a zombie child without blocking.
func reap(pid int) {
	var ws syscall.WaitStatus
	_, _ = syscall.Wait4(pid, &ws, syscall.WNOHANG, nil)
}

// reapWithin waits up to d for a killed child to die, then reaps it.
func reapWithin(pid int, d time.Duration) {
	fd, err := unix.PidfdOpen(pid, 0)
	if err != nil {
		reap(pid)
		return
	}
	defer unix.Close(fd)
	fds := []unix.PollFd{{Fd: int32(fd), Events: unix.POLLIN}}
	deadline := time.Now().Add(d)
	for {
		left := time.Until(deadline)
		if left <= 0 {
			return // dies later; a later sweep reaps it
		}
		n, err := unix.Poll(fds, int(left.Milliseconds())+1)
		if errors.Is(err, unix.EINTR) {
			continue
		}
		if err != nil || n > 0 {
			break
		}
	}
	var info unix.Siginfo
	for {
		err := unix.Waitid(unix.P_PIDFD, fd, &info, unix.WEXITED|unix.WNOHANG, nil)
		if !errors.Is(err, unix.EINTR) {
			return
		}
	}
}

// waitExited blocks until child pid has exited, without reaping it: the
// zombie keeps its pid and process group id reserved, so the group can be
// killed safely before os/exec's Wait collects the status.
func waitExited(pid int) error {
	var info unix.Siginfo
	for {
		err := unix.Waitid(unix.P_PID, pid, &info, unix.WEXITED|unix.WNOWAIT, nil)
		if !errors.Is(err, unix.EINTR) {
			return err
		}
	}
}

// ourChildren lists the children of this process from
// /proc/self/task/*/children (each thread's; a re-parented orphan is
// attached to one of our threads), or by scanning /proc when the kernel
// lacks CONFIG_PROC_CHILDREN.
func ourChildren(self int) []int {
	files, _ := filepath.Glob("/proc/self/task/*/children")
	if len(files) == 0 {
		return scanChildren(self)
	}
	var pids []int
	for _, f := range files {
		b, err := os.ReadFile(f)
		if err != nil {
			continue
		}
		for _, s := range bytes.Fields(b) {
			if pid, err := strconv.Atoi(string(s)); err == nil {
				pids = append(pids, pid)
			}
		}
	}
	return pids
}

func scanChildren(self int) []int {
	ents, _ := os.ReadDir("/proc")
	var pids []int
	for _, e := range ents {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		if st, err := readProcStat(pid); err == nil && st.ppid == self {
			pids = append(pids, pid)
		}
	}
	return pids
}

type procStat struct {
	state               byte
	ppid, pgrp, session int
}

// readProcStat parses /proc/PID/stat's state, ppid, pgrp and session (the
// fields after the command name, which may itself contain spaces and ')').
func readProcStat(pid int) (procStat, error) {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return procStat{}, err
	}
	i := bytes.LastIndexByte(b, ')')
	if i < 0 {
		return procStat{}, fmt.Errorf("/proc/%d/stat: no command name", pid)
	}
	f := bytes.Fields(b[i+1:])
	if len(f) < 4 || len(f[0]) != 1 {
		return procStat{}, fmt.Errorf("/proc/%d/stat: short", pid)
	}
	st := procStat{state: f[0][0]}
	for j, p := range []*int{&st.ppid, &st.pgrp, &st.session} {
		if *p, err = strconv.Atoi(string(f[j+1])); err != nil {
			return procStat{}, fmt.Errorf("/proc/%d/stat: %w", pid, err)
		}
	}
	return st, nil
}

// procEnv returns the value of name in the environment pid started with.
func procEnv(pid int, name string) (string, bool) {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/environ")
	if err != nil {
		return "", false
	}
	key := []byte(name + "=")
	for kv := range bytes.SplitSeq(b, []byte{0}) {
		if v, ok := bytes.CutPrefix(kv, key); ok {
			return string(v), true
		}
	}
	return "", false
}
