// Package inet names the IP transport protocols dsr-agent configures, once
// for the config, nftables, policy rules and socket dumps.
package inet

import (
	"fmt"
	"strconv"

	"golang.org/x/sys/unix"
)

// Protocol is an IP transport protocol by the name the config, ss(8),
// nft(8) and ip-rule(8) give it: "tcp" or "udp". Any other protocol read
// from the kernel is its IANA number in decimal, so nothing is lost; ""
// stands for any protocol (an ip rule without ipproto).
type Protocol string

const (
	TCP Protocol = "tcp"
	UDP Protocol = "udp"
)

// Number is the IANA protocol number (what nftables, policy rules and
// socket dumps carry); 0 for any.
func (p Protocol) Number() uint8 {
	switch p {
	case TCP:
		return unix.IPPROTO_TCP
	case UDP:
		return unix.IPPROTO_UDP
	}
	n, err := strconv.ParseUint(string(p), 10, 8)
	if err != nil {
		return 0
	}
	return uint8(n)
}

func (p Protocol) String() string { return string(p) }

// ProtocolOf is the protocol of an IANA number: TCP, UDP, "" (any) for 0,
// the number in decimal for any other.
func ProtocolOf(n uint8) Protocol {
	switch n {
	case 0:
		return ""
	case unix.IPPROTO_TCP:
		return TCP
	case unix.IPPROTO_UDP:
		return UDP
	}
	return Protocol(strconv.Itoa(int(n)))
}

// ParseProtocol accepts the protocols a DSR service port can have.
func ParseProtocol(s string) (Protocol, error) {
	switch p := Protocol(s); p {
	case TCP, UDP:
		return p, nil
	}
	return "", fmt.Errorf("protocol %q: want tcp or udp", s)
}
