package health

import (
	"context"
	"errors"
	"net"
	"os"
	"time"
)

// udpProber sends one datagram on a connected socket. With expectReply
// (the default) any reply is up and no reply within the timeout is down.
// Without it, the check is up unless the kernel reports an ICMP port
// unreachable (read as "connection refused") within the timeout: for
// services that never answer (syslog), this proves at least that the port
// is open. Either way a refused port is down at once.
type udpProber struct {
	addr        string
	payload     []byte
	expectReply bool
}

// NewUDPProber checks addr (host:port) by sending payload.
func NewUDPProber(addr string, payload []byte, expectReply bool) Prober {
	return &udpProber{addr: addr, payload: payload, expectReply: expectReply}
}

func (p *udpProber) Probe(ctx context.Context) (Result, error) {
	var d net.Dialer
	conn, err := d.DialContext(ctx, "udp", p.addr)
	if err != nil {
		return Result{}, err
	}
	defer conn.Close()
	dl, ok := ctx.Deadline()
	if !ok {
		dl = time.Now().Add(time.Second)
	}
	_ = conn.SetDeadline(dl)
	stop := context.AfterFunc(ctx, func() { _ = conn.SetDeadline(time.Now()) })
	defer stop()
	if _, err := conn.Write(p.payload); err != nil {
		return Result{}, err
	}
	buf := make([]byte, 2048)
	_, err = conn.Read(buf)
	switch {
	case err == nil:
		return Result{}, nil
	case errors.Is(err, os.ErrDeadlineExceeded) && !p.expectReply:
		return Result{}, nil // silence is what this service answers
	case errors.Is(err, os.ErrDeadlineExceeded):
		return Result{}, failf("no reply within the timeout")
	}
	return Result{}, err
}
