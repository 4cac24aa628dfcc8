package weight

import (
	"context"
	"errors"
	"math"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/dsr-agent/dsr-agent/agent"
)

func TestHeadroom(t *testing.T) {
	for _, c := range []struct{ used, capacity, want float64 }{
		{0, 2, 100}, {1, 2, 50}, {2, 2, 0}, {5, 2, 0}, {0.5, 2, 75},
		{25, 100, 75}, {0, 0, 0}, {math.NaN(), 2, 0},
	} {
		if got := Headroom(c.used, c.capacity); math.Abs(got-c.want) > 1e-9 {
			t.Errorf("Headroom(%v, %v) = %v, want %v", c.used, c.capacity, got, c.want)
		}
	}
}

func TestRawAndFinal(t *testing.T) {
	if got := Raw(map[string]float64{"cpu": 80, "load": 35.5, "exec": 100}); got != 35.5 {
		t.Errorf("Raw = %v, want the smallest, 35.5", got)
	}
	if got := Raw(nil); got != 100 {
		t.Errorf("Raw of no signal = %v, want 100", got)
	}
	for _, c := range []struct {
		smoothed float64
		floor    int
		want     int
	}{{74.5, 1, 75}, {74.4, 1, 74}, {0.2, 1, 1}, {0.2, 0, 0}, {3, 10, 10}, {100, 1, 100}, {120, 1, 100}} {
		if got := Final(c.smoothed, c.floor); got != c.want {
			t.Errorf("Final(%v, %d) = %d, want %d", c.smoothed, c.floor, got, c.want)
		}
	}
}

// TestSmoother: a step from 100 to 40 moves 1-1/e (63%) of the way in one
// time constant whatever the sampling interval, and a one-sample spike
// with the default smoothing moves the weight about a tenth of the way.
func TestSmoother(t *testing.T) {
	for _, step := range []time.Duration{100 * time.Millisecond, time.Second, 5 * time.Second} {
		s := Smoother{Tau: 10 * time.Second}
		s.Update(100, 0)
		var v float64
		for range int(10 * time.Second / step) {
			v = s.Update(40, step)
		}
		want := 40 + 60*math.Exp(-1)
		if math.Abs(v-want) > 1e-6 {
			t.Errorf("step %v: after one time constant %.4f, want %.4f", step, v, want)
		}
	}
	s := Smoother{Tau: agent.DefaultWeightSmoothing}
	s.Update(100, 0)
	if v := s.Update(0, agent.WeightSampleInterval); v < 88 || v > 92 {
		t.Errorf("a one-second spike to 0 moved the default-smoothed weight to %.2f, want about 90", v)
	}
	// The first sample is taken as is; no smoothing passes samples through.
	s = Smoother{Tau: time.Minute}
	if v := s.Update(30, 0); v != 30 {
		t.Errorf("first sample %v, want 30", v)
	}
	s = Smoother{}
	s.Update(100, 0)
	if v := s.Update(20, time.Second); v != 20 {
		t.Errorf("no smoothing: %v, want 20", v)
	}
}

func TestCountCPUList(t *testing.T) {
	for in, want := range map[string]int{"0": 1, "0-1": 2, "0-3,6,8-9": 7} {
		if got, err := countCPUList(in); err != nil || got != want {
			t.Errorf("countCPUList(%q) = %d, %v, want %d", in, got, err, want)
		}
	}
	for _, bad := range []string{"", "a", "3-1", "0-"} {
		if _, err := countCPUList(bad); err == nil {
			t.Errorf("countCPUList(%q) accepted", bad)
		}
	}
}

// fakeProc is a root directory with /proc/stat, /proc/loadavg and the
// online cpu list.
type fakeProc struct {
	t    *testing.T
	root string
}

