package daemon

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// TestReloadDropIns (issue 18 point 1): the daemon reads config.d, a reload
// picks up a new drop-in, and a bad drop-in is refused as a whole (naming
// its file and line) while the running config stays in force.
func TestReloadDropIns(t *testing.T) {
	ns := setupNS(t)
	dir := t.TempDir()
	dropDir := filepath.Join(dir, "config.d")
	if err := os.Mkdir(dropDir, 0o755); err != nil {
		t.Fatal(err)
	}
	write := func(name, text string) {
		t.Helper()
		if err := os.WriteFile(filepath.Join(dropDir, name), []byte(text), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	write("10-host.yaml", "health:\n  listen: 10.77.0.2:8558\n")
	d := startDaemonWrapped(t, ns, dir, "mode: loopback\ninterfaces: [eth0]\nvips: [{address: 10.77.100.1}]\n",
		nil, []string{"DSR_AGENT_CONFIG_DIR=" + dropDir}, "--resync", "1h")
	d.waitNote("READY=1", 10*time.Second)
	hz := "10.77.0.2:8558"
	// health.listen came from the drop-in: the daemon serves it.
	eventually(t, 3*time.Second, "healthz up on the drop-in's listen", healthIs(t, ns, hz, 200, "up"))

	write("20-vip.yaml", "vips: [{address: 10.77.100.2}]\n")
	if r := d.ctl("reload"); r.code != 0 || !strings.Contains(r.out, "2 VIP(s)") {
		t.Fatalf("reload with a new drop-in: exit %d:\n%s", r.code, r.out)
	}
	if ok, out := hasAddr(ns, "lo", "10.77.100.2/32"); !ok {
		t.Fatalf("the drop-in's VIP is not on lo after reload:\n%s", out)
	}

	bad := filepath.Join(dropDir, "30-bad.yaml")
	write("30-bad.yaml", "vips:\n  - address: 10.77.100.999\n")
	r := d.ctl("reload")
	if r.code != 1 || !strings.Contains(r.out, bad+":2") {
		t.Fatalf("reload with a bad drop-in: exit %d, want 1 naming %s:2:\n%s", r.code, bad, r.out)
	}
	for _, v := range []string{"10.77.100.1/32", "10.77.100.2/32"} {
		if ok, out := hasAddr(ns, "lo", v); !ok {
			t.Fatalf("a refused reload lost %s:\n%s", v, out)
		}
	}
	eventually(t, 3*time.Second, "still up", healthIs(t, ns, hz, 200, "up"))
	d.stop()
}
