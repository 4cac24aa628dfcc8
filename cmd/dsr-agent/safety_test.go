package main

import (
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/dsr-agent/dsr-agent/internal/netnstest"
)

// TestEmptyConfigChangesNothing: a 0-byte or comment-only config used to
// make apply delete every VIP and table with exit 0.
func TestEmptyConfigChangesNothing(t *testing.T) {
	ns := netnstest.New(t)
	ns.AddDummy(t, "eth0", "198.51.100.21/24")
	state := filepath.Join(t.TempDir(), "state")
	good := writeConfig(t, "mode: arptables\ninterfaces: [eth0]\nvips: [{address: 192.0.2.10}]\n")
	if r := runIn(t, ns, nil, "--config", good, "--state-dir", state, "apply"); r.code != 0 {
		t.Fatalf("apply: exit %d:\n%s", r.code, r.out)
	}
	before := hostView(t, ns)
	for name, text := range map[string]string{"empty": "", "comments": "# vips:\n#   - address: 192.0.2.10\n", "blank": "\n\n"} {
		cfg := writeConfig(t, text)
		for _, cmd := range []string{"apply", "validate", "status"} {
			r := runIn(t, ns, nil, "--config", cfg, "--state-dir", state, cmd)
			if r.code != 2 || !strings.Contains(r.out, "empty") {
				t.Fatalf("%s with a %s config: exit %d, want 2:\n%s", cmd, name, r.code, r.out)
			}
		}
	}
	if after := hostView(t, ns); after != before {
		t.Fatalf("an empty config changed the host\n--- before\n%s\n--- after\n%s", before, after)
	}
}

// TestOneInstancePerNamespace: two daemons in one namespace (different
// state dirs) fought thousands of times a second, and a CLI apply or remove
// while the daemon ran was undone silently.
func TestOneInstancePerNamespace(t *testing.T) {
	ns := netnstest.New(t)
	ns.AddDummy(t, "eth0", "198.51.100.21/24")
	cfg := writeConfig(t, "interfaces: [eth0]\nvips: [{address: 192.0.2.10}]\n")
	other := writeConfig(t, "interfaces: [eth0]\nvips: [{address: 192.0.2.99}]\n")
	state := filepath.Join(t.TempDir(), "state")
	daemon := exec.Command("ip", "netns", "exec", ns.Name, binary, "--config", cfg, "--state-dir", state, "run", "--resync", "1h")
	daemon.Stdout, daemon.Stderr = os.Stderr, os.Stderr
	if err := daemon.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = daemon.Process.Kill(); _ = daemon.Wait() })
	deadline := time.Now().Add(10 * time.Second)
	for !strings.Contains(ns.Exec(t, "ip", "addr", "show", "dev", "lo"), "192.0.2.10/32") {
		if time.Now().After(deadline) {
			t.Fatal("daemon did not apply")
		}
		time.Sleep(50 * time.Millisecond)
	}
	before := hostView(t, ns)

	r := runIn(t, ns, nil, "--config", other, "--state-dir", filepath.Join(t.TempDir(), "s2"), "run")
	if r.code != 1 || !strings.Contains(r.out, "dsr-agent run (pid") || !strings.Contains(r.out, "two daemons") {
		t.Fatalf("second daemon: exit %d:\n%s", r.code, r.out)
	}
	r = runIn(t, ns, nil, "--config", other, "--state-dir", filepath.Join(t.TempDir(), "s3"), "apply")
	if r.code != 1 || !strings.Contains(r.out, "systemctl reload dsr-agent") {
		t.Fatalf("apply while the daemon runs: exit %d:\n%s", r.code, r.out)
	}
	r = runIn(t, ns, nil, "--config", cfg, "--state-dir", state, "remove")
	if r.code != 1 || !strings.Contains(r.out, "systemctl stop dsr-agent") {
		t.Fatalf("remove while the daemon runs: exit %d:\n%s", r.code, r.out)
	}
	// Read-only commands still work.
	if r := runIn(t, ns, nil, "--config", cfg, "--state-dir", state, "status"); r.code != 0 {
		t.Fatalf("status while the daemon runs: exit %d:\n%s", r.code, r.out)
	}
	if after := hostView(t, ns); after != before {
		t.Fatalf("refused commands changed the host\n--- before\n%s\n--- after\n%s", before, after)
	}
	// Once the daemon is gone, the lock is free (no stale lock file effect).
	_ = daemon.Process.Signal(os.Interrupt)
	_ = daemon.Wait()
	if r := runIn(t, ns, nil, "--config", cfg, "--state-dir", state, "remove"); r.code != 0 {
		t.Fatalf("remove after the daemon stopped: exit %d:\n%s", r.code, r.out)
	}
	// A namespace of its own is not blocked by this one's lock.
	ns2 := netnstest.New(t)
	ns2.AddDummy(t, "eth0", "198.51.100.21/24")
	if r := runIn(t, ns2, nil, "--config", cfg, "--state-dir", filepath.Join(t.TempDir(), "s4"), "apply"); r.code != 0 {
		t.Fatalf("apply in another namespace: exit %d:\n%s", r.code, r.out)
	}
}