func newFakeProc(t *testing.T) *fakeProc {
	root := t.TempDir()
	for _, d := range []string{"proc", "sys/devices/system/cpu"} {
		if err := os.MkdirAll(filepath.Join(root, d), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	f := &fakeProc{t: t, root: root}
	f.write("sys/devices/system/cpu/online", "0-3\n")
	return f
}

func (f *fakeProc) write(rel, content string) {
	f.t.Helper()
	if err := os.WriteFile(filepath.Join(f.root, rel), []byte(content), 0o644); err != nil {
		f.t.Fatal(err)
	}
}

// stat writes /proc/stat with the given user and idle jiffies (the rest
// fixed), in the kernel's layout.
func (f *fakeProc) stat(user, idle, iowait uint64) {
	f.write("proc/stat", strings.Join([]string{
		"cpu  " + u(user) + " 0 100 " + u(idle) + " " + u(iowait) + " 0 0 0 50 0",
		"cpu0 1 2 3 4 5 6 7 8 9 10",
		"intr 12345",
	}, "\n")+"\n")
}

func u(n uint64) string { return strconv.FormatUint(n, 10) }

func TestProcFake(t *testing.T) {
	f := newFakeProc(t)
	p := Proc{Root: f.root}
	f.stat(1000, 5000, 200)
	f.write("proc/loadavg", "1.00 0.50 0.25 2/300 4242\n")
	a, err := p.CPU()
	if err != nil {
		t.Fatal(err)
	}
	if a.Idle != 5200 || a.Total != 1000+100+5000+200 {
		t.Fatalf("cpu times %+v", a)
	}
	// 300 jiffies pass: 75 busy (user), 225 idle (150 idle + 75 iowait).
	f.stat(1075, 5150, 275)
	b, _ := p.CPU()
	if got, ok := IdleShare(a, b); !ok || got != 75 {
		t.Fatalf("idle share %v %v, want 75", got, ok)
	}
	if _, ok := IdleShare(b, b); ok {
		t.Fatal("idle share over no time")
	}
	if l, err := p.LoadAvg(); err != nil || l != 1 {
		t.Fatalf("loadavg %v %v", l, err)
	}
	if n, err := p.OnlineCPUs(); err != nil || n != 4 {
		t.Fatalf("online cpus %v %v", n, err)
	}
	f.write("proc/stat", "intr 1\n")
	if _, err := p.CPU(); err == nil || !strings.Contains(err.Error(), "not the cpu total") {
		t.Fatalf("bad /proc/stat: %v", err)
	}
	if _, err := (Proc{Root: t.TempDir()}).LoadAvg(); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("missing loadavg: %v", err)
	}
}

// TestSampler: every signal from fakes; the raw weight is the smallest
// headroom, smoothed over the real interval between samples.
func TestSampler(t *testing.T) {
	f := newFakeProc(t)
	f.stat(1000, 5000, 0)
	f.write("proc/loadavg", "1.00 0.50 0.25 2/300 4242\n") // 1 of 4 CPUs: headroom 75
	conns, execW, execOK := 0, 0, false
	cfg := agent.WeightConfig{CPU: true, Load: true, Connections: 200, Exec: "app", Smoothing: 10 * time.Second, Min: 1}
	s := NewSampler(cfg, Sources{
		Proc:        Proc{Root: f.root},
		Connections: func() (int, error) { return conns, nil },
		Exec:        func() (int, bool) { return execW, execOK },
	})
	s.Prime()
	t0 := time.Unix(1000, 0)
	f.stat(1010, 5090, 0) // 100 jiffies, 90 idle
	conns = 50            // headroom 75
	st := s.Sample(t0)
	want := map[string]float64{SignalCPU: 90, SignalLoad: 75, SignalConnections: 75}
	if !equalSignals(st.Signals, want) || st.Raw != 75 || st.Percent != 75 || *st.Connections != 50 {
		t.Fatalf("first sample %+v, want signals %v, raw 75", st, want)
	}
	// The exec check reports 42 (exit 44): it decides; smoothing moves
	// the weight 1-exp(-1/10) of the way in one second.
	execW, execOK = 42, true
	f.stat(1020, 5180, 0)
	st = s.Sample(t0.Add(time.Second))
	wantSmoothed := 75 + (42-75)*(1-math.Exp(-0.1))
	if st.Raw != 42 || math.Abs(st.Smoothed-wantSmoothed) > 1e-9 || st.Percent != 72 {
		t.Fatalf("after exec 42: raw %v smoothed %v percent %d, want 42, %.3f, 72", st.Raw, st.Smoothed, st.Percent, wantSmoothed)
	}
	// An exec weight above 100 (exit 2+253) is capped; a vanished weight
	// is no signal.
	execW = 253
	f.stat(1030, 5270, 0)
	if st = s.Sample(t0.Add(2 * time.Second)); st.Signals[SignalExec] != 100 {
		t.Fatalf("exec 253: signal %v, want 100", st.Signals[SignalExec])
	}
	execOK = false
	f.stat(1040, 5360, 0)
	if st = s.Sample(t0.Add(3 * time.Second)); hasKey(st.Signals, SignalExec) {
		t.Fatalf("exec without a weight is a signal: %v", st.Signals)
	}
	// A failed read is no signal and says why.
	os.Remove(filepath.Join(f.root, "proc/loadavg"))
	f.stat(1050, 5450, 0)
	st = s.Sample(t0.Add(4 * time.Second))
	if hasKey(st.Signals, SignalLoad) || !strings.Contains(st.Errors[SignalLoad], "read load average") {
		t.Fatalf("missing loadavg: signals %v errors %v", st.Signals, st.Errors)
	}
	// A sample with no signal at all (the only one unreadable) keeps the
	// average where it was: it is not a sample of an idle host.
	s3 := NewSampler(agent.WeightConfig{Load: true, Smoothing: 10 * time.Second, Min: 1}, Sources{Proc: Proc{Root: f.root}})
	f.write("proc/loadavg", "3.00 0.50 0.25 2/300 4242\n") // headroom 25
	if st = s3.Sample(t0); st.Percent != 25 {
		t.Fatalf("loaded: percent %d, want 25", st.Percent)
	}
	os.Remove(filepath.Join(f.root, "proc/loadavg"))
	if st = s3.Sample(t0.Add(5 * time.Second)); st.Percent != 25 || len(st.Signals) != 0 {
		t.Fatalf("no signal: percent %d (signals %v), want the last average 25", st.Percent, st.Signals)
	}
	// Overloaded everywhere: the floor holds.
	f.write("proc/loadavg", "9.00 0.50 0.25 2/300 4242\n")
	conns = 1000
	s2 := NewSampler(agent.WeightConfig{Load: true, Connections: 200, Min: 5}, Sources{Proc: Proc{Root: f.root}, Connections: func() (int, error) { return conns, nil }})
	if st = s2.Sample(t0); st.Raw != 0 || st.Percent != 5 {
		t.Fatalf("overloaded: raw %v percent %d, want 0 and the floor 5", st.Raw, st.Percent)
	}
}

func equalSignals(a, b map[string]float64) bool {
	if len(a) != len(b) {
		return false
	}
	for k, v := range b {
		if got, ok := a[k]; !ok || math.Abs(got-v) > 1e-9 {
			return false
		}
	}
	return true
}

func hasKey(m map[string]float64, k string) bool { _, ok := m[k]; return ok }

// TestRun: the loop publishes until its context ends.
func TestRun(t *testing.T) {
	f := newFakeProc(t)
	f.write("proc/loadavg", "2.00 0.50 0.25 2/300 4242\n")
	s := NewSampler(agent.WeightConfig{Load: true, Min: 1}, Sources{Proc: Proc{Root: f.root}})
	ctx, cancel := context.WithCancel(context.Background())
	got := make(chan Status, 16)
	done := make(chan struct{})
	go func() { s.Run(ctx, 10*time.Millisecond, func(st Status) { got <- st }); close(done) }()
	st := <-got
	cancel()
	<-done
	if st.Percent != 50 {
		t.Fatalf("published %+v, want 50%%", st)
	}
}

// TestProcReal reads the real /proc and /sys: the formats this package
// parses are the running kernel's.
func TestProcReal(t *testing.T) {
	var p Proc
	a, err := p.CPU()
	if err != nil {
		t.Fatal(err)
	}
	if a.Total == 0 || a.Idle > a.Total {
		t.Fatalf("cpu times %+v", a)
	}
	if _, err := p.LoadAvg(); err != nil {
		t.Fatal(err)
	}
	n, err := p.OnlineCPUs()
	if err != nil || n < 1 {
		t.Fatalf("online cpus %d %v", n, err)
	}
	// Busy-loop long enough for the jiffies to move, then the idle share
	// is a percentage.
	deadline := time.Now().Add(5 * time.Second)
	for time.Now().Before(deadline) {
		b, err := p.CPU()
		if err != nil {
			t.Fatal(err)
		}
		if idle, ok := IdleShare(a, b); ok {
			if idle < 0 || idle > 100 {
				t.Fatalf("idle share %v", idle)
			}
			return
		}
	}
	t.Fatal("/proc/stat did not move in 5s")
}
