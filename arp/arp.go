// Package arp is the ARP-suppression policy of a DSR real server: which
// values of arp_ignore and arp_announce keep the kernel from answering or
// announcing a VIP (Rules, Suppression), and when it answers for an address
// that is not local at all (proxy ARP and NDP, ProxyRules). Reading, writing
// and watching the sysctls is package sysctl's.
package arp

import (
	"fmt"

	"github.com/dsr-agent/dsr-agent/sysctl"
)

// The rules are the kernel's judgement of the values of one ARP sysctl for a
// VIP held on lo (a global-scope address on another interface than the one
// the ARP arrives on or leaves by). The kernel uses max(all, iface) for both
// keys (IN_DEV_ARP_IGNORE, IN_DEV_ARP_ANNOUNCE in
// include/linux/inetdevice.h), so every value is judged as that effective
// value, and "a higher value is stricter" is false. Accepts means the
// effective value keeps the kernel from answering for (arp_ignore) or
// announcing (arp_announce) a VIP on lo; reasons from net/ipv4/arp.c:
// arp_ignore() for replies, arp_solicit() for requests.
var (
	Ignore = &sysctl.Rule{
		// arp_ignore() switch on the effective value:
		//   0      reply for any local address, whatever interface holds it: answers.
		//   1      reply only if the target IP is on the receiving interface: a VIP
		//          on lo is never answered.
		//   2      as 1, and the sender must be in the target's subnet: never answered.
		//   3      inet_confirm_addr(..., RT_SCOPE_HOST): reply unless the address has
		//          host scope; a VIP on lo is global scope, so it IS answered.
		//   4..7   reserved, "case 4 ... 7: break" then reply: answers.
		//   8      "do not reply for all local addresses": never answered, but the
		//          host no longer answers for its own address either.
		//   >8     default case: reply: answers.
		Key: "arp_ignore", Target: 1,
		Accepts: func(v int) bool { return v == 1 || v == 2 || v == 8 },
		Caveat: func(v int) string {
			if v == 8 {
				return "arp_ignore 8 answers ARP for nothing, not even this host's own address: neighbours reach it only through static or learned entries"
			}
			return ""
		},
	}
	Announce = &sysctl.Rule{
		// arp_solicit() picks the sender IP of our ARP requests:
		//   0 (and the default case, so 3 and above): the packet's source if it is
		//          local, i.e. a VIP for replies sent from it: neighbours learn the VIP
		//          at this host's MAC.
		//   1      avoid a source outside the target's subnet: a VIP inside the
		//          NIC's subnet is still used.
		//   2      always the best address of the outgoing interface: never a VIP on lo.
		Key: "arp_announce", Target: 2,
		Accepts: func(v int) bool { return v == 2 },
		Caveat:  func(int) string { return "" },
	}
)

// Rules is the table of what really suppresses.
var Rules = []*sysctl.Rule{Ignore, Announce}

// Suppression returns the settings for "all", "default" and each LB-facing
// interface, in a stable order ("all" first, since the others are judged
// against it). "all" and the LB-facing interfaces must suppress by their own
// value, as the RHEL guide sets them, so the intent is visible on each;
// "default" counts only through max(all, default).
func Suppression(ifaces []string) []sysctl.Setting {
	var out []sysctl.Setting
	for _, iface := range append([]string{"all", "default"}, ifaces...) {
		for _, r := range Rules {
			out = append(out, sysctl.Setting{Path: sysctl.ConfPath(iface, r.Key), Rule: r, Inherited: iface == "default"})
		}
	}
	return out
}

// Caveats lists what the effective values on the given interfaces cost even
// though they suppress (arp_ignore 8), given the values after a plan.
func Caveats(ifaces []string, after map[string]string) []string {
	var out []string
	for _, iface := range ifaces {
		for _, r := range Rules {
			eff, ok := sysctl.Effective(after[sysctl.ConfPath("all", r.Key).Key()], after[sysctl.ConfPath(iface, r.Key).Key()])
			if !ok {
				continue
			}
			if c := r.Caveat(eff); c != "" {
				out = append(out, fmt.Sprintf("%s: %s", iface, c))
			}
		}
	}
	return out
}
