//go:build crash

package crash

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io/fs"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"slices"
	"sort"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"

	"github.com/dsr-agent/dsr-agent/internal/netnstest"
)

// live are the namespaces the tests have made and not yet deleted: an
// interrupted run (Ctrl-C, CI cancel, timeout's SIGTERM) deletes them, since
// t.Cleanup does not run when the process dies of a signal.
var live sync.Map // name -> struct{}

func newNS(t *testing.T) *netnstest.NS {
	t.Helper()
	ns := netnstest.New(t)
	live.Store(ns.Name, struct{}{})
	t.Cleanup(func() { live.Delete(ns.Name) })
	return ns
}

func TestMain(m *testing.M) {
	sig := make(chan os.Signal, 1)
	signal.Notify(sig, os.Interrupt, syscall.SIGTERM, syscall.SIGHUP)
	go func() {
		s := <-sig
		fmt.Fprintf(os.Stderr, "crash test: %v: deleting its network namespaces\n", s)
		live.Range(func(name, _ any) bool {
			_ = netns.DeleteNamed(name.(string))
			return true
		})
		os.Exit(1)
	}()
	code := m.Run()
	netnstest.RemoveBuiltAgent()
	os.Exit(code)
}

// agentBinary returns the dsr-agent under test, building it on first use.
func agentBinary(t *testing.T) string {
	t.Helper()
	return netnstest.AgentBinary(t)
}

const (
	nic       = "eth0"
	realIP    = "198.51.100.21"
	gatewayIP = "198.51.100.1"
)

// lb are the LB-facing interfaces the oracle judges.
var lb = []string{nic}

// host is a real server under test: namespace ns (lo, eth0 with a default
// route) cabled to seg (seg0, the LB segment), a state dir and one config
// per mode, all with the same VIPs.
type host struct {
	t       *testing.T
	bin     string
	ns, seg *netnstest.NS
	dir     string
	vips    []netip.Addr
	vipSet  map[netip.Addr]bool
}

func newHost(t *testing.T, nVIPs int) *host {
	t.Helper()
	h := &host{t: t, bin: agentBinary(t), dir: t.TempDir(), vipSet: map[netip.Addr]bool{}}
	h.ns = newNS(t)
	h.seg = newNS(t)
	netnstest.Connect(t, h.ns, nic, []string{realIP + "/24"}, h.seg, "seg0", []string{gatewayIP + "/24"})
	h.ns.Exec(t, "ip", "route", "add", "default", "via", gatewayIP)
	for _, mode := range []string{"loopback", "arptables", "firewalld"} {
		h.writeConfig(mode, mode, 0, nVIPs)
	}
	// firewalld mode's ports must have a listener (wildcard :80, the
	// redirect's target): a missing one would be a status difference.
	var ln net.Listener
	h.ns.Do(t, func() {
		var err error
		if ln, err = net.Listen("tcp", ":80"); err != nil {
			t.Fatalf("listen :80 in %s: %v", h.ns.Name, err)
		}
	})
	t.Cleanup(func() { ln.Close() })
	return h
}

// vip returns the i-th VIP: 10.64.0.1, 10.64.0.2, ... (250 per /24).
func vip(i int) netip.Addr { return netip.AddrFrom4([4]byte{10, 64, byte(i / 250), byte(i%250 + 1)}) }

// writeConfig writes config name (mode mode) with VIPs from..to-1; they
// join the VIPs the oracle checks.
func (h *host) writeConfig(name, mode string, from, to int) {
	h.t.Helper()
	var b strings.Builder
	fmt.Fprintf(&b, "mode: %s\ninterfaces: [%s]\nvips:\n", mode, nic)
	for i := from; i < to; i++ {
		v := vip(i)
		if !h.vipSet[v] {
			h.vipSet[v] = true
			h.vips = append(h.vips, v)
		}
		if mode == "firewalld" {
			fmt.Fprintf(&b, "  - {address: %s, ports: [{port: 80}]}\n", v)
		} else {
			fmt.Fprintf(&b, "  - address: %s\n", v)
		}
	}
	if err := os.WriteFile(h.config(name), []byte(b.String()), 0o644); err != nil {
		h.t.Fatalf("write config %s: %v", name, err)
	}
}

