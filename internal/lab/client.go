package lab

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/netip"
	"strconv"
	"strings"
	"time"

	"github.com/google/nftables"
	"github.com/google/nftables/expr"
	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
)

// Client-side counters (inet table ClientTable in the client's namespace):
// what the client sent to the VIP and what it received from it.
const (
	ClientTable    = "lab"
	CounterSent    = "sent"
	CounterRecvd   = "received"
	clientFamilyIn = "input"
	// UDP (DNS) to and from the VIP.
	CounterSentUDP  = "udp_sent"
	CounterRecvdUDP = "udp_received"
)

// ServicePort is the port clients use on the VIP.
const ServicePort = 80

// RedirectPort is where firewalld mode redirects VIP:ServicePort to.
const RedirectPort = 8080

func (l *Lab) setupClientCounters() error {
	c, err := nftables.New(nftables.WithNetNSFd(int(l.Client.Handle)))
	if err != nil {
		return fmt.Errorf("client: nftables conn: %w", err)
	}
	t := c.AddTable(&nftables.Table{Name: ClientTable, Family: nftables.TableFamilyINet})
	for _, name := range []string{CounterSent, CounterRecvd, CounterSentUDP, CounterRecvdUDP} {
		c.AddObj(&nftables.CounterObj{Table: t, Name: name})
	}
	out := c.AddChain(&nftables.Chain{Name: "output", Table: t, Type: nftables.ChainTypeFilter,
		Hooknum: nftables.ChainHookOutput, Priority: nftables.ChainPriorityFilter})
	in := c.AddChain(&nftables.Chain{Name: clientFamilyIn, Table: t, Type: nftables.ChainTypeFilter,
		Hooknum: nftables.ChainHookInput, Priority: nftables.ChainPriorityFilter})
	for _, vip := range []netip.Addr{VIP4, VIP6} {
		c.AddRule(&nftables.Rule{Table: t, Chain: out, Exprs: inetMatch(vip, unix.IPPROTO_TCP, 16, 24, CounterSent)})
		c.AddRule(&nftables.Rule{Table: t, Chain: in, Exprs: inetMatch(vip, unix.IPPROTO_TCP, 12, 8, CounterRecvd)})
		c.AddRule(&nftables.Rule{Table: t, Chain: out, Exprs: inetMatch(vip, unix.IPPROTO_UDP, 16, 24, CounterSentUDP)})
		c.AddRule(&nftables.Rule{Table: t, Chain: in, Exprs: inetMatch(vip, unix.IPPROTO_UDP, 12, 8, CounterRecvdUDP)})
	}
	if err := c.Flush(); err != nil {
		return fmt.Errorf("client: install counters: %w", err)
	}
	return nil
}

// inetMatch: "meta nfproto ipvX meta l4proto PROTO ip[6] {s,d}addr a counter name c".
func inetMatch(a netip.Addr, proto byte, off4, off6 uint32, counter string) []expr.Any {
	fam, off, n := byte(unix.NFPROTO_IPV4), off4, uint32(4)
	if a.Is6() {
		fam, off, n = unix.NFPROTO_IPV6, off6, 16
	}
	return []expr.Any{
		&expr.Meta{Key: expr.MetaKeyNFPROTO, Register: 1},
		&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: []byte{fam}},
		&expr.Meta{Key: expr.MetaKeyL4PROTO, Register: 1},
		&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: []byte{proto}},
		&expr.Payload{DestRegister: 1, Base: expr.PayloadBaseNetworkHeader, Offset: off, Len: n},
		&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: a.AsSlice()},
		&expr.Objref{Type: int(nftables.ObjTypeCounter), Name: counter},
	}
}

// ClientCounter reads CounterSent, CounterRecvd, CounterSentUDP or CounterRecvdUDP.
func (l *Lab) ClientCounter(name string) (Counter, error) {
	return readCounter(l.Client, &nftables.Table{Name: ClientTable, Family: nftables.TableFamilyINet}, name)
}

