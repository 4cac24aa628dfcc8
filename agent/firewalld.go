package agent

import (
	"context"
	"net/netip"
	"time"

	"github.com/dsr-agent/dsr-agent/firewalld"
	"github.com/dsr-agent/dsr-agent/internal/inet"
)

// firewalldTimeout bounds the whole conversation with firewalld: validate
// and status must answer even when its D-Bus service hangs.
const firewalldTimeout = 5 * time.Second

// FirewalldFindings asks a running firewalld whether the zones of the
// LB-facing interfaces let in what d serves: each VIP port (loopback and
// arptables modes; in firewalld mode, whether it accepts redirected
// traffic), and the health and agent-check ports. No firewalld, no findings.
// These are for validate and status; the daemon never asks (its passes must
// not wait on D-Bus).
func FirewalldFindings(ctx context.Context, d *Desired, f *Facts) ([]firewalld.Finding, error) {
	ctx, cancel := context.WithTimeout(ctx, firewalldTimeout)
	defer cancel()
	return firewalld.Check(ctx, firewalldRequest(d, f))
}

// firewalldRequest lists the ports the director and clients must reach.
// Pure.
func firewalldRequest(d *Desired, f *Facts) firewalld.Request {
	req := firewalld.Request{VIPsRedirected: d.Redirect}
	if d.HandsOff {
		return req
	}
	if !d.Redirect {
		for _, v := range d.Served {
			for _, p := range v.Ports {
				for _, iface := range d.Interfaces {
					req.Wants = append(req.Wants, firewalld.Want{Kind: firewalld.VIPPort, Iface: iface,
						Addr: v.String(), Port: p.Port, Proto: p.Protocol})
				}
			}
		}
	}
	if h := d.Health; h != nil {
		addListener := func(kind firewalld.Kind, listen string) {
			ap, err := netip.ParseAddrPort(listen)
			if err != nil {
				return
			}
			req.Wants = append(req.Wants, firewalld.Want{Kind: kind, Iface: linkOf(f, ap.Addr()),
				Addr: ap.Addr().String(), Port: ap.Port(), Proto: inet.TCP})
		}
		addListener(firewalld.Health, h.Listen)
		if h.AgentCheck != nil {
			addListener(firewalld.AgentCheck, h.AgentCheck.Listen)
		}
	}
	return req
}

// linkOf is the interface that holds addr ("" if none: firewalld then
// judges by its default zone).
func linkOf(f *Facts, addr netip.Addr) string {
	for _, a := range f.Addrs {
		if a.Prefix.Addr() == addr.Unmap() {
			return a.Link
		}
	}
	return ""
}
