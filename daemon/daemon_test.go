package daemon

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/dsr-agent/dsr-agent/agent"
	"github.com/dsr-agent/dsr-agent/health"
	"github.com/dsr-agent/dsr-agent/internal/netnstest"
)

// fakeEngine stands in for the core so the loop's contract (READY only after
// a successful apply, reload refused on a bad config, drain over the control
// socket) is tested without a kernel; the real-kernel tests are in
// run_test.go.
type fakeEngine struct {
	mu        sync.Mutex
	listen    string
	failFirst int
	applies   int
	present   bool
	note      string // on every plan, as an empty VIP list's note is
}

var errBadConfig = errors.New("invalid config: bad")

func (f *fakeEngine) Load(path, _ string) (*agent.Config, *agent.Desired, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, nil, err
	}
	if strings.TrimSpace(string(b)) == "bad" {
		return nil, nil, errBadConfig
	}
	cfg := &agent.Config{Mode: agent.ModeLoopback, VIPs: []agent.VIP{{Address: netip.MustParseAddr("192.0.2.10")}}}
	return cfg, &agent.Desired{Mode: cfg.Mode, VIPs: cfg.VIPs, Health: &agent.HealthConfig{Listen: f.listen}}, nil
}

func (f *fakeEngine) Converge(_ *agent.Config, last *agent.Desired) (*agent.Plan, *agent.Desired, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.applies++
	if f.applies <= f.failFirst {
		return &agent.Plan{}, nil, errors.New("simulated apply failure")
	}
	var notes []string
	if f.note != "" {
		notes = []string{f.note}
	}
	if !f.present {
		f.present = true
		return &agent.Plan{Notes: notes, Changes: []agent.Change{{Kind: agent.AddrAdd, Subject: "192.0.2.10", Command: "ip addr add 192.0.2.10/32 dev lo"}}}, last, nil
	}
	return &agent.Plan{Notes: notes}, last, nil
}

func (f *fakeEngine) Status(*agent.Config) (*agent.Report, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	return &agent.Report{Mode: "loopback", InSync: f.present, Suppression: true,
		VIPs: []agent.VIPState{{Address: "192.0.2.10", Present: f.present, Link: "lo"}}}, nil
}

func freePort(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().String()
}

func waitNotify(t *testing.T, ch <-chan string, prefix string) string {
	t.Helper()
	timeout := time.After(10 * time.Second)
	for {
		select {
		case s := <-ch:
			if strings.HasPrefix(s, prefix) {
				return s
			}
		case <-timeout:
			t.Fatalf("no %q notification", prefix)
		}
	}
}

