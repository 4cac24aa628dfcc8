package daemon

import (
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"os"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/vishvananda/netlink"

	"github.com/dsr-agent/dsr-agent/internal/netnstest"
)

// BenchmarkDriftRepair measures the time from deleting a VIP (netlink, as
// `ip addr del` does) to the kernel announcing it back, with the real daemon
// running in a namespace. Reported: median and p99 per repair.
func BenchmarkDriftRepair(b *testing.B) {
	for _, n := range []int{1, 1000} {
		b.Run(fmt.Sprintf("vips=%d", n), func(b *testing.B) { benchDriftRepair(b, n) })
	}
}

func benchDriftRepair(b *testing.B, nVIPs int) {
	ns := netnstest.New(b)
	ns.AddDummy(b, nic, "10.77.0.2/24")
	var cfg strings.Builder
	cfg.WriteString("mode: loopback\ninterfaces: [eth0]\nvips:\n")
	for i := range nVIPs {
		fmt.Fprintf(&cfg, "  - address: 10.%d.%d.%d\n", 100+i/65536, (i/256)%256, i%256)
	}
	d := startDaemon(b, ns, b.TempDir(), cfg.String(), "--resync", "1h")
	d.waitNote("READY=1", 60*time.Second)

	victim := netip4("10.100.0.0")
	lo, err := ns.Netlink.LinkByName("lo")
	if err != nil {
		b.Fatal(err)
	}
	ch := make(chan netlink.AddrUpdate, 1024)
	done := make(chan struct{})
	defer close(done)
	h := ns.Handle
	if err := netlink.AddrSubscribeWithOptions(ch, done, netlink.AddrSubscribeOptions{Namespace: &h}); err != nil {
		b.Fatal(err)
	}
	addr := &netlink.Addr{IPNet: &net.IPNet{IP: victim, Mask: net.CIDRMask(32, 32)}}
	var lat []time.Duration
	b.ResetTimer()
	for range b.N {
		start := time.Now()
		if err := ns.Netlink.AddrDel(lo, addr); err != nil {
			b.Fatal(err)
		}
		timeout := time.After(5 * time.Second)
	wait:
		for {
			select {
			case u := <-ch:
				if u.NewAddr && u.LinkAddress.IP.Equal(victim) {
					lat = append(lat, time.Since(start))
					break wait
				}
			case <-timeout:
				b.Fatal("VIP not repaired within 5s")
			}
		}
		// Let the daemon's trailing no-op pass finish so iterations are independent.
		time.Sleep(20 * time.Millisecond)
	}
	b.StopTimer()
	slices.Sort(lat)
	b.ReportMetric(float64(lat[len(lat)/2].Microseconds())/1000, "median-ms")
	b.ReportMetric(float64(lat[(len(lat)*99)/100].Microseconds())/1000, "p99-ms")
	b.ReportMetric(0, "ns/op") // wall time per op includes the settle sleep; not meaningful
}

func netip4(s string) net.IP { return net.ParseIP(s).To4() }

// BenchmarkSysctlRepair measures the time from a reset of
// net.ipv4.conf.all.arp_ignore (1 -> 0, as `sysctl -w` does) to the value
// being 1 again, with the real daemon in a namespace and the resync at an
// hour: the sysctl poll is what sees it. Expect about half the poll interval
// plus one pass.
func BenchmarkSysctlRepair(b *testing.B) {
	ns := netnstest.New(b)
	ns.AddDummy(b, nic, "10.77.0.2/24")
	d := startDaemon(b, ns, b.TempDir(), "mode: loopback\ninterfaces: [eth0]\nvips: [{address: 10.77.100.1}]\n", "--resync", "1h")
	d.waitNote("READY=1", 10*time.Second)
	lat, failed := measureSysctlRepairs(b, ns, b.N)
	b.StopTimer()
	if failed > 0 {
		b.Fatalf("%d of %d resets not repaired within 10 s", failed, b.N)
	}
	reportLatency(b, lat, "")
}

// measureSysctlRepairs resets all.arp_ignore n times and returns how long
// each took to come back (a repair that does not come within 10 s counts as
// 10 s and as failed). It reads the value every 0.5 ms from a thread in the
// namespace.
func measureSysctlRepairs(b *testing.B, ns *netnstest.NS, n int) (lat []time.Duration, failed int) {
	const file = "/proc/sys/net/ipv4/conf/all/arp_ignore"
	ns.Do(b, func() {
		for i := 0; i < n && (failed < 2 || failed < i); i++ { // two misses in a row end it

			if err := os.WriteFile(file, []byte("0"), 0); err != nil {
				b.Fatal(err)
			}
			start := time.Now()
			for {
				v, err := os.ReadFile(file)
				if err != nil {
					b.Fatal(err)
				}
				if strings.TrimSpace(string(v)) == "1" {
					lat = append(lat, time.Since(start))
					break
				}
				if time.Since(start) > 10*time.Second {
					lat = append(lat, time.Since(start))
					failed++
					if err := os.WriteFile(file, []byte("1"), 0); err != nil {
						b.Fatal(err)
					}
					break
				}
				time.Sleep(500 * time.Microsecond)
			}
			// Let the no-op pass the repair itself triggers go by, and
			// start the next reset at a random phase of the poll.
			time.Sleep(time.Duration(250+rand.IntN(200)) * time.Millisecond)
		}
	})
	return lat, failed
}

