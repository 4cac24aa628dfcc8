package health

import (
	"context"
	"net"
)

// tcpProber connects and closes: the port accepts.
type tcpProber struct {
	addr string
	d    net.Dialer
}

// NewTCPProber checks that addr (host:port) accepts a TCP connection.
func NewTCPProber(addr string) Prober { return &tcpProber{addr: addr} }

func (p *tcpProber) Probe(ctx context.Context) (Result, error) {
	conn, err := p.d.DialContext(ctx, "tcp", p.addr)
	if err != nil {
		return Result{}, err
	}
	return Result{}, conn.Close()
}
