package main

import (
	"bytes"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// The testdata streams are real `go test -json` output: tunnel-root.json is
// this repository's tunnel package run as root on a kernel without ipip;
// undocumented.json and failing.json are two throwaway packages (one test
// skips for a reason nobody documented; a failing test, a skipped subtest and
// a package that does not build).

// runTool runs the command as make does, with the repository's allow-list.
func runTool(t *testing.T, stream string, env map[string]string, args ...string) (int, string) {
	t.Helper()
	for k, v := range env {
		t.Setenv(k, v)
	}
	if _, ok := env[strictEnv]; !ok {
		t.Setenv(strictEnv, "") // the CI variable of the run around this test must not leak in
	}
	in, err := os.Open(filepath.Join("testdata", stream))
	if err != nil {
		t.Fatal(err)
	}
	defer in.Close()
	var out, errOut bytes.Buffer
	code := run(append([]string{"-allow", "../../mk/skips.allowed"}, args...), in, &out, &errOut)
	if errOut.Len() > 0 {
		t.Logf("stderr: %s", errOut.String())
	}
	return code, out.String()
}

func TestUndocumentedSkipFailsCI(t *testing.T) {
	code, out := runTool(t, "undocumented.json", map[string]string{strictEnv: "1"}, "-name", "test-root")
	if code != exitSkips {
		t.Errorf("exit %d with %s=1 and an undocumented skip, want %d\n%s", code, strictEnv, exitSkips, out)
	}
	for _, want := range []string{
		"  NOT on the allow-list ../../mk/skips.allowed:\n    SKIP daemon.TestUndocumented: d_test.go:6: looked for the thing / d_test.go:7: needs a thing nobody listed\n",
		"  allowed by ../../mk/skips.allowed:13: The tunnel kernel tests need",
		"\n    SKIP tunnel.TestNeedsModule: t_test.go:5: load the ipip module",
		"FAIL: 1 skipped tests are not on the allow-list",
	} {
		if !strings.Contains(out, want) {
			t.Errorf("output lacks %q:\n%s", want, out)
		}
	}
}

func TestUndocumentedSkipOnlyNotedOutsideCI(t *testing.T) {
	code, out := runTool(t, "undocumented.json", nil, "-name", "test-root")
	if code != 0 {
		t.Errorf("exit %d without %s, want 0 (a developer's run lists skips, CI fails on them)\n%s", code, strictEnv, out)
	}
	if !strings.Contains(out, "note: 1 skipped tests are not on the allow-list") || !strings.Contains(out, "SKIP daemon.TestUndocumented") {
		t.Errorf("the skip is not shown:\n%s", out)
	}
}

// The tunnel kernel tests this host skips are exactly what the allow-list
// documents: a strict run of the recorded stream passes and names each one.
func TestHostTunnelSkipsAllowed(t *testing.T) {
	code, out := runTool(t, "tunnel-root.json", map[string]string{strictEnv: "1"}, "-name", "test-root")
	if code != 0 {
		t.Errorf("exit %d, want 0:\n%s", code, out)
	}
	if !strings.Contains(out, "--- test-root: 9 tests skipped, 0 not on the allow-list") {
		t.Errorf("summary line missing:\n%s", out)
	}
	if got := strings.Count(out, "    SKIP tunnel.Test"); got != 9 {
		t.Errorf("%d skips listed, want 9:\n%s", got, out)
	}
	if got := strings.Count(out, "allowed by ../../mk/skips.allowed:"); got != 1 {
		t.Errorf("the entry's why is printed %d times, want once:\n%s", got, out)
	}
	if !strings.HasPrefix(out, "ok  \tgithub.com/dsr-agent/dsr-agent/tunnel\t") {
		t.Errorf("the package line of plain go test does not come first:\n%s", out)
	}
	if strings.Contains(out, "=== RUN") || strings.Contains(out, "\nPASS\n") {
		t.Errorf("without -v, the framing lines go test -v prints are shown:\n%s", out)
	}
}

// Under -short skips are by design: counted per package, never a failure.
func TestShortRunCounts(t *testing.T) {
	code, out := runTool(t, "undocumented.json", map[string]string{strictEnv: "1"}, "-name", "test-unit", "-short")
	if code != 0 {
		t.Errorf("exit %d, want 0:\n%s", code, out)
	}
	if !strings.Contains(out, "--- test-unit: 2 tests skipped under -short, by design") || !strings.Contains(out, "daemon 1, tunnel 1") {
		t.Errorf("no count:\n%s", out)
	}
}

// A failing run exits 1 even when the pipe's status is lost, and shows what
// plain go test shows: the failed test's log, the build error, FAIL lines.
func TestFailureShown(t *testing.T) {
	code, out := runTool(t, "failing.json", nil, "-name", "test-root")
	if code != exitFail {
		t.Errorf("exit %d, want %d", code, exitFail)
	}
	for _, want := range []string{
		"b_test.go:5:28: declared and not used: x",
		"FAIL\tgithub.com/dsr-agent/dsr-agent/broken [build failed]",
		"    d_test.go:10: boom\n--- FAIL: TestFails/sub",
		"--- FAIL: TestFails (",
		"FAIL\tgithub.com/dsr-agent/dsr-agent/daemon\t",
		"SKIP daemon.TestFails/skipped: d_test.go:11: sub skip",
	} {
		if !strings.Contains(out, want) {
			t.Errorf("output lacks %q:\n%s", want, out)
		}
	}
}

// make test's summary reads the records of each target back and applies the
// same rule: the undocumented skip of test-root fails it, test-unit's do not.
func TestSummaryOfRecords(t *testing.T) {
	dir := t.TempDir()
	root, unit := filepath.Join(dir, "test-root.json"), filepath.Join(dir, "test-unit.json")
	if code, out := runTool(t, "undocumented.json", nil, "-name", "test-root", "-record", root); code != 0 {
		t.Fatalf("exit %d\n%s", code, out)
	}
	if code, out := runTool(t, "undocumented.json", nil, "-name", "test-unit", "-short", "-record", unit); code != 0 {
		t.Fatalf("exit %d\n%s", code, out)
	}
	t.Setenv(strictEnv, "1")
	var out bytes.Buffer
	code := run([]string{"-allow", "../../mk/skips.allowed", "-summary", unit, root, filepath.Join(dir, "test-e2e.json")}, nil, &out, &out)
	if code != exitSkips {
		t.Errorf("exit %d, want %d:\n%s", code, exitSkips, out.String())
	}
	if !strings.Contains(out.String(), "--- test-unit: 2 tests skipped under -short") || !strings.Contains(out.String(), "--- test-root: 2 tests skipped, 1 not on the allow-list") {
		t.Errorf("summary:\n%s", out.String())
	}
}

func TestAllowFileNeedsWhy(t *testing.T) {
	for name, text := range map[string]string{
		"no comment":   "tunnel Test.* modules\n",
		"comment gone": "# why\n\ntunnel Test.* modules\n",
		"two fields":   "# why\ntunnel Test.*\n",
		"bad regexp":   "# why\ntunnel Test( modules\n",
	} {
		f := filepath.Join(t.TempDir(), "allowed")
		if err := os.WriteFile(f, []byte(text), 0o644); err != nil {
			t.Fatal(err)
		}
		if _, err := ParseAllowFile(f); err == nil {
			t.Errorf("%s: %q accepted", name, text)
		}
	}
	a, err := ParseAllowFile("../../mk/skips.allowed")
	if err != nil {
		t.Fatal(err)
	}
	s := Skip{Package: "github.com/dsr-agent/dsr-agent/tunnel", Test: "TestWatch", Reason: "kernel_test.go:270: load the fou module: modprobe fou: exit status 1"}
	if match(a, s) == nil {
		t.Errorf("%+v not allowed", s)
	}
	// The same reason elsewhere, or another reason in tunnel, is not allowed.
	for _, s := range []Skip{
		{Package: "github.com/dsr-agent/dsr-agent/daemon", Test: "TestWatch", Reason: s.Reason},
		{Package: s.Package, Test: "TestFallbackDevicePerNamespace", Reason: "fb_tunnels_only_for_init_net = 2"},
		{Package: "github.com/dsr-agent/dsr-agent/notunnel", Test: "TestWatch", Reason: s.Reason},
	} {
		if a := match(a, s); a != nil {
			t.Errorf("%+v allowed by line %d", s, a.Line)
		}
	}
}