func reportLatency(b *testing.B, lat []time.Duration, prefix string) {
	if len(lat) == 0 {
		b.Fatal("no samples")
	}
	slices.Sort(lat)
	b.ReportMetric(float64(lat[len(lat)/2].Microseconds())/1000, prefix+"median-ms")
	b.ReportMetric(float64(lat[(len(lat)*99)/100].Microseconds())/1000, prefix+"p99-ms")
	b.ReportMetric(float64(lat[len(lat)-1].Microseconds())/1000, prefix+"max-ms")
	b.ReportMetric(0, "ns/op")
}

// cpuNanos is the CPU time used so far by every thread of pid, from
// /proc/PID/task/*/schedstat (nanoseconds, unlike the clock ticks of
// /proc/PID/stat).
func cpuNanos(b *testing.B, pid int) int64 {
	tasks, err := os.ReadDir(fmt.Sprintf("/proc/%d/task", pid))
	if err != nil {
		b.Fatal(err)
	}
	var sum int64
	for _, t := range tasks {
		s, err := os.ReadFile(fmt.Sprintf("/proc/%d/task/%s/schedstat", pid, t.Name()))
		if err != nil {
			continue // the thread exited
		}
		f := strings.Fields(string(s))
		if len(f) > 0 {
			v, _ := strconv.ParseInt(f[0], 10, 64)
			sum += v
		}
	}
	return sum
}

// BenchmarkIdleCPU measures the CPU the daemon uses while nothing happens,
// health endpoint on, systemd watchdog at the unit's 30 s, over a 10 s
// window after a settle: loopback mode (the sysctl poll reads 6 files 5
// times a second) with 1 and 1,000 VIPs, and firewalld mode, which polls
// nothing -- the difference is the poll's cost. Run with -benchtime 1x: one
// iteration is one window.
func BenchmarkIdleCPU(b *testing.B) {
	for _, c := range []struct {
		name, mode, ports string
		vips              int
	}{
		{"loopback/vips=1", "loopback", "", 1},
		{"loopback/vips=1000", "loopback", "", 1000},
		{"firewalld-no-poll/vips=1", "firewalld", ", ports: [{port: 80}]", 1},
	} {
		b.Run(c.name, func(b *testing.B) {
			ns := netnstest.New(b)
			ns.AddDummy(b, nic, "10.77.0.2/24")
			var cfg strings.Builder
			fmt.Fprintf(&cfg, "mode: %s\ninterfaces: [eth0]\nhealth: {listen: \"10.77.0.2:8558\"}\nvips:\n", c.mode)
			for i := range c.vips {
				fmt.Fprintf(&cfg, "  - {address: 10.%d.%d.%d%s}\n", 100+i/65536, (i/256)%256, i%256, c.ports)
			}
			d := startDaemonWrapped(b, ns, b.TempDir(), cfg.String(), nil, []string{"WATCHDOG_USEC=30000000"})
			d.waitNote("READY=1", 60*time.Second)
			time.Sleep(2 * time.Second)
			pid := d.cmd.Process.Pid
			const window = 10 * time.Second
			var used time.Duration
			b.ResetTimer()
			for range b.N {
				start := cpuNanos(b, pid)
				time.Sleep(window)
				used += time.Duration(cpuNanos(b, pid) - start)
			}
			b.StopTimer()
			per := used / time.Duration(b.N)
			b.ReportMetric(float64(per.Microseconds())/1000, "cpu-ms/10s")
			b.ReportMetric(100*per.Seconds()/window.Seconds(), "cpu-%")
			b.ReportMetric(0, "ns/op")
		})
	}
}

// BenchmarkFlood measures what a legitimate health checker and the repair
// path see while a source outside allowed_sources floods the health port:
// conns attacker connections, each reconnecting 1-2 s (DSR_AGENT_FLOOD_PAUSE
// to change it) after the daemon resets it. Legitimate: 1,000 /healthz
// requests from an allowed source, a new connection each (as keepalived and
// HAProxy checks do), 10 ms apart; then 20 sysctl resets. Run with
// -benchtime 1x.
func BenchmarkFlood(b *testing.B) {
	pause := time.Second
	if p := os.Getenv("DSR_AGENT_FLOOD_PAUSE"); p != "" {
		var err error
		if pause, err = time.ParseDuration(p); err != nil {
			b.Fatal(err)
		}
	}
	for _, conns := range []int{0, 20000} {
		b.Run(fmt.Sprintf("conns=%d", conns), func(b *testing.B) { benchFlood(b, conns, pause) })
	}
}

