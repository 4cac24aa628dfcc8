package health

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"net"
	"time"
)

// tlsProber completes a TLS handshake with SNI and reads the certificate.
//
// Verification is off by default, as in keepalived's SSL_GET (Consul's
// tls_skip_verify is the opt-out there): the check asks whether this host
// serves TLS, and a certificate that is not trusted or has expired is the
// same on every real server, so failing on it would take the whole pool out
// at once. The certificate's end date is always read: within warn of it (or
// past it) the check stays up and says so (/status `warning`). With verify,
// the chain must verify against the system roots and match server_name, and
// an expired, untrusted or wrong-name certificate is down.
type tlsProber struct {
	addr, serverName string
	verify           bool
	warn             time.Duration
	d                net.Dialer
	now              func() time.Time
}

// NewTLSProber checks a TLS handshake with addr (host:port) presenting
// serverName as SNI; warn (0: never) is the certificate expiry warning.
func NewTLSProber(addr, serverName string, verify bool, warn time.Duration) Prober {
	return &tlsProber{addr: addr, serverName: serverName, verify: verify, warn: warn, now: time.Now}
}

func (p *tlsProber) Probe(ctx context.Context) (Result, error) {
	raw, err := p.d.DialContext(ctx, "tcp", p.addr)
	if err != nil {
		return Result{}, err
	}
	defer raw.Close()
	conn := tls.Client(raw, &tls.Config{
		ServerName:         p.serverName,
		InsecureSkipVerify: !p.verify, //nolint:gosec // documented default, see the type's comment
		MinVersion:         tls.VersionTLS10,
	})
	if err := conn.HandshakeContext(ctx); err != nil {
		var ve *tls.CertificateVerificationError
		if errors.As(err, &ve) {
			return Result{}, failf("certificate for %s not accepted: %v", p.serverName, ve.Err)
		}
		if ctx.Err() != nil {
			return Result{}, ctx.Err()
		}
		var ne net.Error
		if errors.As(err, &ne) && ne.Timeout() {
			return Result{}, err
		}
		return Result{}, failf("tls handshake: %v", err)
	}
	defer conn.Close()
	certs := conn.ConnectionState().PeerCertificates
	if len(certs) == 0 {
		return Result{}, failf("tls handshake: no certificate")
	}
	return Result{Warning: expiryWarning(certs[0], p.now(), p.warn)}, nil
}

// expiryWarning says when leaf expires if that is within warn of now (or
// past); empty otherwise.
func expiryWarning(leaf *x509.Certificate, now time.Time, warn time.Duration) string {
	left := leaf.NotAfter.Sub(now)
	name := leaf.Subject.CommonName
	if name == "" && len(leaf.DNSNames) > 0 {
		name = leaf.DNSNames[0]
	}
	end := leaf.NotAfter.UTC().Format(time.RFC3339)
	switch {
	case left <= 0:
		return fmt.Sprintf("certificate %q expired %s (%s ago)", name, end, roughDuration(-left))
	case warn > 0 && left < warn:
		return fmt.Sprintf("certificate %q expires %s (in %s)", name, end, roughDuration(left))
	}
	return ""
}

// roughDuration is "5d", "36h" or "20m": what a person planning a renewal reads.
func roughDuration(d time.Duration) string {
	switch {
	case d >= 48*time.Hour:
		return fmt.Sprintf("%dd", int(d/(24*time.Hour)))
	case d >= 2*time.Hour:
		return fmt.Sprintf("%dh", int(d/time.Hour))
	}
	return fmt.Sprintf("%dm", int(d/time.Minute))
}
