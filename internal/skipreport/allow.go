package main

import (
	"bufio"
	"fmt"
	"os"
	"regexp"
	"strings"
)

// Allowed is one entry of the allow-list: skips of tests in Package whose
// name matches Test and whose reason matches Reason are expected, because Why.
//
// The file has one entry a line, "PACKAGE TEST-REGEXP REASON-REGEXP":
// PACKAGE is an import path or its tail ("tunnel" matches
// github.com/dsr-agent/dsr-agent/tunnel), TEST-REGEXP must match the whole
// test name, REASON-REGEXP (the rest of the line) must match somewhere in
// what the test logged when it skipped. The comment lines right above an entry
// say why it is allowed and are required: an undocumented entry is an error.
type Allowed struct {
	Package string
	Test    *regexp.Regexp
	Reason  *regexp.Regexp
	Why     string
	Line    int
}

// ParseAllowFile reads an allow-list file.
func ParseAllowFile(path string) ([]Allowed, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("allow-list: %w", err)
	}
	defer f.Close()
	var out []Allowed
	var why []string
	sc := bufio.NewScanner(f)
	for n := 1; sc.Scan(); n++ {
		line := strings.TrimSpace(sc.Text())
		switch {
		case line == "":
			why = nil
			continue
		case strings.HasPrefix(line, "#"):
			why = append(why, strings.TrimSpace(strings.TrimPrefix(line, "#")))
			continue
		}
		fields := strings.Fields(line)
		if len(fields) < 3 {
			return nil, fmt.Errorf("%s:%d: entry %q: want PACKAGE TEST-REGEXP REASON-REGEXP", path, n, line)
		}
		if len(why) == 0 {
			return nil, fmt.Errorf("%s:%d: entry %q has no comment above it saying why the skip is allowed", path, n, line)
		}
		test, err := regexp.Compile("^(?:" + fields[1] + ")$")
		if err != nil {
			return nil, fmt.Errorf("%s:%d: test regexp %q: %w", path, n, fields[1], err)
		}
		rest := strings.TrimSpace(line[len(fields[0]):])
		rest = strings.TrimSpace(rest[len(fields[1]):])
		reason, err := regexp.Compile(rest)
		if err != nil {
			return nil, fmt.Errorf("%s:%d: reason regexp %q: %w", path, n, rest, err)
		}
		out = append(out, Allowed{Package: fields[0], Test: test, Reason: reason, Why: strings.Join(why, " "), Line: n})
		why = nil
	}
	if err := sc.Err(); err != nil {
		return nil, fmt.Errorf("allow-list %s: %w", path, err)
	}
	return out, nil
}

// match returns the entry that allows s, or nil.
func match(allow []Allowed, s Skip) *Allowed {
	for i, a := range allow {
		if (s.Package == a.Package || strings.HasSuffix(s.Package, "/"+a.Package)) &&
			a.Test.MatchString(s.Test) && a.Reason.MatchString(s.Reason) {
			return &allow[i]
		}
	}
	return nil
}