func benchFlood(b *testing.B, conns int, pause time.Duration) {
	ns := netnstest.New(b)
	ns.AddDummy(b, nic, "10.77.0.2/24")
	ns.Exec(b, "ip", "addr", "add", "10.77.0.3/24", "dev", nic) // allowed
	ns.Exec(b, "ip", "addr", "add", "10.77.0.9/24", "dev", nic) // attacker
	hz := "10.77.0.2:8558"
	d := startDaemonWrapped(b, ns, b.TempDir(), `mode: loopback
interfaces: [eth0]
vips: [{address: 10.77.100.1}]
health:
  listen: 10.77.0.2:8558
  allowed_sources: [10.77.0.3/32]
`, []string{"prlimit", "--nofile=" + unitNOFILE(b) + ":" + unitNOFILE(b)}, nil, "--resync", "1h")
	d.waitNote("READY=1", 10*time.Second)
	pid := d.cmd.Process.Pid
	var flood []<-chan string
	floodStart := time.Now()
	if conns > 0 {
		flood = startFlood(b, ns, "10.77.0.9", hz, conns, pause)
		time.Sleep(3 * time.Second) // every worker has connected at least once
	}
	maxFDs := openFDs(pid)
	cpu0, t0 := cpuNanos(b, pid), time.Now()
	b.ResetTimer()
	for range b.N {
		var lat []time.Duration
		failed := 0
		// Bounded in time too: against a daemon that no longer answers
		// (the old accept path), 1,000 timeouts would take over an hour.
		phaseEnd := time.Now().Add(60 * time.Second)
		for i := 0; i < 1000 && time.Now().Before(phaseEnd); i++ {
			start := time.Now()
			if !legitHealthz(b, ns, "10.77.0.3", hz) {
				failed++
			}
			lat = append(lat, time.Since(start))
			if i%50 == 0 {
				maxFDs = max(maxFDs, openFDs(pid))
			}
			time.Sleep(10 * time.Millisecond)
		}
		reportLatency(b, lat, "healthz-")
		b.ReportMetric(float64(failed), "healthz-failed")
		b.ReportMetric(float64(len(lat)), "healthz-requests")
		rl, rf := measureSysctlRepairs(b, ns, 20)
		reportLatency(b, rl, "repair-")
		b.ReportMetric(float64(rf), "repair-failed")
		if rf > 0 {
			b.Logf("%d sysctl resets not repaired within 10 s; daemon log:\n%s", rf, grepLines(d.log.String(), "sysctl"))
		}
	}
	b.StopTimer()
	b.ReportMetric(100*float64(cpuNanos(b, pid)-cpu0)/float64(time.Since(t0).Nanoseconds()), "daemon-cpu-%")
	b.ReportMetric(float64(maxFDs), "daemon-max-fds")
	if flood != nil {
		b.Logf("flood counters after %.0f s (per helper process): %s", time.Since(floodStart).Seconds(), lastLine(flood))
	}
	select {
	case err := <-d.exited:
		b.Fatalf("daemon exited: %v", err)
	default:
	}
	if os.Getenv("DSR_AGENT_TEST_BINARY") == "" {
		if m := regexp.MustCompile(`(?m)^.*level=ERROR.*$`).FindAllString(d.log.String(), 3); len(m) > 0 {
			b.Fatalf("daemon logged errors during the flood:\n%s", strings.Join(m, "\n"))
		}
	}
}

// legitHealthz is one /healthz request from src on a new connection; a SYN
// dropped by a full accept queue shows as its retransmission delay (the
// timeout is long enough for that), not as a failure.
func legitHealthz(b *testing.B, ns *netnstest.NS, src, addr string) bool {
	var conn net.Conn
	var err error
	ns.Do(b, func() {
		d := net.Dialer{Timeout: 5 * time.Second, LocalAddr: &net.TCPAddr{IP: net.ParseIP(src)}}
		conn, err = d.Dial("tcp", addr)
	})
	if err != nil {
		return false
	}
	defer conn.Close()
	_ = conn.SetDeadline(time.Now().Add(5 * time.Second))
	if _, err := fmt.Fprintf(conn, "GET /healthz HTTP/1.1\r\nHost: %s\r\nConnection: close\r\n\r\n", addr); err != nil {
		return false
	}
	buf := make([]byte, 512)
	n, _ := io.ReadFull(conn, buf[:12])
	return n == 12 && string(buf[:12]) == "HTTP/1.1 200"
}
