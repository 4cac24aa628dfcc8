//go:build crash

package crash

import (
	"bufio"
	"fmt"
	"hash/fnv"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"sort"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

const (
	// SeedEnv replays a run: the seed is printed at the start of each scenario.
	SeedEnv = "DSR_CRASH_SEED"
	// KillsEnv sets the number of kills per scenario.
	KillsEnv = "DSR_CRASH_KILLS"
	// VIPsEnv sets the number of VIPs (default 2,000).
	VIPsEnv = "DSR_CRASH_VIPS"
)

var (
	seedOnce sync.Once
	seed     uint64
)

func runSeed(t *testing.T) uint64 {
	seedOnce.Do(func() {
		seed = uint64(time.Now().UnixNano())
		if s := os.Getenv(SeedEnv); s != "" {
			n, err := strconv.ParseUint(s, 10, 64)
			if err != nil {
				t.Fatalf("%s=%q: not an unsigned integer: %v", SeedEnv, s, err)
			}
			seed = n
		}
	})
	return seed
}

func envInt(t *testing.T, name string, def int) int {
	s := os.Getenv(name)
	if s == "" {
		return def
	}
	n, err := strconv.Atoi(s)
	if err != nil || n < 1 {
		t.Fatalf("%s=%q: want a positive integer", name, s)
	}
	return n
}

// crashRun is one scenario's kill loop: its random source (the run's seed
// and the scenario's name, so one scenario replays alone with -run) and the
// record of where the kills landed.
type crashRun struct {
	*host
	rng    *rand.Rand
	seed   uint64
	size   int // VIPs per config
	n      int // kills per scenario
	kills  int // kills done
	killed int // of which interrupted the command
	phases map[string]int
	// leftovers: files found in the state dir after a successful remove.
	leftovers map[string]int
}

func newCrashRun(t *testing.T) *crashRun {
	s := runSeed(t)
	f := fnv.New64a()
	f.Write([]byte(t.Name()))
	size := envInt(t, VIPsEnv, 2000)
	h := newHost(t, size)
	t.Logf("seed %d (replay: %s=%d go test -tags crash -run '%s' ./test/crash/); %d VIPs; netns %s",
		s, SeedEnv, s, t.Name(), len(h.vips), h.ns.Name)
	return &crashRun{host: h, rng: rand.New(rand.NewPCG(s, f.Sum64())), seed: s, size: size, n: envInt(t, KillsEnv, 20), phases: map[string]int{}, leftovers: map[string]int{}}
}

// median runs fn n times and returns the median duration.
func median(n int, fn func() time.Duration) time.Duration {
	ds := make([]time.Duration, n)
	for i := range ds {
		ds[i] = fn()
	}
	slices.Sort(ds)
	return ds[n/2]
}

// delays returns n kill delays stratified over [0, span): one uniformly
// random point in each of n equal slices, in random order, so every part of
// the command's run is hit whatever the seed.
func (r *crashRun) delays(n int, span time.Duration) []time.Duration {
	ds := make([]time.Duration, n)
	for i := range ds {
		ds[i] = time.Duration((float64(i) + r.rng.Float64()) / float64(n) * float64(span))
	}
	r.rng.Shuffle(n, func(i, j int) { ds[i], ds[j] = ds[j], ds[i] })
	return ds
}

// killAndCheck runs `dsr-agent --config mode args` with a SIGKILL after
// delay, then checks the invariant on what the kill left behind.
func (r *crashRun) killAndCheck(i int, delay, span time.Duration, mode string, args ...string) {
	r.t.Helper()
	k, err := r.runKilled(delay, mode, args...)
	if err != nil {
		r.t.Fatal(err)
	}
	what := fmt.Sprintf("%s %s", strings.Join(args, " "), mode)
	if !k.Killed {
		if k.Exit != 0 {
			r.t.Fatalf("kill %d: %s exited %d before the kill at %v:\n%s", i, what, k.Exit, delay, truncate(k.Output, 4000))
		}
		what += " (finished before the kill)"
	} else {
		r.killed++
	}
	r.kills++
	v := r.checkInvariant(fmt.Sprintf("after kill %d, %s at %.1fms of ~%.0fms (seed %d)", i, what, ms(delay), ms(span), r.seed))
	phase := r.phase(v)
	r.phases[phase]++
	r.t.Logf("kill %2d  %-40s at %6.1fms/%3.0fms: %s", i, what, ms(delay), ms(span), v.summary(nic))
}

func ms(d time.Duration) float64 { return float64(d) / float64(time.Millisecond) }

// phase is a coarse name for the state a kill left (coverage log).
func (r *crashRun) phase(v *kernelView) string {
	count := map[string]int{}
	for _, links := range v.On {
		for _, l := range links {
			count[l]++
		}
	}
	frac := func(n int) string {
		switch {
		case n == 0:
			return "0"
		case n == r.size:
			return "all"
		}
		return "some"
	}
	sys := "orig"
	if ignoreSuppresses(v.effIgnore(nic), false) && announceSuppresses(v.effAnnounce(nic)) {
		sys = "suppress"
	}
	tables := "-"
	if out, err := nftIn(r.ns, "", "list", "tables"); err == nil {
		var own []string
		for _, l := range strings.Split(out, "\n") {
			if f := strings.Fields(l); len(f) == 3 && f[2] == "dsr-agent" {
				own = append(own, f[1])
			}
		}
		if len(own) > 0 {
			tables = strings.Join(own, "+")
		}
	}
	return fmt.Sprintf("sysctls=%s lo=%s %s=%s tables=%s", sys, frac(count["lo"]), nic, frac(count[nic]), tables)
}

// report logs where the kills landed and fails a run whose kills all came
// too late to interrupt anything.
func (r *crashRun) report() {
	var ps []string
	for p, n := range r.phases {
		ps = append(ps, fmt.Sprintf("%3d x %s", n, p))
	}
	sort.Strings(ps)
	r.t.Logf("%d kills, %d interrupted the command; states left behind:\n  %s", r.kills, r.killed, strings.Join(ps, "\n  "))
	for files, n := range r.leftovers {
		r.t.Logf("note: %d remove(s) left files in the state dir: %s", n, files)
	}
	// A quarter at least: run times vary with the machine's load between
	// the measured uninterrupted runs and the killed ones, but a run whose
	// kills mostly land after the command is vacuous.
	if r.killed*4 < r.kills {
		r.t.Errorf("only %d of %d kills interrupted the command: the delays do not cover its run", r.killed, r.kills)
	}
}

// converge: the next apply succeeds, status says in sync, and the invariant
// holds.
func (r *crashRun) converge(mode, when string) {
	r.t.Helper()
	r.mustRun(0, mode, "apply")
	if out, code, err := r.run(mode, "status"); err != nil || code != 0 {
		r.t.Fatalf("status after the apply that follows %s: exit %d (%v):\n%s", when, code, err, truncate(out, 4000))
	}
	r.checkInvariant("after the apply that follows " + when)
}

// removeAndCheck: remove succeeds and the host is back to base.
func (r *crashRun) removeAndCheck(mode string, base *hostState, when string) {
	r.t.Helper()
	r.mustRun(0, mode, "remove")
	r.checkRestored(base, "by the remove that follows "+when)
	// Not part of the invariant (the host's network is), but worth knowing.
	if ents, err := os.ReadDir(r.stateDir()); err == nil && len(ents) > 0 {
		var names []string
		tmp := 0
		for _, e := range ents {
			if strings.HasPrefix(e.Name(), ".state.json.tmp") {
				tmp++
				continue
			}
			names = append(names, e.Name())
		}
		if tmp > 0 {
			names = append(names, fmt.Sprintf("%d x .state.json.tmp*", tmp))
		}
		r.leftovers[strings.Join(names, " ")]++
	}
}

// baseline plants the foreign state and returns the host as it must be
// after every remove.
func (r *crashRun) baseline(start ...sysctl) *hostState {
	r.t.Helper()
	r.plantForeign(start...)
	for _, s := range start {
		r.t.Logf("before dsr-agent: %s=%s", s.path, s.val)
	}
	base, err := r.snapshot()
	if err != nil {
		r.t.Fatal(err)
	}
	return base
}

// TestCrash kills dsr-agent at random points and checks the kernel.
func TestCrash(t *testing.T) {
	agentBinary(t)
	start := time.Now()
	// Starting values of the ARP sysctls differ per scenario: hostile ones
	// (arp_ignore 3 and arp_announce 3 do not suppress: dsr-agent must lower
	// them first and restore them last) and merely non-default ones.
	t.Run("apply-loopback", func(t *testing.T) {
		crashApply(t, "loopback", sysctl{"net/ipv4/conf/all/arp_ignore", "3"}, sysctl{"net/ipv4/conf/all/arp_announce", "3"})
	})
	t.Run("apply-arptables", func(t *testing.T) {
		crashApply(t, "arptables", sysctl{"net/ipv4/conf/all/arp_announce", "1"}, sysctl{"net/ipv4/conf/" + nic + "/arp_ignore", "4"})
	})
	t.Run("mode-switch", crashModeSwitch)
	t.Run("vip-change-arptables", crashVIPChange)
	t.Run("remove", crashRemove)
	t.Run("run", crashDaemon)
	t.Logf("all scenarios: %v", time.Since(start).Round(time.Millisecond))
}

// crashApply: SIGKILL during `apply` from a clean host. After the kill, in
// turn: apply converges, then remove restores; remove straight from the
// half-applied state restores; a second apply is killed too (a crash during
// the recovery), then apply converges and remove restores.
func crashApply(t *testing.T, mode string, start ...sysctl) {
	r := newCrashRun(t)
	base := r.baseline(start...)
	span := median(3, func() time.Duration {
		d := r.timed(mode, "apply")
		r.removeAndCheck(mode, base, "an uninterrupted apply")
		return d
	})
	t.Logf("uninterrupted apply (%s): %v", mode, span.Round(time.Millisecond))
	second := r.delays(r.n, span)
	for i, d := range r.delays(r.n, span) {
		when := fmt.Sprintf("kill %d of apply %s at %.1fms (seed %d)", i, mode, ms(d), r.seed)
		r.killAndCheck(i, d, span, mode, "apply")
		switch i % 3 {
		case 0:
			r.converge(mode, when)
		case 2:
			// A crash during the recovery from a crash.
			r.killAndCheck(i, second[i], span, mode, "apply")
			when += fmt.Sprintf(" and a second kill at %.1fms", ms(second[i]))
			r.converge(mode, when)
		}
		r.removeAndCheck(mode, base, when)
		if t.Failed() {
			break
		}
	}
	r.report()
}

// crashModeSwitch: SIGKILL during apply of the next mode in the cycle
// loopback -> arptables -> firewalld -> loopback (r.cycle).
func crashModeSwitch(t *testing.T) {
	r := newCrashRun(t)
	base := r.baseline(sysctl{"net/ipv4/conf/all/arp_ignore", "3"}, sysctl{"net/ipv4/conf/" + nic + "/arp_announce", "3"})
	r.cycle(base, "switch", "the mode switches", "loopback", "arptables", "firewalld")
}

// crashVIPChange: arptables mode, SIGKILL during the apply of a config whose
// VIPs overlap the current ones by half (A: VIPs 0..n-1, B: n/2..3n/2-1), in
// turn A -> B -> A (r.cycle): VIPs leave the NIC, the table's set and map
// are replaced, new VIPs arrive. Every VIP of either config is checked; the
// ARP sysctls start hostile (arp_ignore 3), so only the table protects a VIP
// on the NIC.
func crashVIPChange(t *testing.T) {
	r := newCrashRun(t)
	n := r.size
	r.writeConfig("arp-a", "arptables", 0, n)
	r.writeConfig("arp-b", "arptables", n/2, n/2+n)
	base := r.baseline(sysctl{"net/ipv4/conf/all/arp_ignore", "3"}, sysctl{"net/ipv4/conf/all/arp_announce", "3"})
	r.cycle(base, "change", "the VIP changes", "arp-a", "arp-b")
}

// cycle kills the apply of the next config in the cycle cfgs[0] -> cfgs[1]
// -> ... -> cfgs[0] (a mode, or a config written by writeConfig). After
// the kill, the apply of the new config converges; every other round of
// len(cfgs) kills, a remove straight from the half-changed state must
// restore the host first. The kill delays of each target spread over the
// median of three uninterrupted applies to it.
func (r *crashRun) cycle(base *hostState, what, done string, cfgs ...string) {
	k := len(cfgs)
	r.mustRun(0, cfgs[0], "apply")
	spans := map[string][]time.Duration{}
	for range 3 {
		for i := range cfgs {
			to := cfgs[(i+1)%k]
			spans[to] = append(spans[to], r.timed(to, "apply"))
		}
	}
	perCfg := (r.n + k - 1) / k
	delays := map[string][]time.Duration{}
	span := map[string]time.Duration{}
	for _, c := range cfgs {
		slices.Sort(spans[c])
		span[c] = spans[c][1]
		delays[c] = r.delays(perCfg, span[c])
		r.t.Logf("uninterrupted %s to %s: %v", what, c, span[c].Round(time.Millisecond))
	}
	for i := range r.n {
		from, to := cfgs[i%k], cfgs[(i+1)%k]
		d := delays[to][i/k]
		when := fmt.Sprintf("kill %d of the %s %s -> %s at %.1fms (seed %d)", i, what, from, to, ms(d), r.seed)
		r.killAndCheck(i, d, span[to], to, "apply")
		if (i/k)%2 == 1 {
			r.removeAndCheck(to, base, when)
		}
		r.converge(to, when)
		if r.t.Failed() {
			break
		}
	}
	r.removeAndCheck(cfgs[0], base, done)
	r.report()
}

// crashRemove: SIGKILL during `remove` of a converged host, VIPs on lo
// (loopback mode) and on the NIC (arptables mode) in turn. After the kill,
// either remove again restores the host, or apply converges and then
// remove restores.
func crashRemove(t *testing.T) {
	r := newCrashRun(t)
	base := r.baseline(sysctl{"net/ipv4/conf/" + nic + "/arp_ignore", "3"}, sysctl{"net/ipv4/conf/all/arp_announce", "1"})
	modes := []string{"loopback", "arptables"}
	span, delays := r.spread(modes, "uninterrupted remove (%s): %v", func(m string) time.Duration {
		r.mustRun(0, m, "apply")
		d := r.timed(m, "remove")
		r.checkRestored(base, "by an uninterrupted remove")
		return d
	})
	for i := range r.n {
		m := modes[i%2]
		d := delays[m][i/2]
		when := fmt.Sprintf("kill %d of remove (%s) at %.1fms (seed %d)", i, m, ms(d), r.seed)
		r.mustRun(0, m, "apply")
		r.killAndCheck(i, d, span[m], m, "remove")
		if i%4 >= 2 {
			r.converge(m, when)
		}
		r.removeAndCheck(m, base, when)
		if t.Failed() {
			break
		}
	}
	r.report()
}

// spread measures each mode's uninterrupted run with measure (the median
// of three, logged with format) and gives each mode its share of the r.n
// kills, spread over that time.
func (r *crashRun) spread(modes []string, format string, measure func(mode string) time.Duration) (map[string]time.Duration, map[string][]time.Duration) {
	span := map[string]time.Duration{}
	delays := map[string][]time.Duration{}
	per := (r.n + len(modes) - 1) / len(modes)
	for _, m := range modes {
		span[m] = median(3, func() time.Duration { return measure(m) })
		delays[m] = r.delays(per, span[m])
		r.t.Logf(format, m, span[m].Round(time.Millisecond))
	}
	return span, delays
}

// TestCheckCatchesBadOrder is the negative control of the kill loop itself:
// a fake agent that puts every VIP on lo before any ARP suppression is killed
// once its VIPs are in, and the same checks the scenarios use must report it
// (the invariant, and the restore check: the VIPs left and a foreign sysctl
// changed behind the test's back).
func TestCheckCatchesBadOrder(t *testing.T) {
	h := newHost(t, envInt(t, VIPsEnv, 2000))
	h.plantForeign(sysctl{"net/ipv4/conf/all/arp_announce", "1"})
	base, err := h.snapshot()
	if err != nil {
		t.Fatal(err)
	}
	var batch strings.Builder
	for _, v := range h.vips {
		fmt.Fprintf(&batch, "address add %s/32 dev lo\n", v)
	}
	batchFile := filepath.Join(h.dir, "vips.batch")
	script := filepath.Join(h.dir, "bad-agent")
	if err := os.WriteFile(batchFile, []byte(batch.String()), 0o644); err != nil {
		t.Fatal(err)
	}
	// VIPs first, suppression "later": the order dsr-agent must never use.
	if err := os.WriteFile(script, []byte("#!/bin/sh\nip -batch "+batchFile+" || exit 1\necho added\nexec sleep 60\n"), 0o755); err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command("ip", "netns", "exec", h.ns.Name, script)
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatalf("start the bad agent: %v", err)
	}
	line := make(chan string, 1)
	go func() {
		s, _ := bufio.NewReader(stdout).ReadString('\n')
		line <- s
	}()
	select {
	case s := <-line:
		if strings.TrimSpace(s) != "added" {
			t.Errorf("bad agent said %q", s)
		}
	case <-time.After(30 * time.Second):
		t.Error("bad agent: no VIPs after 30s")
	}
	_ = cmd.Process.Kill()
	_ = cmd.Wait()

	v := h.view()
	bad := v.violations(lb)
	want := fmt.Sprintf("%d VIP(s)", len(h.vips))
	if !slices.ContainsFunc(bad, func(s string) bool {
		return strings.HasPrefix(s, want) && strings.Contains(s, "answered on "+nic)
	}) {
		t.Errorf("the invariant check missed %d VIPs on lo without suppression (%s): %q", len(h.vips), v.summary(nic), bad)
	}
	t.Logf("reported, as a failing scenario would:\n  %s", strings.Join(bad, "\n  "))

	if err := writeSysctl(h.ns, "0", "net", "ipv4", "conf", nic, "rp_filter"); err != nil {
		t.Fatal(err)
	}
	s, err := h.snapshot()
	if err != nil {
		t.Fatal(err)
	}
	d := base.diff(s)
	for _, w := range []string{"address left: lo 10.64.", fmt.Sprintf("%d addresses left in all", len(h.vips)), "sysctl net/ipv4/conf/" + nic + "/rp_filter: was \"2\", now \"0\""} {
		if !strings.Contains(d, w) {
			t.Errorf("the restore check missed %q; it said:\n%s", w, d)
		}
	}
}