func healthz(t *testing.T, addr string) (int, string) {
	t.Helper()
	var lastErr error
	for range 100 {
		resp, err := http.Get("http://" + addr + "/healthz")
		if err != nil {
			lastErr = err
			time.Sleep(20 * time.Millisecond)
			continue
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		return resp.StatusCode, string(b)
	}
	t.Fatalf("healthz: %v", lastErr)
	return 0, ""
}

func TestLoopContract(t *testing.T) {
	if testing.Short() {
		t.Skip("starts servers")
	}
	dir := t.TempDir()
	cfg := filepath.Join(dir, "config")
	if err := os.WriteFile(cfg, []byte("ok"), 0o600); err != nil {
		t.Fatal(err)
	}
	eng := &fakeEngine{listen: freePort(t), failFirst: 1}
	notes := make(chan string, 64)
	sigs := make(chan os.Signal, 1)
	done := make(chan error, 1)
	go func() {
		done <- Run(context.Background(), Options{
			ConfigPath: cfg, StateDir: filepath.Join(dir, "state"), Engine: eng,
			Log:    slog.New(slog.NewTextHandler(io.Discard, nil)),
			Notify: func(s string) { notes <- s }, Signals: sigs, Resync: time.Hour,
		})
	}()

	waitNotify(t, notes, "READY=1")
	eng.mu.Lock()
	applies := eng.applies
	eng.mu.Unlock()
	if applies < 2 {
		t.Fatalf("READY=1 after %d apply attempts; the first one failed, so READY must follow a retry", applies)
	}
	if code, body := healthz(t, eng.listen); code != 200 {
		t.Fatalf("after ready: %d %q", code, body)
	}

	// A bad config is refused; the daemon keeps serving the running one.
	if err := os.WriteFile(cfg, []byte("bad"), 0o600); err != nil {
		t.Fatal(err)
	}
	sigs <- syscall.SIGHUP
	waitNotify(t, notes, "RELOADING=1")
	if s := waitNotify(t, notes, "READY=1"); !strings.Contains(s, "refused") {
		t.Fatalf("bad reload answered %q", s)
	}
	if code, _ := healthz(t, eng.listen); code != 200 {
		t.Fatalf("bad reload changed health: %d", code)
	}
	if err := os.WriteFile(cfg, []byte("ok again"), 0o600); err != nil {
		t.Fatal(err)
	}
	sigs <- syscall.SIGHUP
	if s := waitNotify(t, notes, "READY=1"); !strings.Contains(s, "reloaded") {
		t.Fatalf("good reload answered %q", s)
	}

	// drain: recorded in the state dir (the CLI's part), then applied by
	// the daemon on request.
	if err := health.SaveDrain(filepath.Join(dir, "state"), health.Drained); err != nil {
		t.Fatal(err)
	}
	r, err := Request(filepath.Join(dir, "state"), ReqSyncDrain)
	if err != nil || r.Drain != "drain" || r.Healthy {
		t.Fatalf("drain: %+v %v", r, err)
	}
	if code, body := healthz(t, eng.listen); code != 503 || body != "draining\n" {
		t.Fatalf("drained: %d %q", code, body)
	}
	if m, _ := health.LoadDrain(filepath.Join(dir, "state")); m != health.Drained {
		t.Fatalf("drain not persisted: %q", m)
	}

	sigs <- syscall.SIGTERM
	waitNotify(t, notes, "STOPPING=1")
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("Run after SIGTERM: %v", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("Run did not return after SIGTERM")
	}
	if _, err := Request(filepath.Join(dir, "state"), "status"); !errors.Is(err, ErrNotRunning) {
		t.Fatalf("after stop, control request: %v, want ErrNotRunning", err)
	}
}

func TestInvalidConfigAtStart(t *testing.T) {
	dir := t.TempDir()
	cfg := filepath.Join(dir, "config")
	_ = os.WriteFile(cfg, []byte("bad"), 0o600)
	err := Run(context.Background(), Options{ConfigPath: cfg, StateDir: dir, Engine: &fakeEngine{}, Notify: func(string) {}})
	if !errors.Is(err, errBadConfig) {
		t.Fatalf("Run with a bad config: %v", err)
	}
}

// TestRequestRefusesNonRootPeer: a control socket served by a non-root user
// (planted in a state dir it could write) is not believed, whatever it says.
func TestRequestRefusesNonRootPeer(t *testing.T) {
	netnstest.RequireRoot(t) // runs the fake server as another uid
	const nobody = 65534
	// Not t.TempDir: its parent is private to root, and the fake must reach
	// its directory.
	dir, err := os.MkdirTemp("", "dsr-agent-peer-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	if err := os.Chmod(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	state := filepath.Join(dir, "state")
	if err := os.Mkdir(state, 0o700); err != nil {
		t.Fatal(err)
	}
	if err := os.Chown(state, nobody, nobody); err != nil {
		t.Fatal(err)
	}
	startHelperAs(t, "fake-control", nobody, "DSR_AGENT_TEST_SOCKET="+filepath.Join(state, ControlSocket))
	for _, cmd := range []string{ReqStatus, ReqSyncDrain, ReqReload} {
		r, err := Request(state, cmd)
		if !errors.Is(err, ErrUntrustedPeer) || !strings.Contains(err.Error(), "uid 65534") {
			t.Fatalf("%s answered by uid %d: reply %+v, err %v; want ErrUntrustedPeer naming the uid", cmd, nobody, r, err)
		}
	}
}

type lockedBuffer struct {
	mu sync.Mutex
	b  strings.Builder
}

func (l *lockedBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *lockedBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

// A note the plan carries on every pass (`vips: []`, a lost state file) is
// logged once, not at every resync, reload or wake.
func TestRepeatedNoteLoggedOnce(t *testing.T) {
	if testing.Short() {
		t.Skip("starts servers")
	}
	dir := t.TempDir()
	cfg := filepath.Join(dir, "config")
	if err := os.WriteFile(cfg, []byte("ok"), 0o600); err != nil {
		t.Fatal(err)
	}
	const note = "vips is empty: dsr-agent changes nothing"
	eng := &fakeEngine{listen: freePort(t), note: note}
	var logs lockedBuffer
	notes := make(chan string, 64)
	sigs := make(chan os.Signal, 1)
	done := make(chan error, 1)
	go func() {
		done <- Run(context.Background(), Options{
			ConfigPath: cfg, StateDir: filepath.Join(dir, "state"), Engine: eng,
			Log:    slog.New(slog.NewTextHandler(&logs, nil)),
			Notify: func(s string) { notes <- s }, Signals: sigs, Resync: time.Hour,
		})
	}()
	waitNotify(t, notes, "READY=1")
	for range 3 {
		sigs <- syscall.SIGHUP
		waitNotify(t, notes, "READY=1")
	}
	eng.mu.Lock()
	passes := eng.applies
	eng.mu.Unlock()
	sigs <- syscall.SIGTERM
	<-done
	if passes < 4 {
		t.Fatalf("only %d passes: the test did not repeat the note", passes)
	}
	if n := strings.Count(logs.String(), note); n != 1 {
		t.Fatalf("the note was logged %d times over %d passes, want once:\n%s", n, passes, logs.String())
	}
}

// TestDrainFileFollowedAtResync: the daemon follows the drain file, not the
// requests: a file recorded by a CLI whose request never arrived is applied
// at the next resync, and an unreadable one keeps the current state.
func TestDrainFileFollowedAtResync(t *testing.T) {
	if testing.Short() {
		t.Skip("starts servers")
	}
	dir := t.TempDir()
	cfg := filepath.Join(dir, "config")
	if err := os.WriteFile(cfg, []byte("ok"), 0o600); err != nil {
		t.Fatal(err)
	}
	state := filepath.Join(dir, "state")
	eng := &fakeEngine{listen: freePort(t)}
	notes := make(chan string, 64)
	sigs := make(chan os.Signal, 1)
	done := make(chan error, 1)
	go func() {
		done <- Run(context.Background(), Options{
			ConfigPath: cfg, StateDir: state, Engine: eng,
			Log:    slog.New(slog.NewTextHandler(io.Discard, nil)),
			Notify: func(s string) { notes <- s }, Signals: sigs, Resync: 20 * time.Millisecond,
		})
	}()
	waitNotify(t, notes, "READY=1")
	waitHealth := func(code int, body string) {
		t.Helper()
		deadline := time.Now().Add(3 * time.Second)
		for {
			c, b := healthz(t, eng.listen)
			if c == code && b == body {
				return
			}
			if time.Now().After(deadline) {
				t.Fatalf("healthz %d %q, want %d %q", c, b, code, body)
			}
			time.Sleep(5 * time.Millisecond)
		}
	}
	waitHealth(200, "up\n")
	if err := health.SaveDrain(state, health.Drained); err != nil {
		t.Fatal(err)
	}
	waitHealth(503, "draining\n")
	// Corrupt: the current state stays (no flip either way).
	if err := os.WriteFile(filepath.Join(state, health.DrainFile), []byte("garbage\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := Request(state, ReqSyncDrain); !errors.Is(err, ErrRefused) {
		t.Fatalf("sync-drain of a corrupt file: %v, want refused", err)
	}
	waitHealth(503, "draining\n")
	if err := health.SaveDrain(state, health.InRotation); err != nil {
		t.Fatal(err)
	}
	waitHealth(200, "up\n")
	sigs <- syscall.SIGTERM
	<-done
}
