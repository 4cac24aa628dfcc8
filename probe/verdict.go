package probe

import (
	"fmt"
	"strings"
	"time"
)

// Verdict names what the probe saw on the data path.
type Verdict string

// The verdicts. Each has its own exit code (ExitCode) and a one-line
// explanation (Result.Explain).
const (
	Up           Verdict = "up"            // SYN-ACK (or UDP answer) from the VIP
	Refused      Verdict = "refused"       // RST from the VIP: nothing listens on VIP:PORT
	Unreachable  Verdict = "unreachable"   // ICMP unreachable: a firewall rejects
	Timeout      Verdict = "timeout"       // nothing: VIP missing, rp_filter, a silent drop
	WrongSource  Verdict = "wrong-source"  // the answer is not from the VIP
	MSSTooLarge  Verdict = "mss-too-large" // advertised MSS exceeds the path MTU minus encapsulation
	ARPFlux      Verdict = "arp-flux"      // the real server answers ARP/NDP for the VIP
	VerdictError Verdict = "error"         // the probe could not run (bad input, no CAP_NET_RAW)
)

// Exit codes of `dsr-agent probe` (docs/probe.md, the man page). 2 is the
// project's "bad usage / missing privileges"; each fault has its own code,
// from 10 so that none means something else for another command (1 failure,
// 3 unconfirmed); keepalived's MISC_CHECK without misc_dynamic reads any
// non-zero code as down. With misc_dynamic, which reads 2..255 as a weight,
// the caller asks for MISC_CHECK codes instead (MiscExitCode).
const (
	ExitUp          = 0
	ExitUsage       = 2
	ExitRefused     = 10
	ExitUnreachable = 11
	ExitTimeout     = 12
	ExitWrongSource = 13
	ExitMSSTooLarge = 14
	ExitARPFlux     = 15
)

// ExitCode is the verdict's exit code.
func (v Verdict) ExitCode() int {
	switch v {
	case Up:
		return ExitUp
	case Refused:
		return ExitRefused
	case Unreachable:
		return ExitUnreachable
	case Timeout:
		return ExitTimeout
	case WrongSource:
		return ExitWrongSource
	case MSSTooLarge:
		return ExitMSSTooLarge
	case ARPFlux:
		return ExitARPFlux
	}
	return ExitUsage
}

// MiscExitCode maps a verdict to keepalived MISC_CHECK with misc_dynamic:
// 0 up (weight unchanged), 1 down, 2+N up with weight N (weight >= 0 given).
func MiscExitCode(v Verdict, weight int) int {
	if v != Up {
		return 1
	}
	if weight < 0 {
		return 0
	}
	return 2 + min(weight, 253)
}

// Explain is the verdict's one-line explanation.
func (r *Result) Explain() string {
	target := fmt.Sprintf("%s via %s (%s, %s)", r.Target, r.Real, r.Encap, r.Proto)
	switch r.Verdict {
	case Up:
		if r.Proto == string(UDP) {
			return fmt.Sprintf("up: %s answered from the VIP in %s", target, fmtDur(r.RTT))
		}
		return fmt.Sprintf("up: %s answered SYN-ACK from the VIP in %s, MSS %d, window %d", target, fmtDur(r.RTT), r.MSS, r.Window)
	case Refused:
		return fmt.Sprintf("refused: %s answered %s from the VIP: nothing listens on the VIP on that port (a service bound to the real IP only?)", target, r.Answer)
	case Unreachable:
		return fmt.Sprintf("unreachable: %s answered %s from %s: a firewall rejects", target, r.Answer, r.From)
	case Timeout:
		return fmt.Sprintf("timeout: no answer from %s within %s: VIP not configured there, rp_filter, or a silent drop", target, r.Timeout)
	case WrongSource:
		return fmt.Sprintf("wrong-source: %s answered from %s, not from the VIP: a wildcard UDP service without IP_PKTINFO, or the VIP is not local there", target, r.From)
	case MSSTooLarge:
		return fmt.Sprintf("mss-too-large: %s advertised MSS %d but the path allows %d (MTU %d minus %s encapsulation): clamp the MSS on the real server", target, r.MSS, r.MaxMSS, r.MTU, r.Encap)
	case ARPFlux:
		return fmt.Sprintf("arp-flux: %s answers ARP/NDP for the VIP on %s from %s (the director is %s): clients may bypass the director", target, r.Dev, strings.Join(r.ARPAnswers, ", "), r.DirectorMAC)
	}
	return fmt.Sprintf("error: %s: %s", target, r.Error)
}

func fmtDur(d time.Duration) string {
	return d.Round(time.Microsecond).String()
}
