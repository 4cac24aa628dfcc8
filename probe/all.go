package probe

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"net/netip"
	"strings"
	"sync"
)

// ParseList reads the --all input: either lines "VIP:PORT REAL [ENCAP]
// [PROTO]" (# starts a comment), or the output of `ipvsadm -Ln`, whose
// virtual services ("TCP  VIP:PORT rr") are followed by their real servers
// ("  -> REAL:PORT  Route|Tunnel ..."). Route is l2, Tunnel the base's
// encapsulation when it is ipip or gue (ipvsadm -Ln does not print the GUE port),
// else ipip; masquerading and local servers are skipped. Every other field
// comes from base.
func ParseList(r io.Reader, base Config) ([]Config, error) {
	var out []Config
	var vs netip.AddrPort
	var vsProto Proto
	sc := bufio.NewScanner(r)
	n := 0
	for sc.Scan() {
		n++
		line := sc.Text()
		if i := strings.IndexByte(line, '#'); i >= 0 {
			line = line[:i]
		}
		fs := strings.Fields(line)
		if len(fs) == 0 {
			continue
		}
		switch {
		case fs[0] == "IP" || fs[0] == "Prot" || (fs[0] == "->" && len(fs) > 1 && fs[1] == "RemoteAddress:Port"):
			continue
		case (fs[0] == "TCP" || fs[0] == "UDP") && len(fs) >= 2:
			ap, err := netip.ParseAddrPort(fs[1])
			if err != nil {
				return nil, usagef("--all line %d: virtual service %q: expected ADDR:PORT (ipvsadm -Ln, numeric): %v", n, fs[1], err)
			}
			vs, vsProto = ap, Proto(strings.ToLower(fs[0]))
			continue
		case fs[0] == "FWM":
			vs = netip.AddrPort{}
			continue
		case fs[0] == "->":
			if !vs.IsValid() || len(fs) < 3 {
				continue
			}
			rp, err := netip.ParseAddrPort(fs[1])
			if err != nil {
				return nil, usagef("--all line %d: real server %q: expected ADDR:PORT: %v", n, fs[1], err)
			}
			c := base
			c.Target, c.Real, c.Proto = vs, rp.Addr().Unmap(), vsProto
			switch fs[2] {
			case "Route":
				c.Encap = Encap{Kind: L2}
			case "Tunnel":
				if base.Encap.Kind == L2 || base.Encap.Kind == "" {
					c.Encap = Encap{Kind: IPIP}
				}
			default:
				continue
			}
			out = append(out, c)
			continue
		}
		c := base
		ap, err := netip.ParseAddrPort(fs[0])
		if err != nil {
			return nil, usagef("--all line %d: %q: expected VIP:PORT REAL [ENCAP] [PROTO] or ipvsadm -Ln output", n, strings.TrimSpace(line))
		}
		if len(fs) < 2 || len(fs) > 4 {
			return nil, usagef("--all line %d: %q: expected VIP:PORT REAL [ENCAP] [PROTO]", n, strings.TrimSpace(line))
		}
		rs, err := netip.ParseAddr(fs[1])
		if err != nil {
			return nil, usagef("--all line %d: real server %q: expected an IP address", n, fs[1])
		}
		c.Target, c.Real = ap, rs.Unmap()
		if len(fs) >= 3 {
			if c.Encap, err = ParseEncap(fs[2]); err != nil {
				return nil, fmt.Errorf("--all line %d: %w", n, err)
			}
		}
		if len(fs) == 4 {
			c.Proto = Proto(fs[3])
		}
		if err := c.check(); err != nil {
			return nil, fmt.Errorf("--all line %d: %w", n, err)
		}
		out = append(out, c)
	}
	if err := sc.Err(); err != nil {
		return nil, fmt.Errorf("--all: read: %w", err)
	}
	if len(out) == 0 {
		return nil, usagef("--all: no real server to probe in the input")
	}
	return out, nil
}

// All runs the probes, at most limit at once, and returns their results in
// input order; a probe that could not run is a result with verdict error.
func All(ctx context.Context, cfgs []Config, limit int) []*Result {
	limit = max(limit, 1)
	res := make([]*Result, len(cfgs))
	sem := make(chan struct{}, limit)
	var wg sync.WaitGroup
	for i, c := range cfgs {
		wg.Add(1)
		sem <- struct{}{}
		go func() {
			defer wg.Done()
			defer func() { <-sem }()
			r, err := Probe(ctx, c)
			if err != nil {
				r = &Result{Verdict: VerdictError, Target: c.Target.String(), Real: c.Real.String(),
					Encap: c.Encap.String(), Proto: string(c.Proto), Error: err.Error()}
				r.Explanation = r.Explain()
			}
			res[i] = r
		}()
	}
	wg.Wait()
	return res
}
