package main

import (
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/dsr-agent/dsr-agent/internal/netnstest"
)

var binary string

func TestMain(m *testing.M) {
	dir, err := os.MkdirTemp("", "dsr-agent-cli")
	if err != nil {
		panic(err)
	}
	binary = filepath.Join(dir, "dsr-agent")
	out, err := exec.Command("go", "build", "-o", binary, ".").CombinedOutput()
	if err != nil {
		panic("build dsr-agent: " + err.Error() + "\n" + string(out))
	}
	code := m.Run()
	os.RemoveAll(dir)
	os.Exit(code)
}

type result struct {
	out  string
	code int
}

// runIn runs the binary inside ns (nil: on the host, for commands that
// must not need privileges), with prefix commands such as setpriv.
func runIn(t *testing.T, ns *netnstest.NS, prefix []string, args ...string) result {
	t.Helper()
	argv := append(append([]string{}, prefix...), binary)
	argv = append(argv, args...)
	if ns != nil {
		argv = append([]string{"ip", "netns", "exec", ns.Name}, argv...)
	}
	cmd := exec.Command(argv[0], argv[1:]...)
	out, err := cmd.CombinedOutput()
	var ee *exec.ExitError
	code := 0
	if errors.As(err, &ee) {
		code = ee.ExitCode()
	} else if err != nil {
		t.Fatal(err)
	}
	return result{string(out), code}
}

func writeConfig(t *testing.T, yaml string) string {
	t.Helper()
	f := filepath.Join(t.TempDir(), "config.yaml")
	if err := os.WriteFile(f, []byte(yaml), 0o644); err != nil {
		t.Fatal(err)
	}
	return f
}

// hostView is what dsr-agent could change. IPv6 link-local addresses are
// left out: the kernel adds them (and ends their DAD) on its own schedule
// after a link comes up, which made the comparison flaky.
func hostView(t *testing.T, ns *netnstest.NS) string {
	return ns.Exec(t, "ip", "-o", "-4", "addr") + ns.Exec(t, "ip", "-o", "-6", "addr", "show", "scope", "global") +
		ns.Exec(t, "ip", "-o", "link") + ns.Exec(t, "nft", "list", "ruleset") + ns.Sysctl(t, "net", "ipv4", "conf", "all", "arp_ignore")
}

func TestCLIExitCodesAndDryRun(t *testing.T) {
	ns := netnstest.New(t)
	ns.AddDummy(t, "eth0", "198.51.100.21/24")
	state := filepath.Join(t.TempDir(), "state")
	good := writeConfig(t, "interfaces: [eth0]\nvips: [{address: 192.0.2.10}]\n")
	bad := writeConfig(t, "interfaces: [eth0]\nvips: [{address: 192.0.2.10, ports: [{port: 99999}]}]\n")
	flags := func(cfg string) []string { return []string{"--config", cfg, "--state-dir", state} }
	before := hostView(t, ns)

	for _, cmd := range []string{"validate", "apply", "status", "run"} {
		r := runIn(t, ns, nil, append(flags(bad), cmd)...)
		if r.code != 2 || !strings.Contains(r.out, "vips[0].ports[0].port") || !strings.Contains(r.out, "99999") {
			t.Fatalf("%s with bad config: exit %d, output:\n%s", cmd, r.code, r.out)
		}
	}
	if r := runIn(t, ns, nil, append(flags(good), "apply", "--dry-run")...); r.code != 0 || !strings.Contains(r.out, "ip addr add 192.0.2.10/32 dev lo label lo:dsr0") {
		t.Fatalf("dry-run: exit %d:\n%s", r.code, r.out)
	}
	if after := hostView(t, ns); after != before {
		t.Fatalf("bad configs or dry-run changed the host\n--- before\n%s\n--- after\n%s", before, after)
	}
	if r := runIn(t, ns, nil, append(flags(good), "status")...); r.code != 1 || !strings.Contains(r.out, "vip-missing") {
		t.Fatalf("status before apply: exit %d:\n%s", r.code, r.out)
	}
	if r := runIn(t, ns, nil, append(flags(good), "apply")...); r.code != 0 || !strings.Contains(r.out, "sysctl -w net.ipv4.conf.all.arp_ignore=1") {
		t.Fatalf("apply: exit %d:\n%s", r.code, r.out)
	}
	if r := runIn(t, ns, nil, append(flags(good), "apply")...); r.code != 0 || !strings.Contains(r.out, "nothing to do") {
		t.Fatalf("second apply: exit %d:\n%s", r.code, r.out)
	}
	if r := runIn(t, ns, nil, append(flags(good), "status", "--json")...); r.code != 0 || !strings.Contains(r.out, `"in_sync": true`) {
		t.Fatalf("status --json: exit %d:\n%s", r.code, r.out)
	}
	if r := runIn(t, ns, nil, append(flags(good), "remove")...); r.code != 0 || !strings.Contains(r.out, "ip addr del 192.0.2.10/32 dev lo") {
		t.Fatalf("remove: exit %d:\n%s", r.code, r.out)
	}
	if after := hostView(t, ns); after != before {
		t.Fatalf("apply+remove did not restore the host\n--- before\n%s\n--- after\n%s", before, after)
	}
	if r := runIn(t, ns, nil, "--config", filepath.Join(t.TempDir(), "missing.yaml"), "validate"); r.code != 2 {
		t.Fatalf("missing config: exit %d:\n%s", r.code, r.out)
	}
	for _, args := range [][]string{{"frobnicate"}, {}, {"apply", "--bogus"}, {"--bogus", "validate"}} {
		if r := runIn(t, ns, nil, args...); r.code != 2 {
			t.Fatalf("bad usage %v: exit %d, want 2:\n%s", args, r.code, r.out)
		}
	}
}

