package health

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"sync"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// The exec tests count processes in /proc. The test binary is made a child
// subreaper first, as the daemon is: on the development machines PID 1 does
// not reap orphans, and an orphan re-parented there would be invisible to a
// count of our children.

// tagEnv marks every process a test starts (checkEnv passes the daemon's
// environment on, and descendants inherit it), so leftovers are found
// wherever they were re-parented.
const tagEnv = "DSR_AGENT_TEST_TAG"

func tagProcesses(t *testing.T) string {
	t.Helper()
	if err := unix.Prctl(unix.PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0); err != nil {
		t.Fatalf("become subreaper: %v", err)
	}
	tag := fmt.Sprintf("%s-%d-%d", t.Name(), os.Getpid(), time.Now().UnixNano())
	t.Setenv(tagEnv, tag)
	return tag
}

// tagged lists live processes carrying tag in their environment (a zombie
// has no environment left; zombies are counted by ourZombies).
func tagged(tag string) []int {
	want := []byte("\x00" + tagEnv + "=" + tag + "\x00")
	ents, _ := os.ReadDir("/proc")
	var pids []int
	for _, e := range ents {
		pid, err := strconv.Atoi(e.Name())
		if err != nil || pid == os.Getpid() {
			continue
		}
		env, err := os.ReadFile("/proc/" + e.Name() + "/environ")
		if err != nil {
			continue
		}
		if bytes.Contains(append([]byte{0}, env...), want) {
			pids = append(pids, pid)
		}
	}
	return pids
}

// ourZombies lists our children that are zombies.
func ourZombies() []int {
	ents, _ := os.ReadDir("/proc")
	var pids []int
	for _, e := range ents {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		st, err := readProcStat(pid)
		if err == nil && st.ppid == os.Getpid() && st.state == 'Z' {
			pids = append(pids, pid)
		}
	}
	return pids
}

// checkNoLeftovers fails when a process started under tag is alive or a
// child of ours is a zombie, and kills what it finds so the next test
// starts clean.
func checkNoLeftovers(t *testing.T, tag string) {
	t.Helper()
	if pids := tagged(tag); len(pids) > 0 {
		t.Errorf("%d processes of the checks still alive: %v", len(pids), head(pids))
		for _, pid := range pids {
			_ = syscall.Kill(pid, syscall.SIGKILL)
		}
	}
	if pids := ourZombies(); len(pids) > 0 {
		t.Errorf("%d zombies among our children: %v", len(pids), head(pids))
	}
	// Whatever was killed above is reaped, so the next test counts its own.
	for _, pid := range append(tagged(tag), ourZombies()...) {
		var ws syscall.WaitStatus
		_, _ = syscall.Wait4(pid, &ws, 0, nil)
	}
}

func head(pids []int) []int { return pids[:min(len(pids), 10)] }

// A check that exits 0 leaving a background child (which holds the output
// pipe) is up, at once, every time; the child, whether still in the group or
// escaped with setsid, is killed and reaped.
func TestExecBackgroundChildren(t *testing.T) {
	tag := tagProcesses(t)
	for _, tc := range []struct {
		script string
		runs   int
	}{
		{"sleep 30 & echo started; exit 0", 1000},
		{"setsid sleep 30 & exit 0", 1000},
		// A grandchild that escapes after its parent did: found once the
		// parent is killed. Fewer runs: it is the same mechanism, twice.
		{"sh -c 'setsid sleep 30 & sleep 30' & exit 0", 200},
	} {
		script, runs := tc.script, tc.runs
		p, _ := NewExecProber([]string{"/bin/sh", "-c", script})
		var (
			mu    sync.Mutex
			fails []string
			wg    sync.WaitGroup
		)
		ctx, stop := context.WithCancel(context.Background())
		jobs := make(chan int)
		start := time.Now()
		for range 8 {
			wg.Add(1)
			go func() {
				defer wg.Done()
				for range jobs {
					pctx, cancel := context.WithTimeout(ctx, 10*time.Second)
					_, err := p.Probe(pctx)
					cancel()
					if err != nil {
						mu.Lock()
						fails = append(fails, describe(err, 10*time.Second))
						mu.Unlock()
						stop() // one failure is enough to see
					}
				}
			}()
		}
	feed:
		for i := range runs {
			select {
			case jobs <- i:
			case <-ctx.Done():
				break feed
			}
		}
		close(jobs)
		wg.Wait()
		stop()
		if len(fails) > 0 {
			t.Errorf("%q: %d runs down, first: %s", script, len(fails), fails[0])
		}
		t.Logf("%q: %d runs in %v", script, runs, time.Since(start).Round(time.Millisecond))
		checkNoLeftovers(t, tag)
	}
}

