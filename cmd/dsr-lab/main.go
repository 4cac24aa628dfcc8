// Command dsr-lab runs the dsr-agent network-namespace lab: `dsr-lab demo`
// shows direct server return working end to end (what `make demo` runs);
// `dsr-lab sweep` deletes namespaces left by lab runs that were killed.
package main

import (
	"context"
	"flag"
	"fmt"
	"log/slog"
	"net/netip"
	"os"
	"os/signal"
	"path/filepath"
	"strings"
	"syscall"

	"github.com/dsr-agent/dsr-agent/internal/lab"
)

func main() {
	log := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelWarn}))
	if len(os.Args) < 2 {
		usage()
		os.Exit(2)
	}
	switch os.Args[1] {
	case "demo":
		os.Exit(demoMain(os.Args[2:], log))
	case "sweep":
		if os.Geteuid() != 0 {
			fmt.Fprintln(os.Stderr, "dsr-lab sweep: needs root")
			os.Exit(1)
		}
		lab.SweepOrphans(slog.New(slog.NewTextHandler(os.Stderr, nil)))
	case "-h", "--help", "help":
		usage()
	default:
		usage()
		os.Exit(2)
	}
}

func usage() {
	fmt.Fprint(os.Stderr, `usage:
  dsr-lab demo [--agent bin/dsr-agent] [--mode loopback|arptables|firewalld] [--family 4|6|46] [--servers 2] [--requests 20] [--dns-queries 10]
  dsr-lab sweep     delete lab namespaces whose creating process is gone
`)
}

type demoOpts struct {
	agent    string
	mode     lab.Mode
	vips     []netip.Addr
	servers  int
	requests int
	queries  int // DNS queries per family (0: no DNS part)
}

func demoMain(args []string, log *slog.Logger) int {
	fs := flag.NewFlagSet("demo", flag.ContinueOnError)
	agentBin := fs.String("agent", "bin/dsr-agent", "dsr-agent binary to configure the real servers with")
	mode := fs.String("mode", string(lab.ModeLoopback), "dsr-agent mode: loopback, arptables or firewalld")
	fam := fs.String("family", "4", "address family of the VIP: 4, 6 or 46 (both)")
	servers := fs.Int("servers", 2, "number of real servers")
	requests := fs.Int("requests", 20, "HTTP requests per address family")
	queries := fs.Int("dns-queries", 10, "DNS queries per address family (0: skip DNS; needs unbound)")
	if err := fs.Parse(args); err != nil {
		return 2
	}
	o := demoOpts{mode: lab.Mode(*mode), servers: *servers, requests: *requests, queries: *queries}
	switch o.mode {
	case lab.ModeLoopback, lab.ModeARPTables, lab.ModeFirewalld:
	default:
		fmt.Fprintf(os.Stderr, "dsr-lab demo: --mode %q: want loopback, arptables or firewalld\n", *mode)
		return 2
	}
	if strings.Contains(*fam, "4") {
		o.vips = append(o.vips, lab.VIP4)
	}
	if strings.Contains(*fam, "6") {
		o.vips = append(o.vips, lab.VIP6)
	}
	if len(o.vips) == 0 || strings.Trim(*fam, "46") != "" {
		fmt.Fprintf(os.Stderr, "dsr-lab demo: --family %q: want 4, 6 or 46\n", *fam)
		return 2
	}
	abs, err := filepath.Abs(*agentBin)
	if err != nil {
		fmt.Fprintf(os.Stderr, "dsr-lab demo: --agent: %v\n", err)
		return 2
	}
	o.agent = abs
	if os.Geteuid() != 0 {
		fmt.Fprintln(os.Stderr, "dsr-lab demo: needs root to create network namespaces (try: sudo make demo)")
		return 1
	}
	if _, err := os.Stat(o.agent); err != nil {
		fmt.Fprintf(os.Stderr, "dsr-lab demo: dsr-agent binary: %v (run make build)\n", err)
		return 1
	}

	// First Ctrl-C: stop and tear down cleanly. A second one kills at once
	// (default handling is restored as soon as the first arrives).
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM, syscall.SIGHUP)
	defer stop()
	go func() {
		<-ctx.Done()
		stop()
	}()

	before, berr := lab.SnapshotHost()
	err = demo(ctx, os.Stdout, o, log)
	if err != nil {
		if ctx.Err() != nil {
			fmt.Println("\nInterrupted: everything was torn down.")
		} else {
			fmt.Fprintf(os.Stderr, "\ndemo FAILED: %v\n", err)
		}
	}
	if berr == nil {
		after, aerr := lab.SnapshotHost()
		if aerr == nil {
			if diff := before.Diff(after); diff != "" {
				fmt.Printf("\nWARNING: the host changed during the demo (maybe not by us):\n%s", diff)
			} else {
				fmt.Printf("\nHost check: interfaces, addresses, routes, %d net sysctls and the nftables ruleset of the host are exactly as before.\n", before.Sysctls())
			}
		}
	}
	if err != nil {
		return 1
	}
	return 0
}

func famName(v netip.Addr) string {
	if v.Is6() {
		return "IPv6"
	}
	return "IPv4"
}
