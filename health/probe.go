package health

import (
	"context"
	"fmt"

	"github.com/dsr-agent/dsr-agent/agent"
)

// A Prober runs one kind of service check (one file per kind: probe_tcp.go,
// probe_http.go, probe_tls.go, probe_dns.go, probe_exec.go, probe_udp.go;
// the model is seesaw's healthcheck/). Probe runs once within ctx's deadline
// (the check's timeout) and returns nil when the service is up; the Checker
// applies interval, rise and fall and knows no kinds.
type Prober interface {
	Probe(ctx context.Context) (Result, error)
}

// Result is what a probe learned besides up or down.
type Result struct {
	// Warning: up, but needs attention (a certificate about to expire).
	Warning string
	// Weight: an exec check's dynamic weight (keepalived MISC_CHECK exit
	// code 2-255 -> code-2); nil when the probe gives none.
	Weight *int
}

// NewProber builds the prober for one validated check.
func NewProber(s agent.CheckConfig) (Prober, error) {
	switch s.Kind {
	case agent.CheckTCP:
		return NewTCPProber(s.Target), nil
	case agent.CheckHTTP:
		return NewHTTPProber(s.Target, s.ExpectStatus), nil
	case agent.CheckTLS:
		return NewTLSProber(s.Target, s.ServerName, s.Verify, s.CertExpiryWarning), nil
	case agent.CheckDNS:
		return NewDNSProber(s.Target, s.Query, s.Type, s.Expect)
	case agent.CheckExec:
		return NewExecProber(s.Command)
	case agent.CheckUDP:
		return NewUDPProber(s.Target, []byte(s.Payload), s.ExpectReply), nil
	}
	return nil, fmt.Errorf("unknown check kind %q", s.Kind)
}

// probeError is a probe's own verdict, already worded as the reason shown in
// /healthz ("http status 500, want 200", "rcode NXDOMAIN").
type probeError struct{ msg string }

func (e *probeError) Error() string { return e.msg }

func failf(format string, args ...any) error { return &probeError{fmt.Sprintf(format, args...)} }
