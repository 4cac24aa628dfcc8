//go:build e2e

package lab_test

import (
	"net/netip"
	"testing"
	"time"

	"github.com/dsr-agent/dsr-agent/internal/lab"
)

// TestAnyIPPrefix (issue 21.4): the director balances a /28 (lab.AnyIP4) and
// the real servers serve it as a prefix VIP beside the single VIP, in every
// mode that takes prefixes, configured only by `dsr-agent apply`. Requests to
// every address of the /28 are answered by both real servers, from that
// address (the TCP connection to it completes) and straight (the director
// sees none of the replies); ARP for every address is answered by the
// director alone, and the client's neighbour entry for each is the
// director's MAC; the single VIP still works beside it.
func TestAnyIPPrefix(t *testing.T) {
	var addrs []netip.Addr
	for a := lab.AnyIP4.Addr(); lab.AnyIP4.Contains(a); a = a.Next() {
		addrs = append(addrs, a)
	}
	for _, mode := range lab.Modes {
		t.Run(string(mode), func(t *testing.T) {
			a := agent(t)
			l, ctx := newLab(t, 2)
			// The config's DNS port has its service, so status can be in
			// sync (as in TestModes).
			dnsPorts := []int{lab.DNSPort}
			if mode == lab.ModeFirewalld {
				dnsPorts = []int{lab.DNSRedirectPort}
			}
			startUnbound(t, ctx, l, lab.UnboundOptions{Ports: dnsPorts})
			for _, rs := range l.Servers {
				r, err := a.ApplyYAML(ctx, rs, lab.ConfigPrefix(mode, lab.AnyIP4, lab.VIP4))
				if err != nil {
					t.Fatalf("apply: %v", err)
				}
				t.Logf("%s: dsr-agent apply (%v):\n%s", rs.Name, r.Took.Round(time.Millisecond), r.Output)
				if r, err := a.Run(ctx, rs, "status"); err != nil {
					t.Errorf("status right after apply: %v\n%s", err, r.Output)
				}
			}
			p, err := l.NewProber()
			if err != nil {
				t.Fatal(err)
			}
			defer p.Close()
			for _, addr := range addrs {
				if err := l.FlushClientNeighbor(addr); err != nil {
					t.Fatal(err)
				}
				for range 3 {
					if err := p.SendARPFor(addr); err != nil {
						t.Fatal(err)
					}
				}
			}
			repBefore, err := l.DirectorCounter(lab.CounterReplies)
			if err != nil {
				t.Fatal(err)
			}
			reqBefore, err := l.DirectorCounter(lab.CounterRequests)
			if err != nil {
				t.Fatal(err)
			}
			hc := l.HTTPClient(5 * time.Second)
			const perAddr = 24 // both servers answer with probability 1-2^-23 per address
			for _, addr := range addrs {
				perServer := map[string]int{}
				for i := range perAddr {
					name, _, err := l.Fetch(ctx, hc, addr)
					if err != nil {
						t.Fatalf("request %d to %s: %v", i+1, addr, err)
					}
					perServer[name]++
				}
				for _, rs := range l.Servers {
					if perServer[rs.Name] == 0 {
						t.Errorf("%s: real server %s answered none of %d requests: %v", addr, rs.Name, perAddr, perServer)
					}
				}
				hc.CloseIdleConnections()
			}
			time.Sleep(50 * time.Millisecond) // in-flight FINs and ARP answers
			rep, _ := l.DirectorCounter(lab.CounterReplies)
			req, _ := l.DirectorCounter(lab.CounterRequests)
			if d := rep.Sub(repBefore); d.Packets != 0 {
				t.Errorf("the director saw %v of replies from the prefix: replies must bypass it", d)
			}
			if d := req.Sub(reqBefore); d.Packets < uint64(len(addrs)*perAddr) {
				t.Errorf("the director forwarded %v, fewer packets than requests", d)
			}
			ans, err := p.Answers()
			if err != nil {
				t.Fatal(err)
			}
			if ans.ARP[l.Director.MAC.String()] == 0 {
				t.Errorf("the director never answered ARP for the prefix: %v", ans.ARP)
			}
			for m, n := range ans.ARP {
				if m != l.Director.MAC.String() {
					t.Errorf("%s (%s) answered ARP for the prefix %d times: only the director may", l.NameOf(mustMAC(m)), m, n)
				}
			}
			for _, addr := range addrs {
				if nmac, state, err := l.ClientNeighbor(addr); err != nil || nmac.String() != l.Director.MAC.String() {
					t.Errorf("client neighbour entry for %s: %s (%s, %s, %v), want the director's", addr, nmac, l.NameOf(nmac), state, err)
				}
			}
			t.Run("single VIP beside it", func(t *testing.T) { checkDSR(t, ctx, l, lab.VIP4, 30) })
			for _, rs := range l.Servers {
				if r, err := a.Remove(ctx, rs); err != nil {
					t.Errorf("remove: %v\n%s", err, r.Output)
				}
			}
		})
	}
}