// crashDaemon: SIGKILL during the daemon's start (`dsr-agent run` converging
// the host; the OOM killer or systemd's final kill), loopback and arptables
// mode in turn. Kills spread over the time the daemon takes to log that it is
// ready. After the kill, in turn: apply converges, then remove restores; or
// remove straight away restores.
func crashDaemon(t *testing.T) {
	r := newCrashRun(t)
	base := r.baseline(sysctl{"net/ipv4/conf/all/arp_ignore", "3"}, sysctl{"net/ipv4/conf/all/arp_announce", "1"})
	modes := []string{"loopback", "arptables"}
	span, delays := r.spread(modes, "run (%s) ready after %v", func(m string) time.Duration {
		d, err := r.timeToReady(m)
		if err != nil {
			t.Fatal(err)
		}
		r.removeAndCheck(m, base, "an uninterrupted run")
		return d
	})
	for i := range r.n {
		m := modes[i%2]
		d := delays[m][i/2]
		when := fmt.Sprintf("kill %d of run (%s) at %.1fms (seed %d)", i, m, ms(d), r.seed)
		r.killAndCheck(i, d, span[m], m, "run")
		if i%4 < 2 {
			r.converge(m, when)
		}
		r.removeAndCheck(m, base, when)
		if t.Failed() {
			break
		}
	}
	r.report()
}