// TestUnsafeStateDirExit2: a state dir another user can write is refused
// with exit 2 before anything changes.
func TestUnsafeStateDirExit2(t *testing.T) {
	ns := netnstest.New(t)
	ns.AddDummy(t, "eth0", "198.51.100.21/24")
	dir := t.TempDir()
	if err := os.Chmod(dir, 0o777); err != nil {
		t.Fatal(err)
	}
	cfg := writeConfig(t, "interfaces: [eth0]\nvips: [{address: 192.0.2.10}]\n")
	before := hostView(t, ns)
	for _, cmd := range []string{"apply", "remove", "status"} {
		r := runIn(t, ns, nil, "--config", cfg, "--state-dir", filepath.Join(dir, "state"), cmd)
		if r.code != 2 || !strings.Contains(r.out, "unsafe state dir") || !strings.Contains(r.out, "writable by group or others") {
			t.Fatalf("%s with a world-writable parent: exit %d:\n%s", cmd, r.code, r.out)
		}
	}
	if after := hostView(t, ns); after != before {
		t.Fatalf("host changed\n--- before\n%s\n--- after\n%s", before, after)
	}
}

// TestCheckCommand: keepalived MISC_CHECK exit codes from a real HTTP
// endpoint: 0 for 200, 1 for 503 and for nothing listening.
func TestCheckCommand(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	var healthy atomic.Bool
	healthy.Store(true)
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path != "/healthz" {
			http.NotFound(w, r)
			return
		}
		if !healthy.Load() {
			http.Error(w, "draining", http.StatusServiceUnavailable)
			return
		}
		_, _ = w.Write([]byte("up\n"))
	})}
	go func() { _ = srv.Serve(ln) }()
	t.Cleanup(func() { _ = srv.Close() })
	addr := ln.Addr().String()
	if r := runIn(t, nil, nil, "check", addr); r.code != 0 || !strings.Contains(r.out, "up") {
		t.Fatalf("check of a healthy server: exit %d:\n%s", r.code, r.out)
	}
	healthy.Store(false)
	if r := runIn(t, nil, nil, "check", addr); r.code != 1 || !strings.Contains(r.out, "503 draining") {
		t.Fatalf("check of a draining server: exit %d:\n%s", r.code, r.out)
	}
	_ = srv.Close()
	if r := runIn(t, nil, nil, "check", "--timeout", "1s", addr); r.code != 1 {
		t.Fatalf("check of a closed port: exit %d:\n%s", r.code, r.out)
	}
	if r := runIn(t, nil, nil, "check", "a", "b"); r.code != 2 {
		t.Fatalf("check with two targets: exit %d:\n%s", r.code, r.out)
	}
}
