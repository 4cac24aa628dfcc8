package agent

import (
	"fmt"

	"github.com/dsr-agent/dsr-agent/tunnel"
)

// ModeTunnel is L3 DSR: the director encapsulates (IPIP or GUE) and the
// real server may sit in any subnet.
const ModeTunnel Mode = "tunnel"

// TunnelConfig is mode tunnel's `tunnel:` section.
type TunnelConfig struct {
	Encap tunnel.Encap
	// Port is GUE's UDP receive port (encap gue only).
	Port uint16
	// MSS is the clamp for SYN-ACKs from the VIPs; 0: the LB-facing
	// interface's MTU minus the encapsulation (tunnel.DefaultMSS), per family.
	MSS int
}

// DefaultGUEPort is the port IPVS and the kernel docs use for GUE.
const DefaultGUEPort = 6080

// MSS bounds: the IPv4 minimum (RFC 879's 536) up to what a 9000-byte jumbo
// MTU carries.
const (
	minMSS = 536
	maxMSS = 8960
)

type rawTunnel struct {
	Encap string     `yaml:"encap"`
	Port  *strictInt `yaml:"port"`
	MSS   *strictInt `yaml:"mss"`
}

func (rt *rawTunnel) validate(errs *fieldErrors) *TunnelConfig {
	t := &TunnelConfig{Encap: tunnel.EncapIPIP}
	switch tunnel.Encap(rt.Encap) {
	case "", tunnel.EncapIPIP:
	case tunnel.EncapGUE:
		t.Encap = tunnel.EncapGUE
	default:
		errs.add("tunnel.encap", rt.Encap, "ipip or gue")
	}
	// The port is GUE's; with ipip it is validated and unused (DESIGN's
	// example carries it, and switching encap should not need an edit).
	port, _ := rt.Port.value(errs, "tunnel.port", DefaultGUEPort, 1, 65535, "GUE's UDP port 1-65535")
	if t.Encap == tunnel.EncapGUE {
		t.Port = uint16(port)
	}
	t.MSS, _ = rt.MSS.value(errs, "tunnel.mss", 0, minMSS, maxMSS, fmt.Sprintf("a TCP MSS %d-%d (default: the interface MTU minus the encapsulation)", minMSS, maxMSS))
	return t
}

// KernelModules are the modules the config needs loaded: mode tunnel's
// decapsulation (ipip for IPv4 VIPs, ip6_tunnel for IPv6 ones, fou for GUE).
// `dsr-agent prepare` loads them from the unit's ExecStartPre, outside the
// sandbox that keeps the daemon itself from loading modules.
func (c *Config) KernelModules() []string {
	if c.Tunnel == nil { // validation sets it in mode tunnel only
		return nil
	}
	var mods []string
	var v4, v6 bool
	for _, v := range c.VIPs {
		v4, v6 = v4 || v.Address.Is4(), v6 || v.Address.Is6()
	}
	if v4 {
		mods = append(mods, tunnel.ModIPIP)
	}
	if v6 {
		mods = append(mods, tunnel.ModIP6Tnl)
	}
	if c.Tunnel.Encap == tunnel.EncapGUE && len(mods) > 0 {
		mods = append(mods, tunnel.ModFou)
	}
	return mods
}
