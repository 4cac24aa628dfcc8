package main

import (
	"bufio"
	"encoding/json"
	"fmt"
	"io"
	"strings"
)

// event is one line of `go test -json` (cmd/test2json), build events included.
type event struct {
	Action     string
	Package    string
	Test       string
	Output     string
	ImportPath string
}

// Skip is one skipped test and the lines it logged (its reason).
type Skip struct {
	Package string `json:"package"`
	Test    string `json:"test"`
	Reason  string `json:"reason"`
}

// Result is what Filter learnt from the stream.
type Result struct {
	Skips  []Skip
	Failed bool
}

// Filter copies the output of the stream on r to w as go test prints it
// (every line with verbose; otherwise the package lines and the output of
// failed tests) and collects the skipped tests.
func Filter(r io.Reader, w io.Writer, verbose bool) (Result, error) {
	var res Result
	type key struct{ pkg, test string }
	logs := map[key][]string{}
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 0, 64*1024), 16*1024*1024)
	for line := 1; sc.Scan(); line++ {
		raw := sc.Bytes()
		if len(raw) == 0 {
			continue
		}
		var e event
		if raw[0] != '{' || json.Unmarshal(raw, &e) != nil {
			// go test writes some errors (bad flags, a vet failure) as plain
			// text even with -json: pass them through.
			fmt.Fprintf(w, "%s\n", raw)
			continue
		}
		switch e.Action {
		case "build-output":
			fmt.Fprint(w, e.Output)
		case "build-fail":
			res.Failed = true
		case "output":
			if e.Test == "" {
				if verbose || !quietPackageLine(e.Output) {
					fmt.Fprint(w, e.Output)
				}
				continue
			}
			if verbose {
				fmt.Fprint(w, e.Output)
			}
			k := key{e.Package, e.Test}
			logs[k] = append(logs[k], e.Output)
		case "fail":
			res.Failed = true
			k := key{e.Package, e.Test}
			if e.Test != "" && !verbose {
				for _, l := range logs[k] {
					if !strings.HasPrefix(l, "=== ") {
						fmt.Fprint(w, l)
					}
				}
			}
			delete(logs, k)
		case "skip":
			k := key{e.Package, e.Test}
			// A package-level skip is "[no test files]": nothing was skipped.
			if e.Test != "" {
				res.Skips = append(res.Skips, Skip{Package: e.Package, Test: e.Test, Reason: reason(logs[k])})
			}
			delete(logs, k)
		case "pass":
			delete(logs, key{e.Package, e.Test})
		}
	}
	if err := sc.Err(); err != nil {
		return res, fmt.Errorf("read go test -json: %w", err)
	}
	return res, nil
}

// quietPackageLine reports the package lines plain go test does not print
// (it prints "ok", "FAIL" and "?" lines, not the test binary's own PASS or the
// framing of tests).
func quietPackageLine(s string) bool {
	t := strings.TrimSpace(s)
	return t == "PASS" || strings.HasPrefix(t, "=== ")
}

// reason is what a skipped test logged: its t.Skip message and any t.Log
// before it, without the framing lines, joined on one line.
func reason(lines []string) string {
	var parts []string
	for _, l := range lines {
		t := strings.TrimSpace(l)
		if t == "" || strings.HasPrefix(t, "=== ") || strings.HasPrefix(t, "--- SKIP") {
			continue
		}
		parts = append(parts, t)
	}
	if len(parts) == 0 {
		return "(no reason given)"
	}
	return strings.Join(parts, " / ")
}
