package weight

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
)

// Proc reads the kernel's load figures under Root ("" or "/" for the real
// ones; tests point it at a directory of fake files).
type Proc struct{ Root string }

func (p Proc) path(rel string) string { return filepath.Join(cmpRoot(p.Root), rel) }

func cmpRoot(r string) string {
	if r == "" {
		return "/"
	}
	return r
}

// CPUTimes are the aggregate jiffies of the first line of /proc/stat.
type CPUTimes struct {
	Idle  uint64 // idle + iowait
	Total uint64 // user nice system idle iowait irq softirq steal
}

// CPU reads the "cpu" line of /proc/stat. iowait counts as idle: a CPU
// waiting for the disk could run another request. guest and guest_nice are
// left out because the kernel already counts them in user and nice.
func (p Proc) CPU() (CPUTimes, error) {
	path := p.path("proc/stat")
	b, err := os.ReadFile(path)
	if err != nil {
		return CPUTimes{}, fmt.Errorf("read cpu times: %w", err)
	}
	line, _, _ := strings.Cut(string(b), "\n")
	f := strings.Fields(line)
	if len(f) < 5 || f[0] != "cpu" {
		return CPUTimes{}, fmt.Errorf("read cpu times: %s: first line %q is not the cpu total", path, line)
	}
	var v [8]uint64
	for i := 0; i < len(v) && i+1 < len(f); i++ {
		n, err := strconv.ParseUint(f[i+1], 10, 64)
		if err != nil {
			return CPUTimes{}, fmt.Errorf("read cpu times: %s: field %d %q: %w", path, i+1, f[i+1], err)
		}
		v[i] = n
	}
	t := CPUTimes{Idle: v[3] + v[4]}
	for _, n := range v {
		t.Total += n
	}
	return t, nil
}

// IdleShare is the idle percentage of all CPUs between two readings; ok is
// false when no time passed (or the counters went back: a fake file
// rewritten, a counter reset), so there is nothing to measure.
func IdleShare(prev, cur CPUTimes) (float64, bool) {
	if cur.Total <= prev.Total || cur.Idle < prev.Idle {
		return 0, false
	}
	return clamp(100 * float64(cur.Idle-prev.Idle) / float64(cur.Total-prev.Total)), true
}

// LoadAvg is the 1-minute load average (/proc/loadavg).
func (p Proc) LoadAvg() (float64, error) {
	path := p.path("proc/loadavg")
	b, err := os.ReadFile(path)
	if err != nil {
		return 0, fmt.Errorf("read load average: %w", err)
	}
	f := strings.Fields(string(b))
	if len(f) == 0 {
		return 0, fmt.Errorf("read load average: %s is empty", path)
	}
	v, err := strconv.ParseFloat(f[0], 64)
	if err != nil {
		return 0, fmt.Errorf("read load average: %s: %w", path, err)
	}
	return v, nil
}

// OnlineCPUs counts the CPUs in /sys/devices/system/cpu/online ("0-3,6").
// The load average counts runnable tasks on the whole host, so it is
// compared with the CPUs online, not with this process's affinity
// (runtime.NumCPU), which systemd's CPUAffinity= may have narrowed.
func (p Proc) OnlineCPUs() (int, error) {
	path := p.path("sys/devices/system/cpu/online")
	b, err := os.ReadFile(path)
	if err != nil {
		return 0, fmt.Errorf("count online cpus: %w", err)
	}
	n, err := countCPUList(strings.TrimSpace(string(b)))
	if err != nil {
		return 0, fmt.Errorf("count online cpus: %s: %w", path, err)
	}
	return n, nil
}

// countCPUList counts a kernel cpu list: "0", "0-3", "0-3,6,8-9".
func countCPUList(s string) (int, error) {
	if s == "" {
		return 0, errors.New("empty cpu list")
	}
	n := 0
	for part := range strings.SplitSeq(s, ",") {
		lo, hi, isRange := strings.Cut(part, "-")
		a, err := strconv.Atoi(lo)
		if err != nil {
			return 0, fmt.Errorf("cpu list %q: %w", s, err)
		}
		b := a
		if isRange {
			if b, err = strconv.Atoi(hi); err != nil {
				return 0, fmt.Errorf("cpu list %q: %w", s, err)
			}
		}
		if b < a || a < 0 {
			return 0, fmt.Errorf("cpu list %q: bad range %q", s, part)
		}
		n += b - a + 1
	}
	return n, nil
}
