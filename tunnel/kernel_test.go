package tunnel

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"os"
	"os/exec"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"

	"github.com/dsr-agent/dsr-agent/internal/netnstest"
)

// RequireEnv=1 turns a skip for a missing kernel module into a failure: the
// VM run (test/tunnel) sets it, so a green run there means these tests ran.
const RequireEnv = "DSR_TUNNEL_REQUIRE"

// requireModules loads the modules or skips (fails under RequireEnv=1).
func requireModules(t *testing.T, mods ...string) {
	t.Helper()
	netnstest.RequireRoot(t)
	for _, m := range mods {
		if ModuleLoaded(m) {
			continue
		}
		if err := LoadStep(m).Apply(nil); err != nil {
			if os.Getenv(RequireEnv) == "1" {
				t.Fatalf("%v (and %s=1 forbids skipping)", err, RequireEnv)
			}
			t.Skipf("%v", err)
		}
	}
}

type kns struct {
	*netnstest.NS
	h *netlink.Handle // with NETLINK_GENERIC: fou requests reach this namespace
}

func newNS(t *testing.T) kns {
	t.Helper()
	ns := netnstest.New(t)
	h, err := netlink.NewHandleAt(ns.Handle, unix.NETLINK_ROUTE, unix.NETLINK_GENERIC)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(h.Close)
	return kns{ns, h}
}

// converge runs Observe / Needed / Apply / Record and returns the commands.
func (k kns) converge(t *testing.T, spec Spec, owned *Owned) []string {
	t.Helper()
	st, err := Observe(k.h)
	if err != nil {
		t.Fatal(err)
	}
	steps, err := Needed(spec, st, *owned)
	if err != nil {
		t.Fatal(err)
	}
	for _, s := range steps {
		if err := s.ApplyIn(k.h, k.Handle); err != nil {
			t.Fatal(err)
		}
		owned.Record(s)
	}
	return commands(steps)
}

func (k kns) pending(t *testing.T, spec Spec, owned Owned) []string {
	t.Helper()
	st, err := Observe(k.h)
	if err != nil {
		t.Fatal(err)
	}
	steps, err := Needed(spec, st, owned)
	if err != nil {
		t.Fatal(err)
	}
	return commands(steps)
}

// The module is loaded for the whole kernel, yet each new namespace gets its
// own fallback tunl0, down, as long as fb_tunnels_only_for_init_net is 0.
func TestFallbackDevicePerNamespace(t *testing.T) {
	requireModules(t, ModIPIP, ModIP6Tnl)
	if v, _ := os.ReadFile("/proc/sys/net/core/fb_tunnels_only_for_init_net"); strings.TrimSpace(string(v)) != "0" {
		t.Skipf("fb_tunnels_only_for_init_net = %s", v)
	}
	k := newNS(t)
	st, err := Observe(k.h)
	if err != nil {
		t.Fatal(err)
	}
	for _, d := range []string{DevIPv4, DevIPv6} {
		l, ok := st.Links[d]
		if !ok || l.Up {
			t.Fatalf("%s in a new namespace: %+v present=%v, want present and down", d, l, ok)
		}
	}
	// The fallback device cannot be deleted (only the namespace or rmmod
	// removes it): repair never has to recreate it.
	out, err := k.ExecErr("ip", "link", "del", DevIPv4)
	st, _ = Observe(k.h)
	if _, ok := st.Links[DevIPv4]; !ok {
		t.Fatalf("ip link del tunl0 removed the fallback device (%v: %s)", err, out)
	}
	t.Logf("ip link del tunl0: err=%v %s", err, strings.TrimSpace(out))
}

