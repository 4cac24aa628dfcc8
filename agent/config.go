package agent

import (
	"errors"
	"net/netip"
	"time"

	"github.com/dsr-agent/dsr-agent/internal/inet"
)

// ErrInvalidConfig marks every config error; the CLI maps it to exit 2.
var ErrInvalidConfig = errors.New("invalid config")

// ErrHostMismatch additionally marks config errors that depend on the host
// (an interface missing, no default route): at boot the daemon waits for
// the host to catch up instead of giving up.
var ErrHostMismatch = errors.New("config does not match this host")

// Mode selects how the host is kept from answering ARP for its VIPs.
type Mode string

const (
	ModeLoopback  Mode = "loopback"
	ModeARPTables Mode = "arptables"
	ModeFirewalld Mode = "firewalld"
)

// Config is a validated configuration.
type Config struct {
	Mode Mode
	// Interfaces are the LB-facing NICs; empty until Host.Validate resolves
	// the default (the interface of the default route).
	Interfaces []string
	VIPs       []VIP
	// Prefixes are the `vips: - prefix:` entries: whole prefixes served
	// as VIPs (AnyIP), apart from VIPs so that code iterating single VIPs
	// never meets one without an address.
	Prefixes []PrefixVIP
	// prefixFields names each prefix's entry ("vips[3]") for host errors.
	prefixFields []string
	Health       *HealthConfig
	// ReturnVia: replies of an L7 LB in transparent mode go back through it
	// (nil: off).
	ReturnVia *ReturnViaConfig
	// Tunnel is mode tunnel's encapsulation (nil in the other modes).
	Tunnel *TunnelConfig
	// origin names where a field was written (see Origin); nil for a
	// config parsed from bytes.
	origin func(field string) string
}

// VIP is one virtual address and the ports served on it.
type VIP struct {
	Address netip.Addr
	// RealIP is the sender address ARP from this VIP is rewritten to in
	// arptables mode; invalid (zero) means the NIC's primary IPv4.
	RealIP netip.Addr
	Ports  []Port
}

// PrefixVIP is a whole prefix served as VIPs (AnyIP, docs/anyip.md): every
// address in it is a VIP with the same ports.
type PrefixVIP struct {
	Prefix netip.Prefix
	Ports  []Port
}

// Port is one service port; ToPort is the local port in firewalld mode.
type Port struct {
	Port     uint16
	Protocol Protocol
	ToPort   uint16
}

// Protocol is a port's transport: "tcp" or "udp".
type Protocol = inet.Protocol

const (
	TCP = inet.TCP
	UDP = inet.UDP
)

// HealthConfig configures the daemon's health endpoint.
type HealthConfig struct {
	// Listen is "ip:port"; Host.Validate fills the default (first IPv4 of the
	// first interface, port DefaultHealthPort).
	Listen         string
	AllowedSources []netip.Prefix
	Checks         []CheckConfig
	AgentCheck     *AgentCheckConfig
	// ListenerGrace is how long after the daemon starts a VIP port without
	// a listener stays out of /healthz (services may start after
	// dsr-agent at boot); 0 reports it at once. Status always reports it.
	ListenerGrace time.Duration
}

// CheckConfig is one local service check. Kind names the check and Target
// what it probes; the kind-specific fields are zero for other kinds.
type CheckConfig struct {
	Name   string
	Kind   CheckKind
	Target string // host:port (tcp, tls, dns, udp), URL (http), the command line (exec, display only)
	// http
	ExpectStatus int
	// tls
	ServerName        string        // SNI and, with Verify, the name the certificate must match
	Verify            bool          // verify the chain (system roots) and the name; off by default
	CertExpiryWarning time.Duration // warn (the check stays up) when the certificate expires within this
	// dns
	Query string // the name asked
	Type  string // the record type asked (A, AAAA, TXT, ...)
	// Expect: dns: one answer record of Type must equal it (an address, a
	// name, TXT text); empty: any answer.
	Expect string
	// exec
	Command []string // argv; run without a shell
	// udp
	Payload     string
	ExpectReply bool
	Interval    time.Duration
	Timeout     time.Duration
	Rise, Fall  int
}

// CheckKind names a kind of check; it is the YAML key that carries the target.
type CheckKind string

const (
	CheckTCP  CheckKind = "tcp"
	CheckHTTP CheckKind = "http"
	CheckTLS  CheckKind = "tls"
	CheckDNS  CheckKind = "dns"
	CheckExec CheckKind = "exec"
	CheckUDP  CheckKind = "udp"
)

// AgentCheckConfig enables the HAProxy agent-check listener.
type AgentCheckConfig struct {
	Listen string
	// Weight adds a weight ("up 75%") to the answer; nil: no weight, the
	// director keeps its configured one.
	Weight *WeightConfig
}

// WeightConfig says what the agent-check weight is computed from. Each
// enabled signal gives a headroom in percent (100 idle, 0 saturated); the
// weight is the smallest of them (the most loaded resource decides),
// smoothed, and never below Min.
type WeightConfig struct {
	CPU bool // idle share of all CPUs over the last sample (/proc/stat)
	// Load: the 1-minute load average per online CPU; headroom 0 at one
	// runnable task per CPU.
	Load bool
	// Connections: headroom 0 at this many established TCP connections to
	// the VIPs (sock_diag); 0 off.
	Connections int
	// Exec names an exec check whose dynamic weight (exit code-2,
	// keepalived MISC_CHECK) is a signal; empty off.
	Exec string
	// Smoothing is the time constant of the exponential moving average of
	// the raw weight, sampled every WeightSampleInterval; 0 no smoothing.
	Smoothing time.Duration
	Min       int // floor in percent, 0..100
}

// Defaults.
const (
	DefaultHealthPort    = 8558
	DefaultListenerGrace = 30 * time.Second
	// DefaultWeightSmoothing keeps a one-second spike from moving the
	// weight more than about a tenth of the way.
	DefaultWeightSmoothing = 10 * time.Second
	DefaultWeightMin       = 1
	WeightSampleInterval   = time.Second
	defaultCheckInterval   = 2 * time.Second
	defaultCheckTimeout    = time.Second
	defaultRise            = 2
	defaultFall            = 3
)
