package firewall

import (
	"fmt"
	"strings"
	"time"

	"github.com/google/nftables"
	"github.com/google/nftables/expr"
	"golang.org/x/sys/unix"
)

// Table flags (linux/netfilter/nf_tables.h, enum nft_table_flags); x/sys
// only defines dormant.
const (
	tableFlagDormant = unix.NFT_TABLE_F_DORMANT // hooks unregistered, rules still listed
	tableFlagOwner   = 0x2                      // only the creating netlink socket may change it
	tableFlagPersist = 0x4                      // an owned table outlives its owner
)

// flagNames renders the set bits of v by names, in bit order, unknown
// bits in hex; "none" when v is 0.
func flagNames(v uint32, names []struct {
	bit  uint32
	name string
}) string {
	if v == 0 {
		return "none"
	}
	var out []string
	for _, n := range names {
		if v&n.bit != 0 {
			out = append(out, n.name)
			v &^= n.bit
		}
	}
	if v != 0 {
		out = append(out, fmt.Sprintf("%#x", v))
	}
	return strings.Join(out, ",")
}

func tableFlagNames(v uint32) string {
	return flagNames(v, []struct {
		bit  uint32
		name string
	}{{tableFlagDormant, "dormant"}, {tableFlagOwner, "owner"}, {tableFlagPersist, "persist"}})
}

// setFlagNames uses nft's words where nft has them ("dynamic" is
// NFT_SET_EVAL); concat is implied by the type in nft's listing.
func setFlagNames(v uint32) string {
	return flagNames(v, []struct {
		bit  uint32
		name string
	}{
		{unix.NFT_SET_ANONYMOUS, "anonymous"},
		{unix.NFT_SET_CONSTANT, "constant"},
		{unix.NFT_SET_INTERVAL, "interval"},
		{unix.NFT_SET_TIMEOUT, "timeout"},
		{unix.NFT_SET_EVAL, "dynamic"},
		{nftables.NFT_SET_CONCAT, "concat"},
	})
}

func setKind(isMap bool) string {
	if isMap {
		return "map"
	}
	return "set"
}

func typeName(name string, n uint32) string {
	if name == "" {
		name = "unknown"
	}
	return fmt.Sprintf("%s (%d bytes)", name, n)
}

func durationName(d time.Duration) string {
	if d == 0 {
		return "none"
	}
	return d.String()
}

func sizeName(n uint32) string {
	if n == 0 {
		return "unlimited"
	}
	return fmt.Sprint(n)
}

// hookName is nft's name of hook h in family f. The numbers are per
// family: in arp, 0 is input (NF_ARP_IN), in ip and ip6 it is prerouting.
func hookName(f Family, h nftables.ChainHook) string {
	var names []string
	switch f {
	case nftables.TableFamilyARP:
		names = []string{"input", "output", "forward"}
	case nftables.TableFamilyIPv4, nftables.TableFamilyIPv6, nftables.TableFamilyINet:
		names = []string{"prerouting", "input", "forward", "output", "postrouting", "ingress"}
	}
	if int(h) < len(names) {
		return names[h]
	}
	return fmt.Sprintf("hook(%d)", h)
}

// priorityName is nft's name for a standard priority of family f, or the
// number.
func priorityName(f Family, p int32) string {
	named := map[int32]string{0: "filter"}
	if f == nftables.TableFamilyIPv4 || f == nftables.TableFamilyIPv6 || f == nftables.TableFamilyINet {
		named = map[int32]string{-300: "raw", -150: "mangle", -100: "dstnat", 0: "filter", 50: "security", 100: "srcnat"}
	}
	if n, ok := named[p]; ok {
		return n
	}
	return fmt.Sprint(p)
}

func policyName(p nftables.ChainPolicy) string {
	switch p {
	case nftables.ChainPolicyAccept:
		return "accept"
	case nftables.ChainPolicyDrop:
		return "drop"
	}
	return fmt.Sprintf("policy(%d)", p)
}

func verdictName(v *expr.Verdict) string {
	switch v.Kind {
	case expr.VerdictAccept:
		return "accept"
	case expr.VerdictDrop:
		return "drop"
	case expr.VerdictReturn:
		return "return"
	case expr.VerdictContinue:
		return "continue"
	case expr.VerdictBreak:
		return "break"
	case expr.VerdictJump:
		return "jump " + v.Chain
	case expr.VerdictGoto:
		return "goto " + v.Chain
	case expr.VerdictQueue:
		return "queue"
	case expr.VerdictStolen:
		return "stolen"
	}
	return fmt.Sprintf("verdict(%d)", v.Kind)
}
