package firewall

import (
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/dsr-agent/dsr-agent/internal/inet"
	"github.com/dsr-agent/dsr-agent/internal/netnstest"
)

// BenchmarkReplaceNAT6: replacing firewalld mode's ip6 table with N IPv6
// VIPs, with and without the Neighbour Solicitation guard (one rule per VIP
// in ns_vips), and the kernel's floor for the same table: `nft -f` of the
// rendered plan (which includes nft's own parsing). Root: one namespace per
// sub-benchmark.
func BenchmarkReplaceNAT6(b *testing.B) {
	for _, n := range []int{10, 1000, 5000} {
		for _, guard := range []bool{false, true} {
			b.Run(fmt.Sprintf("vips=%d/dropNS=%v/nft-f", n, guard), func(b *testing.B) {
				ns := netnstest.New(b)
				script := RenderReplace(nat6Many(n, guard))
				f := filepath.Join(b.TempDir(), "plan.nft")
				body := strings.TrimSuffix(strings.TrimPrefix(script, "nft -f - <<'EOF'\n"), "EOF\n")
				if err := os.WriteFile(f, []byte(body), 0o644); err != nil {
					b.Fatal(err)
				}
				b.ResetTimer()
				for i := 0; i < b.N; i++ {
					ns.Exec(b, "nft", "-f", f)
				}
			})
			b.Run(fmt.Sprintf("vips=%d/dropNS=%v/Replace", n, guard), func(b *testing.B) {
				ns := netnstest.New(b)
				conn, err := Dial(int(ns.Handle))
				if err != nil {
					b.Fatal(err)
				}
				m := &Manager{Conn: conn}
				spec := nat6Many(n, guard)
				b.ResetTimer()
				for i := 0; i < b.N; i++ {
					if err := m.Replace(spec); err != nil {
						b.Fatal(err)
					}
				}
			})
		}
	}
}

// nat6Many is firewalld mode's ip6 table for n IPv6 VIPs with one port each.
func nat6Many(n int, dropNS bool) *NATTable {
	spec := &NATTable{IPv6: true, DropNS: dropNS}
	base := netip.MustParseAddr("2001:db8:99::").As16()
	for i := 0; i < n; i++ {
		a := base
		a[14], a[15] = byte(i>>8), byte(i)
		spec.Redirects = append(spec.Redirects, Redirect{VIP: netip.AddrFrom16(a), Proto: inet.TCP, Port: 80, ToPort: 8080})
	}
	return spec
}