func TestApplyRepairRemoveIPv4GUE(t *testing.T) {
	requireModules(t, ModIPIP, ModFou)
	k := newNS(t)
	k.Exec(t, "ip", "fou", "add", "port", "7070", "gue") // someone else's
	spec := Spec{IPv4: true, GUEPort: 6080}
	var owned Owned
	got := k.converge(t, spec, &owned)
	if want := "ip link set tunl0 up|ip fou add port 6080 gue"; strings.Join(got, "|") != want {
		t.Fatalf("first apply = %q, want %s", got, want)
	}
	if p := k.pending(t, spec, owned); len(p) != 0 {
		t.Fatalf("second pass not empty: %q", p)
	}
	if out := k.Exec(t, "ip", "link", "show", DevIPv4); !strings.Contains(out, ",UP") {
		t.Fatalf("tunl0 not up:\n%s", out)
	}
	if out := k.Exec(t, "ip", "fou", "show"); !strings.Contains(out, "port 6080 gue") {
		t.Fatalf("ip fou show lacks port 6080 gue:\n%s", out)
	}

	// Drift: an admin downs tunl0 and deletes the fou port.
	k.Exec(t, "ip", "link", "set", DevIPv4, "down")
	k.Exec(t, "ip", "fou", "del", "port", "6080")
	if got := k.converge(t, spec, &owned); strings.Join(got, "|") != "ip link set tunl0 up|ip fou add port 6080 gue" {
		t.Fatalf("repair = %q", got)
	}

	// Remove undoes ours only: the foreign port 7070 stays.
	st, err := Observe(k.h)
	if err != nil {
		t.Fatal(err)
	}
	for _, s := range Remove(st, owned) {
		if err := s.ApplyIn(k.h, k.Handle); err != nil {
			t.Fatal(err)
		}
		owned.Record(s)
	}
	if !owned.Empty() {
		t.Fatalf("owned after remove: %+v", owned)
	}
	out := k.Exec(t, "ip", "fou", "show")
	if strings.Contains(out, "6080") || !strings.Contains(out, "port 7070 gue") {
		t.Fatalf("after remove, want 7070 only:\n%s", out)
	}
	if out := k.Exec(t, "ip", "link", "show", DevIPv4); strings.Contains(out, ",UP") {
		t.Fatalf("tunl0 still up after remove:\n%s", out)
	}
}

func TestForeignFouConflict(t *testing.T) {
	requireModules(t, ModIPIP, ModFou)
	k := newNS(t)
	k.Exec(t, "ip", "fou", "add", "port", "6080", "ipproto", "4")
	st, err := Observe(k.h)
	if err != nil {
		t.Fatal(err)
	}
	steps, err := Needed(Spec{IPv4: true, GUEPort: 6080}, st, Owned{})
	var ce *ConflictError
	if !errors.As(err, &ce) || !strings.Contains(err.Error(), "fou port 6080/IPv4 exists with encap direct ipproto 4") {
		t.Fatalf("err = %v, want the conflict named", err)
	}
	for _, s := range steps {
		if s.Kind == AddFou || s.Kind == DelFou {
			t.Fatalf("a step touches the foreign port: %v", s)
		}
	}
	// And a remove with nothing owned leaves it alone.
	if rm := Remove(st, Owned{}); len(rm) != 0 {
		t.Fatalf("Remove with nothing owned = %q", commands(rm))
	}
}

func TestApplyRemoveIPv6GUE(t *testing.T) {
	requireModules(t, ModIP6Tnl, ModFou)
	k := newNS(t)
	spec := Spec{IPv6: true, GUEPort: 6080}
	var owned Owned
	got := k.converge(t, spec, &owned)
	if want := "ip link set ip6tnl0 up|ip -6 fou add port 6080 gue"; strings.Join(got, "|") != want {
		t.Fatalf("apply = %q, want %s", got, want)
	}
	if out := k.Exec(t, "ip", "-6", "fou", "show"); !strings.Contains(out, "port 6080 gue") {
		t.Fatalf("ip -6 fou show:\n%s", out)
	}
	if p := k.pending(t, spec, owned); len(p) != 0 {
		t.Fatalf("second pass not empty: %q", p)
	}
	if got := k.converge(t, Spec{}, &owned); strings.Join(got, "|") != "ip -6 fou del port 6080|ip link set ip6tnl0 down" {
		t.Fatalf("remove = %q", got)
	}
}

