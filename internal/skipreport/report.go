package main

import (
	"encoding/json"
	"fmt"
	"io"
	"os"
	"path"
	"path/filepath"
	"sort"
	"strings"
)

// Run is the skips of one go test run (one make target).
type Run struct {
	Name string `json:"name"`
	// Short: the run used -short, where tests skip by design; its skips are
	// counted, not checked against the allow-list.
	Short bool   `json:"short"`
	Skips []Skip `json:"skips"`
}

// WriteRecord saves a run for a later -summary.
func WriteRecord(path string, r Run) error {
	b, err := json.MarshalIndent(r, "", "  ")
	if err != nil {
		return fmt.Errorf("record %s: %w", path, err)
	}
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		return fmt.Errorf("record: %w", err)
	}
	if err := os.WriteFile(path, append(b, '\n'), 0o644); err != nil {
		return fmt.Errorf("record: %w", err)
	}
	return nil
}

// ReadRecord loads a run WriteRecord saved.
func ReadRecord(path string) (Run, error) {
	var r Run
	b, err := os.ReadFile(path)
	if err != nil {
		return r, fmt.Errorf("record: %w", err)
	}
	if err := json.Unmarshal(b, &r); err != nil {
		return r, fmt.Errorf("record %s: %w", path, err)
	}
	return r, nil
}

// Report prints the skips of each run and returns how many of the checked
// (non-short) runs' skips no allow-list entry covers.
func Report(w io.Writer, runs []Run, allow []Allowed, allowFile string, strict bool) int {
	prefix := modulePrefix()
	bad := 0
	for _, r := range runs {
		if len(r.Skips) == 0 {
			fmt.Fprintf(w, "--- %s: no test skipped\n", r.Name)
			continue
		}
		if r.Short {
			fmt.Fprintf(w, "--- %s: %d tests skipped under -short, by design (they need root or start servers; test-root runs them): %s\n",
				r.Name, len(r.Skips), perPackage(r.Skips, prefix))
			continue
		}
		// Allowed skips grouped under the entry that allows them (its why
		// printed once), the others last, where they show.
		var order []*Allowed
		byEntry := map[*Allowed][]string{}
		var notAllowed []string
		for _, s := range r.Skips {
			line := fmt.Sprintf("    SKIP %s.%s: %s", shortPkg(s.Package, prefix), s.Test, s.Reason)
			a := match(allow, s)
			if a == nil {
				notAllowed = append(notAllowed, line)
				continue
			}
			if _, seen := byEntry[a]; !seen {
				order = append(order, a)
			}
			byEntry[a] = append(byEntry[a], line)
		}
		runBad := len(notAllowed)
		fmt.Fprintf(w, "--- %s: %d tests skipped, %d not on the allow-list%s\n", r.Name, len(r.Skips), runBad, inFile(allowFile))
		for _, a := range order {
			fmt.Fprintf(w, "  allowed by %s:%d: %s\n%s\n", allowFile, a.Line, a.Why, strings.Join(byEntry[a], "\n"))
		}
		if runBad > 0 {
			fmt.Fprintf(w, "  NOT on the allow-list%s:\n%s\n", inFile(allowFile), strings.Join(notAllowed, "\n"))
		}
		bad += runBad
	}
	if bad > 0 {
		if strict {
			fmt.Fprintf(w, "FAIL: %d skipped tests are not on the allow-list%s (%s=1): make them run, or add an entry saying why they may skip\n",
				bad, inFile(allowFile), strictEnv)
		} else {
			fmt.Fprintf(w, "note: %d skipped tests are not on the allow-list%s: CI (%s=1) fails on them\n", bad, inFile(allowFile), strictEnv)
		}
	}
	return bad
}

func inFile(f string) string {
	if f == "" {
		return ""
	}
	return " " + f
}

// perPackage is "agent 3, daemon 5": how a short run's skips spread.
func perPackage(skips []Skip, prefix string) string {
	n := map[string]int{}
	for _, s := range skips {
		n[shortPkg(s.Package, prefix)]++
	}
	pkgs := make([]string, 0, len(n))
	for p := range n {
		pkgs = append(pkgs, p)
	}
	sort.Strings(pkgs)
	for i, p := range pkgs {
		pkgs[i] = fmt.Sprintf("%s %d", p, n[p])
	}
	return strings.Join(pkgs, ", ")
}

// shortPkg is pkg without the module path ("tunnel"); the module's root
// package is its last element ("dsr-agent").
func shortPkg(pkg, prefix string) string {
	if prefix != "" && pkg+"/" == prefix {
		return path.Base(pkg)
	}
	return strings.TrimPrefix(pkg, prefix)
}

// modulePrefix is "MODULE/" of the go.mod in the working directory or above
// it (make runs from the module root), trimmed from package names to keep
// the lines short.
func modulePrefix() string {
	dir, err := os.Getwd()
	if err != nil {
		return ""
	}
	for {
		if b, err := os.ReadFile(filepath.Join(dir, "go.mod")); err == nil {
			for _, l := range strings.Split(string(b), "\n") {
				if f := strings.Fields(l); len(f) == 2 && f[0] == "module" {
					return strings.Trim(f[1], `"`) + "/"
				}
			}
			return ""
		}
		up := filepath.Dir(dir)
		if up == dir {
			return ""
		}
		dir = up
	}
}