// The exit status decides even when a child holds the pipe; the reason still
// shows the output the command wrote before it exited.
func TestExecExitCodeWithChildren(t *testing.T) {
	tag := tagProcesses(t)
	for _, tc := range []struct{ script, want string }{
		{"sleep 30 & echo 'Could not connect'; exit 1", "exit 1: Could not connect"},
		{"setsid sleep 30 & echo busy >&2; exit 1", "exit 1: busy"},
		{"sleep 30 & kill -TERM $$", "killed by signal terminated"},
	} {
		p, _ := NewExecProber([]string{"/bin/sh", "-c", tc.script})
		if _, reason := probeOnce(t, p, 5*time.Second); reason != tc.want {
			t.Errorf("%q: reason %q, want %q", tc.script, reason, tc.want)
		}
	}
	p, _ := NewExecProber([]string{"/bin/sh", "-c", "sleep 30 & exit 3"})
	if res, reason := probeOnce(t, p, 5*time.Second); reason != "" || res.Weight == nil || *res.Weight != 1 {
		t.Errorf("exit 3 with a child: reason %q, weight %v; want up with weight 1", reason, res.Weight)
	}
	checkNoLeftovers(t, tag)
}

// At the timeout the group is killed and so are descendants that left it.
func TestExecTimeoutKillsEverything(t *testing.T) {
	tag := tagProcesses(t)
	p, _ := NewExecProber([]string{"/bin/sh", "-c", "sleep 30 & setsid sleep 30 & sh -c 'setsid sleep 30 & sleep 30' & exec sleep 30"})
	if _, reason := probeOnce(t, p, 300*time.Millisecond); reason != "timeout after 300ms" {
		t.Errorf("hung command: reason %q, want timeout after 300ms", reason)
	}
	checkNoLeftovers(t, tag)
}

// A check that finishes never kills a child of a check still running, even
// one that has already been re-parented to the daemon: check A leaves an
// escaped grandchild behind while it runs, check B runs to completion, then
// A verifies its grandchild is alive.
func TestExecSiblingOrphanSurvives(t *testing.T) {
	tag := tagProcesses(t)
	dir := t.TempDir()
	fifo := filepath.Join(dir, "go")
	if err := unix.Mkfifo(fifo, 0o600); err != nil {
		t.Fatal(err)
	}
	pidFile := filepath.Join(dir, "pid")
	// The subshell exits at once, so the setsid'd sleep is re-parented to
	// us (the subreaper) while A's shell is still waiting on the fifo.
	a, _ := NewExecProber([]string{"/bin/sh", "-c",
		"(setsid sleep 30 >/dev/null 2>&1 & echo $! > " + pidFile + "); read x < " + fifo + "; kill -0 $(cat " + pidFile + ") || { echo 'my child was killed'; exit 1; }"})
	b, _ := NewExecProber([]string{"/bin/sh", "-c", "setsid sleep 30 & exit 0"})
	done := make(chan string, 1)
	go func() {
		_, reason := probeOnce(t, a, 10*time.Second)
		done <- reason
	}()
	// Opening the fifo for writing returns once A opens it for reading,
	// that is once its subshell has exited.
	w, err := os.OpenFile(fifo, os.O_WRONLY, 0)
	if err != nil {
		t.Fatal(err)
	}
	if _, reason := probeOnce(t, b, 5*time.Second); reason != "" {
		t.Errorf("B: %q, want up", reason)
	}
	_, _ = w.WriteString("go\n")
	w.Close()
	if reason := <-done; reason != "" {
		t.Errorf("A: %q, want up", reason)
	}
	checkNoLeftovers(t, tag)
}
