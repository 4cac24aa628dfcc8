// Command skipreport reads `go test -json` on stdin, prints what plain
// `go test` (or `go test -v` with -v) would have printed, and lists every
// skipped test with its reason at the end, so a test that skipped (no root, no
// kernel module, a missing binary) shows instead of reading as "ok".
//
// With -allow FILE and -strict (CI sets DSR_AGENT_STRICT_SKIPS=1, which the
// Makefile turns into -strict) a skip that no entry of FILE allows fails the
// run. With -short (test-unit: every test that needs root or starts servers
// skips by design under -short) skips are only counted, never failed.
//
// -record FILE writes the skips as JSON; `skipreport -summary FILE...` prints
// the skips of several runs again (make test does at its end) and applies the
// same rules.
//
// The exit status is 1 when go test's stream reported a failure (so a pipe
// without pipefail still fails), 2 for bad usage or input, 3 when -strict
// found a skip not on the allow-list.
package main

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
)

const (
	exitFail   = 1
	exitUsage  = 2
	exitSkips  = 3
	strictEnv  = "DSR_AGENT_STRICT_SKIPS"
	exitNormal = 0
)

func main() {
	os.Exit(run(os.Args[1:], os.Stdin, os.Stdout, os.Stderr))
}

func run(args []string, stdin io.Reader, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("skipreport", flag.ContinueOnError)
	fs.SetOutput(stderr)
	name := fs.String("name", "go test", "the run's name in the summary (the make target)")
	verbose := fs.Bool("v", false, "print every output line (as go test -v)")
	short := fs.Bool("short", false, "skips are expected (go test -short): count them, never fail on them")
	allowFile := fs.String("allow", "", "allow-list of skips (see mk/skips.allowed)")
	strict := fs.Bool("strict", false, "exit 3 when a skip is not on the allow-list (also when "+strictEnv+"=1)")
	record := fs.String("record", "", "write the skips of this run as JSON to this file")
	summary := fs.Bool("summary", false, "read the JSON records named as arguments instead of go test -json on stdin")
	if err := fs.Parse(args); err != nil {
		return exitUsage
	}
	if os.Getenv(strictEnv) == "1" {
		*strict = true
	}
	var allow []Allowed
	if *allowFile != "" {
		var err error
		if allow, err = ParseAllowFile(*allowFile); err != nil {
			fmt.Fprintf(stderr, "skipreport: %v\n", err)
			return exitUsage
		}
	}

	var runs []Run
	failed := false
	if *summary {
		if fs.NArg() == 0 {
			fmt.Fprintln(stderr, "skipreport: -summary needs the record files as arguments")
			return exitUsage
		}
		for _, f := range fs.Args() {
			r, err := ReadRecord(f)
			if errors.Is(err, os.ErrNotExist) {
				continue // a target that runs no go test writes none
			}
			if err != nil {
				fmt.Fprintf(stderr, "skipreport: %v\n", err)
				return exitUsage
			}
			runs = append(runs, r)
		}
	} else {
		if fs.NArg() != 0 {
			fmt.Fprintf(stderr, "skipreport: unexpected arguments %q (go test -json is read from stdin)\n", fs.Args())
			return exitUsage
		}
		res, err := Filter(stdin, stdout, *verbose)
		if err != nil {
			fmt.Fprintf(stderr, "skipreport: %v\n", err)
			return exitUsage
		}
		failed = res.Failed
		r := Run{Name: *name, Short: *short, Skips: res.Skips}
		if *record != "" {
			if err := WriteRecord(*record, r); err != nil {
				fmt.Fprintf(stderr, "skipreport: %v\n", err)
				return exitUsage
			}
		}
		runs = []Run{r}
	}

	bad := Report(stdout, runs, allow, *allowFile, *strict)
	switch {
	case failed:
		return exitFail
	case *strict && bad > 0:
		return exitSkips
	}
	return exitNormal
}
