package main

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/dsr-agent/dsr-agent/internal/netnstest"
)

// One shared config.yaml for the pool, the host's VIP in a drop-in: apply
// configures both, a bad drop-in makes the whole config invalid (exit 2,
// nothing changed), and validate checks a drop-in template before it is
// written (what Ansible's `validate:` runs).
func TestCLIDropIns(t *testing.T) {
	ns := netnstest.New(t)
	ns.AddDummy(t, "eth0", "198.51.100.21/24")
	dir := t.TempDir()
	state := filepath.Join(dir, "state")
	cfg := filepath.Join(dir, "config.yaml")
	dropDir := filepath.Join(dir, "config.d")
	must := func(err error) {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
	}
	must(os.WriteFile(cfg, []byte("interfaces: [eth0]\nvips:\n  - address: 192.0.2.10\n"), 0o644))
	must(os.Mkdir(dropDir, 0o755))
	must(os.WriteFile(filepath.Join(dropDir, "10-host.yaml"), []byte("vips:\n  - address: 192.0.2.11\n"), 0o644))
	flags := []string{"--config", cfg, "--config-dir", dropDir, "--state-dir", state}
	run := func(args ...string) result { return runIn(t, ns, nil, append(flags, args...)...) }

	r := run("validate", "--print")
	if r.code != 0 {
		t.Fatalf("validate --print: exit %d\n%s", r.code, r.out)
	}
	for _, want := range []string{
		"address: 192.0.2.10 # " + cfg + ":3",
		"address: 192.0.2.11 # " + filepath.Join(dropDir, "10-host.yaml") + ":2",
		"2 VIP(s) (drop-ins: 10-host.yaml)",
	} {
		if !strings.Contains(r.out, want) {
			t.Errorf("validate --print lacks %q:\n%s", want, r.out)
		}
	}
	if r := run("apply"); r.code != 0 {
		t.Fatalf("apply: exit %d\n%s", r.code, r.out)
	}
	addrs := ns.Exec(t, "ip", "-o", "addr", "show", "dev", "lo")
	for _, v := range []string{"192.0.2.10/32", "192.0.2.11/32"} {
		if !strings.Contains(addrs, v) {
			t.Errorf("after apply, %s not on lo:\n%s", v, addrs)
		}
	}

	// A bad drop-in: invalid as a whole, named by file and line, nothing
	// changed (the drop-in also asks to drop 192.0.2.11 by mode change).
	before := hostView(t, ns)
	bad := filepath.Join(dropDir, "20-bad.yaml")
	must(os.WriteFile(bad, []byte("mode: arptables\nvips:\n  - address: 192.0.2.300\n"), 0o644))
	for _, cmd := range []string{"validate", "apply", "status"} {
		r := run(cmd)
		if r.code != 2 || !strings.Contains(r.out, bad+":3: vips[2].address") {
			t.Errorf("%s with a bad drop-in: exit %d, want 2 naming %s:3:\n%s", cmd, r.code, bad, r.out)
		}
	}
	if after := hostView(t, ns); after != before {
		t.Errorf("a refused config changed the host:\n%s\n---\n%s", before, after)
	}
	must(os.Remove(bad))

	// validate --drop-in NAME=FILE: a template checked in context.
	tmpl := filepath.Join(dir, "template")
	must(os.WriteFile(tmpl, []byte("vips:\n  - address: 192.0.2.10\n"), 0o644))
	r = run("validate", "--drop-in", "30-new.yaml="+tmpl)
	if r.code != 2 || !strings.Contains(r.out, filepath.Join(dropDir, "30-new.yaml")+":2: vips[2].address") || !strings.Contains(r.out, "each VIP listed once") {
		t.Errorf("--drop-in duplicating a VIP: exit %d\n%s", r.code, r.out)
	}
	// Replacing the host's own drop-in by name: the old one is not read.
	must(os.WriteFile(tmpl, []byte("vips:\n  - address: 192.0.2.12\n"), 0o644))
	r = run("validate", "--print", "--drop-in", "10-host.yaml="+tmpl)
	if r.code != 0 || strings.Contains(r.out, "192.0.2.11") || !strings.Contains(r.out, "192.0.2.12") {
		t.Errorf("--drop-in replacing 10-host.yaml: exit %d\n%s", r.code, r.out)
	}
	if r := run("validate", "--drop-in", "notyaml="+tmpl); r.code != 2 {
		t.Errorf("--drop-in with a name that is not *.yaml: exit %d\n%s", r.code, r.out)
	}
	if _, err := os.Stat(filepath.Join(dropDir, "30-new.yaml")); !os.IsNotExist(err) {
		t.Errorf("validate --drop-in wrote into the config dir: %v", err)
	}
}