// With net.core.fb_tunnels_only_for_init_net=2 a new namespace gets no
// fallback device: dsr-agent creates one (a wildcard receiver), owns it and
// deletes it on remove. The sysctl is global; it is restored.
func TestCreateWithoutFallback(t *testing.T) {
	requireModules(t, ModIPIP, ModIP6Tnl)
	const knob = "/proc/sys/net/core/fb_tunnels_only_for_init_net"
	old, err := os.ReadFile(knob)
	if err != nil {
		t.Skipf("no %s: %v", knob, err)
	}
	if err := os.WriteFile(knob, []byte("2"), 0); err != nil {
		t.Fatal(err)
	}
	k := newNS(t)
	if err := os.WriteFile(knob, old, 0); err != nil {
		t.Fatal(err)
	}
	spec := Spec{IPv4: true, IPv6: true}
	var owned Owned
	got := k.converge(t, spec, &owned)
	want := "ip link add tunl0 type ipip|ip link set tunl0 up|ip -6 link add ip6tnl0 type ip6tnl mode any|ip link set ip6tnl0 up"
	if strings.Join(got, "|") != want {
		t.Fatalf("apply = %q, want %s", got, want)
	}
	if p := k.pending(t, spec, owned); len(p) != 0 {
		t.Fatalf("second pass not empty: %q", p)
	}
	t.Logf("created:\n%s", k.Exec(t, "ip", "-d", "link", "show", DevIPv4))
	if got := k.converge(t, Spec{}, &owned); strings.Join(got, "|") != "ip link del tunl0|ip link del ip6tnl0" {
		t.Fatalf("remove = %q", got)
	}
	if st, _ := Observe(k.h); len(st.Links) != 0 {
		t.Fatalf("links left: %+v", st.Links)
	}
}

// On a kernel without the module (this project's dev host) the error says so.
func TestMissingModuleError(t *testing.T) {
	netnstest.RequireRoot(t)
	if _, err := exec.LookPath(Modprobe); err != nil {
		err := LoadStep(ModIPIP).Apply(nil)
		if err == nil || !strings.Contains(err.Error(), "no modprobe (kmod) on PATH") {
			t.Fatalf("without modprobe: err = %v", err)
		}
		t.Skipf("no modprobe here: %v", err)
	}
	const m = "dsr_agent_no_such_module"
	err := LoadStep(m).Apply(nil)
	if err == nil || !strings.Contains(err.Error(), "kernel has no "+m+" module (modprobe "+m+": ") {
		t.Fatalf("err = %v", err)
	}
	if !ModuleLoaded(ModIPIP) {
		t.Logf("this kernel: %v", LoadStep(ModIPIP).Apply(nil))
	}
}

func TestWatch(t *testing.T) {
	requireModules(t, ModIPIP, ModFou)
	k := newNS(t)
	var owned Owned
	k.converge(t, Spec{IPv4: true, GUEPort: 6080}, &owned)
	ctx, cancel := context.WithCancel(context.Background())
	wakes := make(chan string, 64)
	polled := make(chan struct{}, 1)
	done := make(chan struct{})
	go func() {
		defer close(done)
		w := Watcher{NL: k.h, Poll: 50 * time.Millisecond, polled: func() {
			select {
			case polled <- struct{}{}:
			default:
			}
		}}
		w.PollFou(ctx, func(s string) { wakes <- s }, slog.New(slog.NewTextHandler(io.Discard, nil)))
	}()
	defer func() { cancel(); <-done }()
	expect := func(want, after string) {
		t.Helper()
		deadline := time.After(10 * time.Second) // a bound on a hang, not a measurement
		for {
			select {
			case got := <-wakes:
				if got == want {
					return
				}
			case <-deadline:
				t.Fatalf("no %q wake after %s", want, after)
			}
		}
	}
	// The first poll has seen port 6080: deleting it now is a change.
	select {
	case <-polled:
	case <-time.After(10 * time.Second): // a bound on a hang, not a measurement
		t.Fatal("the watcher never polled")
	}
	k.Exec(t, "ip", "fou", "del", "port", "6080")
	expect(TriggerFou, "ip fou del port 6080")
}