// config is the path of config name (by default named after its mode).
func (h *host) config(name string) string { return filepath.Join(h.dir, name+".yaml") }
func (h *host) stateDir() string          { return filepath.Join(h.dir, "state") }

// sysctl is one value a scenario puts in place before dsr-agent runs.
type sysctl struct{ path, val string }

// plantForeign puts things in place that dsr-agent must never touch: a
// foreign nftables table (ip and arp), foreign addresses on lo and eth0 and
// foreign sysctl values; plus the scenario's starting values of the sysctls
// dsr-agent does change (non-default ones, so restoring "the value found" is
// tested, not "the default"; hostile ones, such as arp_ignore 3, that it must
// lower before any VIP goes on lo and bring back only after the last is gone).
func (h *host) plantForeign(start ...sysctl) {
	t := h.t
	t.Helper()
	if _, err := nftIn(h.ns, `table ip foreign {
	chain input {
		type filter hook input priority 10; policy accept;
		ip saddr 203.0.113.0/24 tcp dport 22 accept
	}
}
table arp foreign {
	chain input {
		type filter hook input priority -10; policy accept;
	}
}
`, "-f", "-"); err != nil {
		t.Fatalf("plant foreign tables: %v", err)
	}
	h.ns.Exec(t, "ip", "addr", "add", "10.255.0.1/32", "dev", "lo", "label", "lo:keep")
	h.ns.Exec(t, "ip", "addr", "add", "2001:db8:ff::1/128", "dev", "lo")
	h.ns.Exec(t, "ip", "addr", "add", "198.51.100.99/24", "dev", nic)
	foreign := []sysctl{
		{"net/ipv4/conf/" + nic + "/rp_filter", "2"},
		{"net/ipv4/conf/lo/arp_ignore", "1"},
		{"net/ipv4/conf/default/arp_filter", "1"},
	}
	for _, s := range append(foreign, start...) {
		if err := writeSysctl(h.ns, s.val, strings.Split(s.path, "/")...); err != nil {
			t.Fatal(err)
		}
	}
}

// hostState is what `remove` must give back exactly.
type hostState struct {
	Addrs   []string          // "link prefix label"
	Sysctls map[string]string // every readable net.ipv4/ipv6 conf value
	Ruleset string            // nft list ruleset
}

