package firewall

import (
	"encoding/binary"
	"strings"
	"testing"
	"time"

	"github.com/google/nftables"
	"github.com/google/nftables/expr"
	"golang.org/x/sys/unix"
)

// Pure tests of the comparison: no kernel, no root.

func TestExpectedComparesEqualToItself(t *testing.T) {
	for _, s := range []Spec{arpSpec(), nat4Spec(), nat6Spec(), &ARPTable{}, &NATTable{IPv6: true}, arpGuardSpec(), nat6GuardSpec(), &ARPGuard{}, nsGuardSpec(), mss6GuardSpec()} {
		if d := s.expected().diff(s.Family(), s.expected()); d != "" {
			t.Errorf("%s: spec differs from itself: %s", TableRef(s.Family()), d)
		}
	}
}

// TestTableFlags: the library decodes NFTA_TABLE_FLAGS (big-endian) in host
// order; tableFlags must give the kernel's value back.
func TestTableFlags(t *testing.T) {
	for _, want := range []uint32{0, tableFlagDormant, tableFlagOwner | tableFlagPersist} {
		// What google/nftables stores: the attribute's bytes read in host order.
		lib := binary.NativeEndian.Uint32(binary.BigEndian.AppendUint32(nil, want))
		if got := tableFlags(&nftables.Table{Flags: lib}); got != want {
			t.Errorf("tableFlags(library %#x) = %#x, want %#x", lib, got, want)
		}
	}
}

func TestDiffTableFlags(t *testing.T) {
	want := arpSpec().expected()
	for flags, name := range map[uint32]string{
		tableFlagDormant:                    "table flags dormant, want none",
		tableFlagPersist:                    "table flags persist, want none",
		tableFlagOwner | tableFlagPersist:   "table flags owner,persist, want none",
		tableFlagDormant | 0x80:             "table flags dormant,0x80, want none",
		tableFlagDormant | tableFlagPersist: "table flags dormant,persist, want none",
	} {
		got := arpSpec().expected()
		got.flags = flags
		if d := got.diff(nftables.TableFamilyARP, want); d != "altered: "+name {
			t.Errorf("flags %#x: diff = %q, want %q", flags, d, "altered: "+name)
		}
	}
}

func TestChainDiff(t *testing.T) {
	arpIn := arpSpec().expected().chains[0]
	nat := nat4Spec().expected().chains[0]
	tests := []struct {
		name string
		f    Family
		want chainContent
		edit func(*chainContent)
		diff []string
	}{
		// The ARP trap: hook 1 is output in an arp table, input in ip.
		{"arp hook", nftables.TableFamilyARP, arpIn, func(c *chainContent) { c.hook = 1 }, []string{"hook output, want input"}},
		{"ip hook", nftables.TableFamilyIPv4, nat, func(c *chainContent) { c.hook = 3 }, []string{"hook output, want prerouting"}},
		{"ip priority", nftables.TableFamilyIPv4, nat, func(c *chainContent) { c.priority = 0 }, []string{"priority filter, want dstnat"}},
		{"arp priority", nftables.TableFamilyARP, arpIn, func(c *chainContent) { c.priority = -100 }, []string{"priority -100, want filter"}},
		{"policy", nftables.TableFamilyARP, arpIn, func(c *chainContent) { c.policy = nftables.ChainPolicyDrop }, []string{"policy drop, want accept"}},
		{"type", nftables.TableFamilyIPv4, nat, func(c *chainContent) { c.typ = nftables.ChainTypeFilter }, []string{"type filter, want nat"}},
		// A regular chain has no hook, priority or policy to compare.
		{"regular", nftables.TableFamilyARP, arpIn, func(c *chainContent) { c.base, c.hook, c.priority, c.policy = false, 0, 0, 0 },
			[]string{"regular chain, want type filter hook input"}},
		{"extra rule", nftables.TableFamilyARP, arpIn, func(c *chainContent) { c.rules = append(c.rules, nil) }, []string{"2 rules, want 1"}},
		{"verdict", nftables.TableFamilyARP, arpIn, func(c *chainContent) {
			r := append([]expr.Any{}, c.rules[0]...)
			r[len(r)-1] = &expr.Verdict{Kind: expr.VerdictAccept}
			c.rules = [][]expr.Any{r}
		}, []string{"rule 1: verdict accept, want drop"}},
		{"other expression", nftables.TableFamilyARP, arpIn, func(c *chainContent) {
			r := append([]expr.Any{}, c.rules[0]...)
			r[5] = &expr.Lookup{SourceRegister: 1, SetName: "other"}
			c.rules = [][]expr.Any{r}
		}, []string{"rule 1: changed"}},
		// Counter values and transaction set IDs are not behaviour.
		{"counter values", nftables.TableFamilyARP, arpIn, func(c *chainContent) {
			r := append([]expr.Any{}, c.rules[0]...)
			for i, e := range r {
				if _, ok := e.(*expr.Counter); ok {
					r[i] = &expr.Counter{Packets: 7, Bytes: 420}
				}
			}
			c.rules = [][]expr.Any{normalize(r)}
		}, nil},
		{"several", nftables.TableFamilyARP, arpIn, func(c *chainContent) { c.hook, c.policy = 1, nftables.ChainPolicyDrop },
			[]string{"hook output, want input", "policy drop, want accept"}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			g := tc.want
			tc.edit(&g)
			got := chainDiff(tc.f, g, tc.want)
			if strings.Join(got, "; ") != strings.Join(tc.diff, "; ") {
				t.Errorf("chainDiff = %q, want %q", got, tc.diff)
			}
		})
	}
}