// HTTPClient returns a client whose connections are opened inside the client
// namespace (a socket belongs to the namespace of the thread that created it).
// Keep-alive is off so that every request is a new TCP flow with a new source
// port, which is what the director hashes on.
func (l *Lab) HTTPClient(timeout time.Duration) *http.Client {
	dial := func(ctx context.Context, network, addr string) (net.Conn, error) {
		var c net.Conn
		err := l.Client.Do(func() error {
			var err error
			c, err = (&net.Dialer{Timeout: timeout}).DialContext(ctx, network, addr)
			return err
		})
		return c, err
	}
	return &http.Client{
		Timeout:   timeout,
		Transport: &http.Transport{DialContext: dial, DisableKeepAlives: true, Proxy: nil},
	}
}

// VIPURL is the service URL on the VIP of the given family.
func VIPURL(vip netip.Addr) string {
	return "http://" + netip.AddrPortFrom(vip, ServicePort).String() + "/"
}

// Fetch asks the VIP once and returns the real server that answered (the
// first word after "served-by" in the body) and the body length.
func (l *Lab) Fetch(ctx context.Context, hc *http.Client, vip netip.Addr) (server string, n int, err error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, VIPURL(vip), nil)
	if err != nil {
		return "", 0, fmt.Errorf("request %s: %w", VIPURL(vip), err)
	}
	resp, err := hc.Do(req)
	if err != nil {
		return "", 0, fmt.Errorf("GET %s: %w", VIPURL(vip), err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		return "", 0, fmt.Errorf("GET %s: read body: %w", VIPURL(vip), err)
	}
	if resp.StatusCode != http.StatusOK {
		return "", len(body), fmt.Errorf("GET %s: status %s", VIPURL(vip), resp.Status)
	}
	first, _, _ := strings.Cut(string(body), "\n")
	if f := strings.Fields(first); len(f) >= 2 && f[0] == "served-by" {
		return f[1], len(body), nil
	}
	return "", len(body), fmt.Errorf("GET %s: body does not name a server: %q", VIPURL(vip), first)
}

// ClientNeighbor returns the client's neighbour entry (MAC and state) for
// the VIP, or nil if there is none.
func (l *Lab) ClientNeighbor(vip netip.Addr) (net.HardwareAddr, string, error) {
	nic, err := l.Client.Link()
	if err != nil {
		return nil, "", err
	}
	fam := netlink.FAMILY_V4
	if vip.Is6() {
		fam = netlink.FAMILY_V6
	}
	neighs, err := l.Client.NL.NeighList(nic.Attrs().Index, fam)
	if err != nil {
		return nil, "", fmt.Errorf("client: neighbour list: %w", err)
	}
	for _, n := range neighs {
		if a, ok := netip.AddrFromSlice(n.IP); ok && a.Unmap() == vip {
			return n.HardwareAddr, neighState(n.State), nil
		}
	}
	return nil, "", nil
}

// FlushClientNeighbor forgets the client's neighbour entry for the VIP so the
// next packet triggers a fresh ARP/NDP resolution.
func (l *Lab) FlushClientNeighbor(vip netip.Addr) error {
	nic, err := l.Client.Link()
	if err != nil {
		return err
	}
	fam := netlink.FAMILY_V4
	if vip.Is6() {
		fam = netlink.FAMILY_V6
	}
	err = l.Client.NL.NeighDel(&netlink.Neigh{LinkIndex: nic.Attrs().Index, Family: fam, IP: vip.AsSlice()})
	if err != nil && !errors.Is(err, unix.ENOENT) {
		return fmt.Errorf("client: ip neigh del %s: %w", vip, err)
	}
	return nil
}

func neighState(s int) string {
	names := map[int]string{
		netlink.NUD_INCOMPLETE: "INCOMPLETE", netlink.NUD_REACHABLE: "REACHABLE",
		netlink.NUD_STALE: "STALE", netlink.NUD_DELAY: "DELAY", netlink.NUD_PROBE: "PROBE",
		netlink.NUD_FAILED: "FAILED", netlink.NUD_NOARP: "NOARP", netlink.NUD_PERMANENT: "PERMANENT",
	}
	if n, ok := names[s]; ok {
		return n
	}
	return "0x" + strconv.FormatInt(int64(s), 16)
}