func (h *host) snapshot() (*hostState, error) {
	s := &hostState{Sysctls: map[string]string{}}
	links, err := h.ns.Netlink.LinkList()
	if err != nil {
		return nil, fmt.Errorf("list links: %w", err)
	}
	names := map[int]string{}
	for _, l := range links {
		names[l.Attrs().Index] = l.Attrs().Name
	}
	addrs, err := addrList(h.ns, netlink.FAMILY_ALL)
	if err != nil {
		return nil, err
	}
	for _, a := range addrs {
		s.Addrs = append(s.Addrs, fmt.Sprintf("%s %s %s", names[a.LinkIndex], a.IPNet, a.Label))
	}
	sort.Strings(s.Addrs)
	err = netnstest.Within(h.ns.Handle, func() error {
		for _, root := range []string{"/proc/sys/net/ipv4/conf", "/proc/sys/net/ipv6/conf"} {
			err := filepath.WalkDir(root, func(p string, d fs.DirEntry, err error) error {
				if err != nil || d.IsDir() {
					return err
				}
				b, rerr := os.ReadFile(p)
				if rerr == nil { // write-only or EIO values (stable_secret) are skipped
					s.Sysctls[strings.TrimPrefix(p, "/proc/sys/")] = strings.TrimSpace(string(b))
				}
				return nil
			})
			if err != nil {
				return fmt.Errorf("walk %s: %w", root, err)
			}
		}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("sysctls in %s: %w", h.ns.Name, err)
	}
	if s.Ruleset, err = nftIn(h.ns, "", "list", "ruleset"); err != nil {
		return nil, err
	}
	return s, nil
}

// diff describes how s differs from the baseline b ("" when identical).
func (b *hostState) diff(s *hostState) string {
	var out []string
	for _, a := range b.Addrs {
		if !slices.Contains(s.Addrs, a) {
			out = append(out, "address gone: "+a)
		}
	}
	extra := 0
	for _, a := range s.Addrs {
		if !slices.Contains(b.Addrs, a) {
			if extra < 5 {
				out = append(out, "address left: "+a)
			}
			extra++
		}
	}
	if extra > 5 {
		out = append(out, fmt.Sprintf("... %d addresses left in all", extra))
	}
	var keys []string
	for k := range b.Sysctls {
		keys = append(keys, k)
	}
	for k := range s.Sysctls {
		if _, ok := b.Sysctls[k]; !ok {
			keys = append(keys, k)
		}
	}
	sort.Strings(keys)
	for _, k := range keys {
		if b.Sysctls[k] != s.Sysctls[k] {
			out = append(out, fmt.Sprintf("sysctl %s: was %q, now %q", k, b.Sysctls[k], s.Sysctls[k]))
		}
	}
	if b.Ruleset != s.Ruleset {
		out = append(out, fmt.Sprintf("nft ruleset differs:\n--- before\n%s--- after\n%s", b.Ruleset, truncate(s.Ruleset, 3000)))
	}
	return strings.Join(out, "\n")
}

func truncate(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return s[:n] + fmt.Sprintf("\n... (%d more bytes)\n", len(s)-n)
}

// command prepares `dsr-agent --config <mode> --state-dir … args` in ns.
func (h *host) command(mode string, args ...string) (*exec.Cmd, *bytes.Buffer) {
	argv := append([]string{"netns", "exec", h.ns.Name, h.bin, "--config", h.config(mode), "--state-dir", h.stateDir()}, args...)
	cmd := exec.Command("ip", argv...)
	// The one-instance-per-namespace lock files go to the test's own run
	// dir, not the host's /run/dsr-agent.
	cmd.Env = append(os.Environ(), "DSR_AGENT_RUN_DIR="+filepath.Join(h.dir, "run"))
	// Never outlive the test (a daemon left running would keep repairing).
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	var out bytes.Buffer
	cmd.Stdout = &out
	cmd.Stderr = &out
	return cmd, &out
}

// run runs dsr-agent to completion and returns its output and exit code.
func (h *host) run(mode string, args ...string) (string, int, error) {
	cmd, out := h.command(mode, args...)
	err := cmd.Run()
	var ee *exec.ExitError
	if errors.As(err, &ee) {
		return out.String(), ee.ExitCode(), nil
	}
	if err != nil {
		return out.String(), -1, fmt.Errorf("dsr-agent %s: %w", strings.Join(args, " "), err)
	}
	return out.String(), 0, nil
}

// mustRun runs dsr-agent and fails the test unless it exits with want.
func (h *host) mustRun(want int, mode string, args ...string) string {
	h.t.Helper()
	out, code, err := h.run(mode, args...)
	if err != nil {
		h.t.Fatal(err)
	}
	if code != want {
		h.t.Fatalf("dsr-agent --config %s %s: exit %d, want %d:\n%s", mode, strings.Join(args, " "), code, want, truncate(out, 4000))
	}
	return out
}

// timed runs dsr-agent to success and returns how long it took.
func (h *host) timed(mode string, args ...string) time.Duration {
	h.t.Helper()
	start := time.Now()
	h.mustRun(0, mode, args...)
	return time.Since(start)
}

// timeToReady starts `dsr-agent run`, returns how long it took to log that
// it is ready (converged), then stops it with SIGTERM.
func (h *host) timeToReady(mode string) (time.Duration, error) {
	cmd, _ := h.command(mode, "run")
	cmd.Stderr = nil
	stderr, err := cmd.StderrPipe()
	if err != nil {
		return 0, err
	}
	start := time.Now()
	if err := cmd.Start(); err != nil {
		return 0, fmt.Errorf("start dsr-agent run: %w", err)
	}
	ready := make(chan time.Duration, 1)
	done := make(chan string)
	go func() {
		// Read to EOF whatever the line length (a table's log line holds
		// every VIP): a reader that stops would block the daemon's writes.
		var log strings.Builder
		rd := bufio.NewReader(stderr)
		for {
			line, err := rd.ReadString('\n')
			log.WriteString(line)
			if strings.Contains(strings.ToLower(line), "ready") {
				select {
				case ready <- time.Since(start):
				default:
				}
			}
			if err != nil {
				break
			}
		}
		done <- log.String()
	}()
	var d time.Duration
	select {
	case d = <-ready:
	case <-time.After(30 * time.Second):
		err = errors.New("dsr-agent run: not ready after 30s")
	}
	_ = cmd.Process.Signal(syscall.SIGTERM)
	var log string
	select {
	case log = <-done:
	case <-time.After(10 * time.Second):
		// A daemon that ignores SIGTERM: get its goroutines (Go prints
		// them on SIGQUIT), then make sure it is gone.
		err = errors.Join(err, errors.New("dsr-agent run: still running 10s after SIGTERM (goroutine dump below)"))
		_ = cmd.Process.Signal(syscall.SIGQUIT)
		select {
		case log = <-done:
		case <-time.After(5 * time.Second):
			_ = cmd.Process.Kill()
			log = <-done
		}
	}
	werr := cmd.Wait()
	if err == nil && werr != nil {
		err = fmt.Errorf("dsr-agent run after SIGTERM: %w", werr)
	}
	if err != nil {
		return 0, fmt.Errorf("%w:\n%s", err, truncateMiddle(log, 30000))
	}
	return d, nil
}

// truncateMiddle keeps the start and the end of s (a daemon's log: how it
// started, and how it ended or hung).
func truncateMiddle(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return s[:n/4] + fmt.Sprintf("\n... (%d bytes left out) ...\n", len(s)-n) + s[len(s)-3*n/4:]
}

// kill is one SIGKILL of a running dsr-agent.
type kill struct {
	Delay  time.Duration // after the start of the process
	Killed bool          // false: the command finished before the kill
	Exit   int           // exit code when it finished on its own
	Output string
}

// runKilled starts dsr-agent and SIGKILLs it after delay (unless it exits
// first). When it returns the process is reaped: the kernel changes nothing
// any more on its behalf.
func (h *host) runKilled(delay time.Duration, mode string, args ...string) (kill, error) {
	cmd, out := h.command(mode, args...)
	k := kill{Delay: delay}
	if err := cmd.Start(); err != nil {
		return k, fmt.Errorf("start dsr-agent %s: %w", strings.Join(args, " "), err)
	}
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	timer := time.NewTimer(delay)
	defer timer.Stop()
	var err error
	select {
	case err = <-done:
	case <-timer.C:
		if kerr := cmd.Process.Signal(syscall.SIGKILL); kerr != nil && !errors.Is(kerr, os.ErrProcessDone) {
			return k, fmt.Errorf("kill dsr-agent: %w", kerr)
		}
		err = <-done
	}
	k.Output = out.String()
	var ee *exec.ExitError
	switch {
	case errors.As(err, &ee):
		if ws, ok := ee.Sys().(syscall.WaitStatus); ok && ws.Signaled() && ws.Signal() == syscall.SIGKILL {
			k.Killed = true
		} else {
			k.Exit = ee.ExitCode()
		}
	case err != nil:
		return k, fmt.Errorf("wait for dsr-agent %s: %w", strings.Join(args, " "), err)
	}
	return k, nil
}

// view reads the kernel through the oracle.
func (h *host) view() *kernelView {
	h.t.Helper()
	v, err := readView(h.ns, h.vipSet, lb)
	if err != nil {
		h.t.Fatalf("oracle: %v", err)
	}
	return v
}

// checkInvariant fails the test when a VIP is present without suppression.
func (h *host) checkInvariant(when string) *kernelView {
	h.t.Helper()
	v := h.view()
	if bad := v.violations(lb); len(bad) > 0 {
		h.t.Errorf("INVARIANT VIOLATED %s (%s):\n  %s", when, v.summary(nic), strings.Join(bad, "\n  "))
	}
	return v
}

// checkRestored fails the test unless the host equals the baseline.
func (h *host) checkRestored(base *hostState, when string) {
	h.t.Helper()
	s, err := h.snapshot()
	if err != nil {
		h.t.Fatalf("snapshot %s: %v", when, err)
	}
	if d := base.diff(s); d != "" {
		h.t.Errorf("remove did not restore the host %s:\n%s", when, d)
	}
}
