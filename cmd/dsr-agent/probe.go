package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"net/netip"
	"os"
	"strings"
	"time"

	"github.com/urfave/cli/v2"

	"github.com/dsr-agent/dsr-agent/probe"
)

// probeCommand runs on the director: it sends a client's packet through the
// real data path to one real server and names what breaks (docs/probe.md).
func probeCommand() *cli.Command {
	return &cli.Command{
		Name:      "probe",
		Usage:     "on the director (needs CAP_NET_RAW only; changes nothing there): send a client's SYN (or UDP query) to VIP:PORT through one real server and name the fault (exit 0 up, 10-15 a fault, see EXIT STATUS)",
		ArgsUsage: "VIP:PORT --real ADDR | --all [FILE|-]",
		Description: "Verdicts and exit codes: up 0, refused 10, unreachable 11, timeout 12, wrong-source 13,\n" +
			"mss-too-large 14, arp-flux 15; 2 bad usage or missing CAP_NET_RAW (the only capability needed:\n" +
			"it runs as any user with CAP_NET_RAW, e.g. setcap cap_net_raw+ep or AmbientCapabilities=CAP_NET_RAW).\n" +
			"--misc-dynamic (keepalived MISC_CHECK with misc_dynamic): 0 up, 1 down, and with\n" +
			"--weight-from HOST:PORT 2+N, N the real server's agent-check weight.\n" +
			"--all reads lines \"VIP:PORT REAL [ENCAP] [PROTO]\" or `ipvsadm -Ln` output and probes them concurrently.\n" +
			"Changes nothing on the director (no address, route, neighbour entry, IPVS service or firewall rule).",
		Flags: []cli.Flag{
			&cli.StringFlag{Name: "real", Usage: "the real server's own `ADDR`"},
			&cli.StringFlag{Name: "encap", Value: "l2", Usage: "l2 (LVS-DR), ipip or gue:PORT (LVS-TUN)"},
			&cli.StringFlag{Name: "proto", Value: "tcp", Usage: "tcp or udp"},
			&cli.StringFlag{Name: "dev", Usage: "`IFACE` towards the real server (default: the route's); where the ARP/NDP check asks who has the VIP"},
			&cli.DurationFlag{Name: "timeout", Value: time.Second, Usage: "wait `D` for the answer"},
			&cli.StringFlag{Name: "payload", Usage: "UDP: send `TEXT` instead of a DNS query"},
			&cli.StringFlag{Name: "query", Usage: "UDP: DNS query `NAME` (type A; default: . NS)"},
			&cli.BoolFlag{Name: "no-arp-check", Usage: "do not ask who has the VIP (arp-flux)"},
			&cli.IntFlag{Name: "mtu", Usage: "path `MTU` towards the real server (default: the route's, else the interface's)"},
			&cli.BoolFlag{Name: "json", Usage: "print the result as JSON"},
			&cli.BoolFlag{Name: "all", Usage: "probe every line of FILE (or stdin): \"VIP:PORT REAL [ENCAP] [PROTO]\" or ipvsadm -Ln output"},
			&cli.IntFlag{Name: "concurrency", Value: 64, Usage: "--all: at most `N` probes at once"},
			&cli.BoolFlag{Name: "misc-dynamic", Usage: "exit codes for keepalived's MISC_CHECK with misc_dynamic: 0 up, 1 down, 2+N weight"},
			&cli.StringFlag{Name: "weight-from", Usage: "`HOST:PORT` of the real server's agent-check: up → exit 2+weight (implies --misc-dynamic)"},
		},
		// The documented form puts flags after VIP:PORT, which Go's flag
		// parsing (urfave/cli v2) stops at: parse them ourselves.
		SkipFlagParsing: true,
		Action:          probeCmd,
	}
}

// interspersed parses the command's flags wherever they stand among the
// arguments (VIP:PORT --real ADDR as well as --real ADDR VIP:PORT) and
// returns a context reading them.
func interspersed(c *cli.Context) (*cli.Context, error) {
	set := flag.NewFlagSet(c.Command.Name, flag.ContinueOnError)
	set.SetOutput(io.Discard)
	isBool := map[string]bool{}
	for _, f := range c.Command.Flags {
		if err := f.Apply(set); err != nil {
			return nil, err
		}
		if _, ok := f.(*cli.BoolFlag); ok {
			for _, n := range f.Names() {
				isBool[n] = true
			}
		}
	}
	var flags, pos []string
	raw := c.Args().Slice()
	for i := 0; i < len(raw); i++ {
		a := raw[i]
		switch {
		case a == "--":
			pos = append(pos, raw[i+1:]...)
			i = len(raw)
		case len(a) > 1 && a[0] == '-':
			flags = append(flags, a)
			name := strings.TrimLeft(a, "-")
			if !strings.Contains(name, "=") && !isBool[name] && i+1 < len(raw) {
				i++
				flags = append(flags, raw[i])
			}
		default:
			pos = append(pos, a)
		}
	}
	if err := set.Parse(append(flags, append([]string{"--"}, pos...)...)); err != nil {
		return nil, fmt.Errorf("%w: probe: %v", errUsage, err)
	}
	return cli.NewContext(c.App, set, c), nil
}

