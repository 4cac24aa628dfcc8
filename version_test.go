package dsragent

import (
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"runtime/debug"
	"strings"
	"testing"
)

// semver is what VERSION may hold: MAJOR.MINOR.PATCH, nothing else, because
// it becomes the RPM Version and the Debian upstream version as is (a "-"
// would split an RPM version, a "~" or "+" would sort differently in rpm and
// dpkg).
var semver = regexp.MustCompile(`^(0|[1-9][0-9]*)\.(0|[1-9][0-9]*)\.(0|[1-9][0-9]*)$`)

func TestVersionFile(t *testing.T) {
	if v := Version(); !semver.MatchString(v) {
		t.Fatalf("VERSION = %q: expected MAJOR.MINOR.PATCH (semantic version, digits only)", v)
	}
	b, err := os.ReadFile("VERSION")
	if err != nil {
		t.Fatal(err)
	}
	if string(b) != Version()+"\n" {
		t.Fatalf("VERSION is %q: expected the version and one newline", b)
	}
}

// Every version in VERSION has its section in CHANGELOG.md, in Keep a
// Changelog's form, below an Unreleased section.
func TestChangelogHasVersion(t *testing.T) {
	b, err := os.ReadFile("CHANGELOG.md")
	if err != nil {
		t.Fatal(err)
	}
	text := string(b)
	if !strings.Contains(text, "\n## [Unreleased]\n") {
		t.Error("CHANGELOG.md has no '## [Unreleased]' section")
	}
	head := regexp.MustCompile(`(?m)^## \[` + regexp.QuoteMeta(Version()) + `\] - \d{4}-\d{2}-\d{2}$`)
	if !head.MatchString(text) {
		t.Errorf("CHANGELOG.md has no '## [%s] - YYYY-MM-DD' section for VERSION", Version())
	}
	if strings.Index(text, "## [Unreleased]") > strings.Index(text, "## ["+Version()+"]") {
		t.Error("CHANGELOG.md: Unreleased must come first")
	}
}

func TestCommitOf(t *testing.T) {
	rev := "61f5d6234da095c75c2f2feb1b88f1b2ee274b18"
	for _, c := range []struct {
		name     string
		settings []debug.BuildSetting
		want     string
	}{
		{"no stamp", nil, "unknown"},
		{"clean", []debug.BuildSetting{{Key: "vcs", Value: "git"}, {Key: "vcs.revision", Value: rev}, {Key: "vcs.modified", Value: "false"}}, "61f5d6234da0"},
		{"dirty", []debug.BuildSetting{{Key: "vcs.revision", Value: rev}, {Key: "vcs.modified", Value: "true"}}, "61f5d6234da0-dirty"},
		{"short revision", []debug.BuildSetting{{Key: "vcs.revision", Value: "abc"}}, "abc"},
	} {
		if got := commitOf(&debug.BuildInfo{Settings: c.settings}); got != c.want {
			t.Errorf("%s: commitOf = %q, want %q", c.name, got, c.want)
		}
	}
	if got := commitOf(nil); got != "unknown" {
		t.Errorf("commitOf(nil) = %q", got)
	}
}

// A plain `go build ./cmd/dsr-agent`, no ldflags, carries the version (from
// VERSION, embedded) and, where go build stamps it, the commit; the linker
// flag the Makefile passes sets the commit where it does not.
func TestBuildCarriesVersion(t *testing.T) {
	if testing.Short() {
		t.Skip("builds the binary")
	}
	dir := t.TempDir()
	build := func(name string, args ...string) string {
		t.Helper()
		bin := filepath.Join(dir, name)
		cmd := exec.Command("go", append(append([]string{"build", "-o", bin}, args...), "./cmd/dsr-agent")...)
		cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
		if out, err := cmd.CombinedOutput(); err != nil {
			t.Fatalf("go build %v ./cmd/dsr-agent: %v\n%s", args, err, out)
		}
		return bin
	}
	versionOf := func(bin string) string {
		t.Helper()
		out, err := exec.Command(bin, "--version").CombinedOutput()
		if err != nil {
			t.Fatalf("%s --version: %v\n%s", bin, err, out)
		}
		return string(out)
	}

	plain := build("plain")
	// What go build stamped decides the commit to expect.
	meta, err := exec.Command("go", "version", "-m", plain).Output()
	if err != nil {
		t.Fatal(err)
	}
	commit := "unknown"
	if m := regexp.MustCompile(`(?m)^\s*build\s+vcs\.revision=([0-9a-f]{12})`).FindSubmatch(meta); m != nil {
		commit = string(m[1]) + `(-dirty)?`
		head, err := exec.Command("git", "rev-parse", "HEAD").Output()
		if err != nil || !strings.HasPrefix(string(head), string(m[1])) {
			t.Fatalf("go build stamped %s, git rev-parse HEAD says %q (%v)", m[1], head, err)
		}
	} else {
		t.Logf("go build did not stamp the commit here (GOFLAGS=-buildvcs=false or a git worktree)")
	}
	want := regexp.MustCompile(`^dsr-agent ` + regexp.QuoteMeta(Version()) + ` \(commit ` + commit + `\)\n$`)
	if got := versionOf(plain); !want.MatchString(got) {
		t.Errorf("plain build: --version = %q, want %s", got, want)
	}

	stamped := build("stamped", "-ldflags", "-X github.com/dsr-agent/dsr-agent.commit=0123456789ab")
	if got, want := versionOf(stamped), "dsr-agent "+Version()+" (commit 0123456789ab)\n"; got != want {
		t.Errorf("-X …commit: --version = %q, want %q", got, want)
	}
}