// TestCLIPrivileges: apply and remove refuse without CAP_NET_ADMIN (before
// reading the config); validate and apply --dry-run work as nobody.
func TestCLIPrivileges(t *testing.T) {
	netnstest.RequireRoot(t)
	if _, err := exec.LookPath("setpriv"); err != nil {
		t.Fatal("setpriv (util-linux) is needed for this test")
	}
	// t.TempDir's parent is private to root; nobody must reach the config.
	dir, err := os.MkdirTemp("", "dsr-agent-priv")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	if err := os.Chmod(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	cfg := filepath.Join(dir, "config.yaml")
	if err := os.WriteFile(cfg, []byte("interfaces: [lo0x]\nvips: []\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	nobody := []string{"setpriv", "--reuid=65534", "--regid=65534", "--clear-groups", "--inh-caps=-all", "--bounding-set=-all"}
	state := filepath.Join(dir, "state")
	for _, cmd := range []string{"apply", "remove", "run"} {
		r := runIn(t, nil, nobody, "--config", cfg, "--state-dir", state, cmd)
		if r.code != 2 || !strings.Contains(r.out, "CAP_NET_ADMIN") {
			t.Fatalf("%s as nobody: exit %d:\n%s", cmd, r.code, r.out)
		}
	}
	ok := filepath.Join(dir, "ok.yaml")
	if err := os.WriteFile(ok, []byte("interfaces: [lo0x]\nvips: []\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	// validate reads the host (links, addresses) without privileges; the
	// interface does not exist, so it must fail as invalid config, not as
	// a permission problem.
	r := runIn(t, nil, nobody, "--config", ok, "--state-dir", state, "validate")
	if r.code != 2 || !strings.Contains(r.out, `interfaces[0]: "lo0x": expected an existing network interface`) {
		t.Fatalf("validate as nobody: exit %d:\n%s", r.code, r.out)
	}
	if _, err := os.Stat(state); !os.IsNotExist(err) {
		t.Fatal("state dir created by unprivileged commands")
	}
	// Once root has created the private state dir, validate as nobody still
	// works; dry-run refuses clearly (reading nftables needs CAP_NET_ADMIN).
	if err := os.Mkdir(state, 0o700); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(state, "state.json"), []byte("{}"), 0o600); err != nil {
		t.Fatal(err)
	}
	r = runIn(t, nil, nobody, "--config", ok, "--state-dir", state, "validate")
	if r.code != 2 || !strings.Contains(r.out, `"lo0x": expected an existing network interface`) {
		t.Fatalf("validate as nobody with a private state dir: exit %d:\n%s", r.code, r.out)
	}
	// A config valid in this namespace, so the refusal comes from reading
	// nftables, not from validation.
	ns := netnstest.New(t)
	ns.AddDummy(t, "eth0", "198.51.100.21/24")
	valid := filepath.Join(dir, "valid.yaml")
	if err := os.WriteFile(valid, []byte("interfaces: [eth0]\nvips: [{address: 192.0.2.10}]\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	r = runIn(t, ns, nobody, "--config", valid, "--state-dir", state, "apply", "--dry-run")
	if r.code != 2 || !strings.Contains(r.out, "reading nftables needs CAP_NET_ADMIN") {
		t.Fatalf("dry-run as nobody: exit %d:\n%s", r.code, r.out)
	}
}

func TestVersion(t *testing.T) {
	r := runIn(t, nil, nil, "--version")
	if r.code != 0 || !strings.HasPrefix(r.out, "dsr-agent ") || !strings.Contains(r.out, "(commit ") {
		t.Fatalf("--version: exit %d: %q", r.code, r.out)
	}
}

// prepare loads nothing outside mode tunnel, and a bad config is exit 2
// (the unit ignores its failure; the daemon then reports the config).
func TestPrepare(t *testing.T) {
	r := runIn(t, nil, nil, "--config", writeConfig(t, "mode: loopback\nvips: [{address: 192.0.2.10}]\n"), "prepare")
	if r.code != 0 || r.out != "" {
		t.Fatalf("prepare in loopback mode: exit %d: %q", r.code, r.out)
	}
	r = runIn(t, nil, nil, "--config", writeConfig(t, "mode: tunnel\nvips: [{address: 192.0.2.10}]\ntunnel: {encap: gre}\n"), "prepare")
	if r.code != 2 || !strings.Contains(r.out, "tunnel.encap") {
		t.Fatalf("prepare with a bad config: exit %d: %q", r.code, r.out)
	}
}