func probeCmd(c0 *cli.Context) error {
	for _, a := range c0.Args().Slice() {
		if a == "-h" || a == "--help" || a == "-help" {
			cli.HelpPrinter(c0.App.Writer, cli.CommandHelpTemplate, c0.Command)
			return nil
		}
	}
	c, err := interspersed(c0)
	if err != nil {
		return err
	}
	c.Command = c0.Command
	misc := c.Bool("misc-dynamic") || c.String("weight-from") != ""
	code, err := runProbe(c, misc)
	if err != nil {
		if misc {
			fmt.Fprintln(os.Stderr, "dsr-agent: probe:", err)
			return cli.Exit("", 1)
		}
		if errors.Is(err, probe.ErrUsage) {
			return fmt.Errorf("%w: %w", errUsage, err)
		}
		return cli.Exit("dsr-agent: probe: "+err.Error(), probe.ExitUsage)
	}
	if code != 0 {
		return cli.Exit("", code)
	}
	return nil
}

func baseConfig(c *cli.Context) (probe.Config, error) {
	enc, err := probe.ParseEncap(c.String("encap"))
	if err != nil {
		return probe.Config{}, err
	}
	cfg := probe.Config{Encap: enc, Proto: probe.Proto(c.String("proto")), Dev: c.String("dev"),
		Timeout: c.Duration("timeout"), DNSName: c.String("query"), NoARPCheck: c.Bool("no-arp-check"), MTU: c.Int("mtu")}
	if c.IsSet("payload") {
		cfg.Payload = []byte(c.String("payload"))
	}
	if cfg.Timeout <= 0 {
		return cfg, fmt.Errorf("%w: --timeout %s: expected a positive duration", probe.ErrUsage, cfg.Timeout)
	}
	return cfg, nil
}

func runProbe(c *cli.Context, misc bool) (int, error) {
	base, err := baseConfig(c)
	if err != nil {
		return 0, err
	}
	out := c.App.Writer
	if c.Bool("all") {
		return runAll(c, base, out)
	}
	if c.NArg() != 1 {
		return 0, fmt.Errorf("%w: expected one VIP:PORT argument, got %d", probe.ErrUsage, c.NArg())
	}
	target, err := netip.ParseAddrPort(c.Args().First())
	if err != nil {
		return 0, fmt.Errorf("%w: VIP:PORT %q: expected ADDR:PORT ([ADDR]:PORT for IPv6): %v", probe.ErrUsage, c.Args().First(), err)
	}
	real, err := netip.ParseAddr(c.String("real"))
	if err != nil {
		return 0, fmt.Errorf("%w: --real %q: expected the real server's IP address", probe.ErrUsage, c.String("real"))
	}
	base.Target, base.Real = target, real.Unmap()
	res, err := probe.Probe(c.Context, base)
	if err != nil {
		return 0, err
	}
	weight := -1
	if wf := c.String("weight-from"); wf != "" && res.Verdict == probe.Up {
		ctx, cancel := context.WithTimeout(c.Context, base.Timeout)
		w, werr := probe.AgentWeight(ctx, wf)
		cancel()
		switch {
		case errors.Is(werr, probe.ErrAgentDown):
			res.Explanation += "; agent-check says " + werr.Error()
			printResult(out, res, c.Bool("json"))
			return 1, nil
		case werr != nil:
			return 0, werr
		}
		weight = w
		res.Weight = &w
	}
	printResult(out, res, c.Bool("json"))
	if misc {
		return probe.MiscExitCode(res.Verdict, weight), nil
	}
	return res.Verdict.ExitCode(), nil
}

func printResult(w io.Writer, r *probe.Result, asJSON bool) {
	if asJSON {
		b, _ := json.Marshal(r)
		fmt.Fprintln(w, string(b))
		return
	}
	fmt.Fprintln(w, r.Explanation)
}

// runAll probes every entry concurrently; it prints one line per probe in
// input order and exits with the worst code (0 only when all are up).
func runAll(c *cli.Context, base probe.Config, out io.Writer) (int, error) {
	in := io.Reader(os.Stdin)
	if p := c.Args().First(); p != "" && p != "-" {
		f, err := os.Open(p)
		if err != nil {
			return 0, fmt.Errorf("%w: --all %s: %v", probe.ErrUsage, p, err)
		}
		defer f.Close()
		in = f
	}
	cfgs, err := probe.ParseList(in, base)
	if err != nil {
		return 0, err
	}
	results := probe.All(c.Context, cfgs, c.Int("concurrency"))
	code := 0
	for _, r := range results {
		printResult(out, r, c.Bool("json"))
		if ec := r.Verdict.ExitCode(); ec > code {
			code = ec
		}
	}
	return code, nil
}

// probeManExitStatus is the probe's part of the man page's EXIT STATUS.
func probeManExitStatus() string {
	var b strings.Builder
	for _, e := range []struct {
		code int
		what string
	}{
		{probe.ExitRefused, "refused: RST from the VIP, nothing listens on the VIP on that port"},
		{probe.ExitUnreachable, "unreachable: ICMP unreachable, a firewall rejects"},
		{probe.ExitTimeout, "timeout: no answer (VIP missing, rp_filter, a silent drop)"},
		{probe.ExitWrongSource, "wrong-source: the answer did not come from the VIP"},
		{probe.ExitMSSTooLarge, "mss-too-large: the advertised MSS exceeds the tunnel path"},
		{probe.ExitARPFlux, "arp-flux: the real server answers ARP/NDP for the VIP"},
	} {
		fmt.Fprintf(&b, ".TP\n.B %d\n\\fBprobe\\fR %s\n", e.code, e.what)
	}
	b.WriteString(".PP\n\\fBprobe\\fR needs only CAP_NET_RAW (a packet socket) and changes nothing on the director; " +
		"with \\fB--misc-dynamic\\fR or \\fB--weight-from\\fR it exits 0 up, 1 down, 2+N up with weight N (keepalived MISC_CHECK misc_dynamic)\n")
	return b.String()
}