func TestSetDiff(t *testing.T) {
	vips := arpSpec().expected().sets[0]
	ports := nat4Spec().expected().sets[0]
	tests := []struct {
		name string
		want setContent
		edit func(*setContent)
		diff []string
	}{
		{"interval", vips, func(s *setContent) { s.flags |= unix.NFT_SET_INTERVAL }, []string{"flags interval, want none"}},
		{"timeout", ports, func(s *setContent) { s.flags |= unix.NFT_SET_TIMEOUT; s.timeout = time.Hour },
			[]string{"flags timeout, want none", "timeout 1h0m0s, want none"}},
		{"constant and dynamic", vips, func(s *setContent) { s.flags |= unix.NFT_SET_CONSTANT | unix.NFT_SET_EVAL },
			[]string{"flags constant,dynamic, want none"}},
		{"size", vips, func(s *setContent) { s.size = 1 }, []string{"size 1, want unlimited"}},
		{"a map", vips, func(s *setContent) { s.isMap = true }, []string{"a map, want a set"}},
		// Elements of another type cannot be compared: only the type is named.
		{"key type", vips, func(s *setContent) { s.keyType, s.elements = "mark", map[string]string{"01": ""} },
			[]string{"key type mark (4 bytes), want ipv4_addr (4 bytes)"}},
		{"data type", ports, func(s *setContent) { s.dataType, s.dataLen = "mark", 4 },
			[]string{"data type mark (4 bytes), want inet_service (2 bytes)"}},
		{"elements", ports, func(s *setContent) {
			s.elements = map[string]string{"ff": "00"}
			for k, v := range ports.elements {
				s.elements[k] = v
			}
			for k := range ports.elements {
				s.elements[k] = "0000"
				break
			}
		}, []string{"0 elements missing, 1 unexpected, 1 with wrong value"}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			g := tc.want
			tc.edit(&g)
			got := setDiff(g, tc.want)
			if strings.Join(got, "; ") != strings.Join(tc.diff, "; ") {
				t.Errorf("setDiff = %q, want %q", got, tc.diff)
			}
		})
	}
}

// TestSetFlagsConcat: the concat flag counts only with interval, where it
// picks another backend; nft leaves it off a plain concatenated map.
func TestSetFlagsConcat(t *testing.T) {
	if f := setFlags(&nftables.Set{Concatenation: true, IsMap: true}); f != 0 {
		t.Errorf("plain concatenated map: flags %#x, want 0", f)
	}
	want := uint32(unix.NFT_SET_INTERVAL | nftables.NFT_SET_CONCAT)
	if f := setFlags(&nftables.Set{Concatenation: true, Interval: true}); f != want {
		t.Errorf("concatenated intervals: flags %#x, want %#x", f, want)
	}
}

func TestDiffNamesSetsAndChains(t *testing.T) {
	want := arpSpec().expected()
	got := arpSpec().expected()
	got.chains = got.chains[:1]
	got.sets = append(got.sets[1:], setContent{name: "extra"}, setContent{name: "xmap", isMap: true})
	got.chains = append(got.chains, chainContent{name: "extra"})
	d := got.diff(nftables.TableFamilyARP, want)
	w := "altered: chain output missing; unexpected chain extra; set vips missing; unexpected set extra; unexpected map xmap"
	if d != w {
		t.Errorf("diff = %q\nwant   %q", d, w)
	}
	if d := (tableContent{missing: true}).diff(nftables.TableFamilyARP, want); d != "table missing" {
		t.Errorf("missing table: %q", d)
	}
}

func TestSuppresses(t *testing.T) {
	for _, c := range []struct {
		spec Spec
		want bool
	}{
		{arpSpec(), true}, {arpGuardSpec(), true}, {nsGuardSpec(), true}, {nat6GuardSpec(), true}, {mss6GuardSpec(), true},
		{nat4Spec(), false}, {nat6Spec(), false}, {mss4Spec(), false}, {mss6Spec(), false},
		{&NATTable{DropNS: true}, false}, // IPv4: DropNS is ignored
	} {
		if got := Suppresses(c.spec); got != c.want {
			t.Errorf("Suppresses(%s %T) = %v, want %v", TableRef(c.spec.Family()), c.spec, got, c.want)
		}
	}
}