// ListFou reports every fou socket as the kernel itself lists it (`ip fou
// show`): GUE and direct, IPv4 and IPv6. The cost of the fou poll, one dump
// of the 4 GUE sockets per FouPollInterval, is logged as a METRIC (the VM
// run records it; it depends on the machine, so it is not asserted).
func TestFouPollCost(t *testing.T) {
	requireModules(t, ModFou, ModIP6Tnl)
	k := newNS(t)
	want := []FouPort{}
	for p := 6080; p < 6084; p++ {
		k.Exec(t, "ip", "fou", "add", "port", strconv.Itoa(p), "gue")
		want = append(want, FouPort{FouKey: FouKey{4, uint16(p)}, Encap: "gue"})
	}

	const n = 200
	var ru0, ru1 unix.Rusage
	_ = unix.Getrusage(unix.RUSAGE_SELF, &ru0)
	t0 := time.Now()
	for range n {
		if ports, err := ListFou(k.h); err != nil || len(ports) != len(want) {
			t.Fatalf("ListFou = %v, %v", ports, err)
		}
	}
	wall := time.Since(t0)
	_ = unix.Getrusage(unix.RUSAGE_SELF, &ru1)
	cpu := time.Duration(ru1.Utime.Nano()+ru1.Stime.Nano()-ru0.Utime.Nano()-ru0.Stime.Nano()) / n
	t.Logf("METRIC fou_list_us %d (wall per dump, 4 sockets); cpu per dump %d us; at 1/s that is %.4f%% of a core",
		wall.Microseconds()/n, cpu.Microseconds(), float64(cpu)/float64(FouPollInterval)*100)

	k.Exec(t, "ip", "fou", "add", "port", "6090", "ipproto", "4")
	k.Exec(t, "ip", "-6", "fou", "add", "port", "6080", "gue")
	want = append(want, FouPort{FouKey: FouKey{4, 6090}, Encap: "direct", Protocol: 4}, FouPort{FouKey: FouKey{6, 6080}, Encap: "gue"})
	sortFou(want)
	got, err := ListFou(k.h)
	if err != nil {
		t.Fatal(err)
	}
	sortFou(got)
	kernel := ipFouShow(t, k.Exec(t, "ip", "fou", "show"))
	if !slices.Equal(kernel, want) {
		t.Fatalf("ip fou show = %+v, want %+v (the test's own setup failed)", kernel, want)
	}
	if !slices.Equal(got, kernel) {
		t.Fatalf("ListFou = %+v, ip fou show = %+v", got, kernel)
	}
}

func sortFou(ps []FouPort) {
	slices.SortFunc(ps, func(a, b FouPort) int {
		if a.Family != b.Family {
			return a.Family - b.Family
		}
		return int(a.Port) - int(b.Port)
	})
}

// ipFouShow parses iproute2's `ip fou show` lines: "port 6080 gue",
// "port 6090 ipproto 4", "port 6080 gue -6" (and local/peer, unused here).
func ipFouShow(t *testing.T, out string) []FouPort {
	t.Helper()
	var ps []FouPort
	for _, line := range strings.Split(strings.TrimSpace(out), "\n") {
		f := strings.Fields(line)
		if len(f) == 0 {
			continue
		}
		p := FouPort{FouKey: FouKey{Family: 4}}
		for i := 0; i < len(f); i++ {
			switch f[i] {
			case "port", "ipproto":
				if i+1 >= len(f) {
					t.Fatalf("ip fou show line %q", line)
				}
				v, err := strconv.Atoi(f[i+1])
				if err != nil {
					t.Fatalf("ip fou show line %q: %v", line, err)
				}
				if f[i] == "port" {
					p.Port = uint16(v)
				} else {
					p.Encap, p.Protocol = "direct", v
				}
				i++
			case "gue":
				p.Encap = "gue"
			case "-6":
				p.Family = 6
			}
		}
		ps = append(ps, p)
	}
	sortFou(ps)
	return ps
}
