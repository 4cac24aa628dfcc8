// Package rpfilter is the reverse-path filter policy of the devices
// decapsulated packets land on (tunl0 in tunnel mode: IPIP and GUE both land
// there): which values of rp_filter let a client packet through whose
// source the host routes via another interface. Reading and writing the
// sysctl is package sysctl's.
package rpfilter

import "github.com/dsr-agent/dsr-agent/sysctl"

// Rule accepts a value that does not drop a decapsulated packet whose source
// is routed via another interface (a client of a VIP reached over IPIP/GUE:
// the reply route to it is the default route, not tunl0). The kernel
// (net/ipv4/fib_frontend.c) takes r = IN_DEV_RPFILTER(idev) = max(all, dev)
// (IN_DEV_MAXCONF):
//
//	0      fib_validate_source() accepts without a reverse lookup
//	       (unless the source is one of this host's own addresses).
//	1      __fib_validate_source(): the route back to the source is not
//	       via dev, and "if (rpf == 1) goto e_rpf": dropped (-EXDEV,
//	       counted as IPReversePathFilter).
//	2      loose: any route back to the source will do: accepted.
//	>2     the code tests only "rpf == 1" and "rpf != 0", so 3, 255 and
//	       even negative values behave as 2 (the sysctl is a plain
//	       proc_dointvec: the kernel accepts any int).
//
// Loose mode has a trap: when dev has no IPv4 address at all ("if (no_addr)
// goto last_resort", then "if (rpf) goto e_rpf") every non-zero value drops
// the packet. tunl0 must carry an IPv4 address (the VIP /32 is enough:
// tunl0 is NOARP, so it is never announced) for 2 to work; an address-less
// tunl0 needs 0 on the device and on all (TestRPFilterKernel shows each
// case).
var Rule = &sysctl.Rule{
	Key: "rp_filter", Target: 2, JudgeMax: true,
	Accepts:    func(v int) bool { return v != 1 },
	Caveat:     func(int) string { return "" },
	TargetName: "loose",
	Harm:       "drops decapsulated packets",
}

// Decapsulation returns the settings that keep the kernel from dropping
// packets decapsulated onto devs: "all" first, judged but never written,
// then each device, written to 2 (loose) when max(all, device) is 1
// (strict). Loose mode accepts only on a device that holds an IPv4 address
// (the VIP /32 will do); on an address-less one the kernel drops under any
// non-zero value (see Rule), which these settings cannot express: the
// caller must give the device an address.
func Decapsulation(devs []string) []sysctl.Setting {
	out := []sysctl.Setting{{Path: sysctl.ConfPath("all", Rule.Key), Rule: Rule, JudgedOnly: true}}
	for _, d := range devs {
		out = append(out, sysctl.Setting{Path: sysctl.ConfPath(d, Rule.Key), Rule: Rule})
	}
	return out
}
