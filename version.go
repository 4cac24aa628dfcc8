// Package dsragent is the release identity of dsr-agent: the version kept in
// the repository's VERSION file and the commit the binary was built from.
//
// It lives at the module root because go:embed cannot reach a parent
// directory: VERSION stays the one file a release edits (the Makefile and the
// packages read the same file), and any build of ./cmd/dsr-agent, a plain
// `go build` included, carries it.
package dsragent

import (
	_ "embed"
	"runtime/debug"
	"strings"
)

//go:embed VERSION
var versionFile string

// commit overrides the commit from go build's VCS stamp, for builds without
// one (a source tarball, -buildvcs=false):
// -ldflags '-X github.com/dsr-agent/dsr-agent.commit=SHA'.
var commit string

// Version is the semantic version in VERSION (MAJOR.MINOR.PATCH).
func Version() string { return strings.TrimSpace(versionFile) }

// Commit is the commit the binary was built from: the ldflags override, else
// the first 12 hex digits of go build's vcs.revision with "-dirty" when the
// work tree had changes, else "unknown". go build stamps the revision in a git
// clone unless -buildvcs=false (some machines set it in GOFLAGS; a git
// worktree is not stamped either), so the Makefile passes the commit itself.
func Commit() string {
	if commit != "" {
		return commit
	}
	info, _ := debug.ReadBuildInfo()
	return commitOf(info)
}

// commitOf reads the VCS stamp of a build (nil: none).
func commitOf(info *debug.BuildInfo) string {
	if info == nil {
		return "unknown"
	}
	var rev string
	var dirty bool
	for _, s := range info.Settings {
		switch s.Key {
		case "vcs.revision":
			rev = s.Value
		case "vcs.modified":
			dirty = s.Value == "true"
		}
	}
	if rev == "" {
		return "unknown"
	}
	rev = rev[:min(len(rev), 12)]
	if dirty {
		rev += "-dirty"
	}
	return rev
}
