package agent

import (
	"encoding/json"
	"net/netip"
	"strings"
	"testing"

	"github.com/dsr-agent/dsr-agent/internal/golden"
	"github.com/dsr-agent/dsr-agent/internal/inet"
	"github.com/dsr-agent/dsr-agent/listener"
)

func sock(proto inet.Protocol, addrPort string, v6only bool) listener.Socket {
	ap := netip.MustParseAddrPort(addrPort)
	return listener.Socket{Proto: proto, Addr: ap.Addr(), Port: ap.Port(), V6Only: v6only}
}

const listenerLoopbackCfg = "mode: loopback\ninterfaces: [eth0.100]\nvips:\n" +
	"  - {address: 192.0.2.10, ports: [{port: 80}, {port: 53, protocol: udp}]}\n" +
	"  - {address: '2001:db8::10', ports: [{port: 443}]}\n"

// TestStatusListenersGolden: the listener check as status text and JSON
// (the daemon's snapshot is the same Report): served on the VIP, on the
// wildcard (UDP: a warning, not drift), dual-stack, on another address
// (the negative control: missing), and firewalld mode's redirect target.
func TestStatusListenersGolden(t *testing.T) {
	var text, js strings.Builder
	view := func(name, cfgText string, socks ...listener.Socket) *Report {
		t.Helper()
		cfg := mustConfig(t, cfgText)
		h := newSimHost()
		h.facts.Index = map[string]int{"lo": 1, "eth0.100": 2}
		p, d := h.plan(t, cfg)
		h.apply(t, p, d)
		pl := h.planned(t, cfg)
		pl.listenersRead, pl.sockets = true, socks
		r := pl.report()
		b, err := json.MarshalIndent(struct {
			Listeners   []ListenerState `json:"listeners"`
			Differences []Difference    `json:"differences"`
		}{r.Listeners, r.Differences}, "", "  ")
		if err != nil {
			t.Fatal(err)
		}
		text.WriteString("### " + name + "\n" + r.String())
		js.WriteString("### " + name + "\n" + string(b) + "\n")
		return r
	}
	tcp, udp := inet.TCP, inet.UDP
	if r := view("on-the-vip", listenerLoopbackCfg,
		sock(tcp, "192.0.2.10:80", false), sock(udp, "192.0.2.10:53", false), sock(tcp, "[2001:db8::10]:443", true)); !r.InSync || len(r.Warnings) != 0 {
		t.Errorf("listeners on the VIPs: in sync %v, warnings %q", r.InSync, r.Warnings)
	}
	if r := view("wildcard", listenerLoopbackCfg,
		sock(tcp, "0.0.0.0:80", false), sock(udp, "0.0.0.0:53", false), sock(tcp, "[::]:443", true)); !r.InSync || len(r.Warnings) != 1 {
		t.Errorf("listeners on the wildcard: in sync %v, warnings %q (want the UDP one)", r.InSync, r.Warnings)
	}
	// A UDP socket on the VIP beside the wildcard one wins the lookup: no warning.
	if r := view("udp-vip-and-wildcard", listenerLoopbackCfg,
		sock(tcp, "[::]:80", false), sock(udp, "0.0.0.0:53", false), sock(udp, "192.0.2.10:53", false), sock(tcp, "[::]:443", false)); !r.InSync || len(r.Warnings) != 0 {
		t.Errorf("dual-stack and UDP on the VIP: in sync %v, warnings %q", r.InSync, r.Warnings)
	}
	if r := view("missing", listenerLoopbackCfg,
		sock(tcp, "198.51.100.21:80", false), sock(tcp, "[::]:80", true), sock(udp, "127.0.0.1:53", false), sock(tcp, "0.0.0.0:443", false)); r.InSync || len(r.Differences) != 3 {
		t.Errorf("listeners elsewhere: in sync %v, differences %+v", r.InSync, r.Differences)
	}
	fw := planConfigs["firewalld"]
	if r := view("firewalld-redirect-target", fw,
		sock(tcp, "198.51.100.21:8080", false), sock(udp, "0.0.0.0:53", false), sock(tcp, "[::]:443", false)); !r.InSync || len(r.Warnings) != 0 {
		t.Errorf("firewalld mode on the redirect target: in sync %v, warnings %q", r.InSync, r.Warnings)
	}
	if r := view("firewalld-on-the-vip", fw,
		sock(tcp, "192.0.2.10:8080", false), sock(tcp, "0.0.0.0:80", false), sock(udp, "0.0.0.0:53", false), sock(tcp, "[2001:db8::10]:443", false)); r.InSync || len(r.Differences) != 2 {
		t.Errorf("firewalld mode on the VIP: in sync %v, differences %+v", r.InSync, r.Differences)
	}
	golden.Assert(t, "status-listeners.txt", text.String())
	golden.Assert(t, "status-listeners.json", js.String())
}

// TestListenerDumpSpec: only the protocols configured are dumped; `vips: []`
// and VIPs without ports check nothing.
func TestListenerDumpSpec(t *testing.T) {
	h := newSimHost()
	for _, c := range []struct {
		cfg    string
		protos string
		v4     bool
	}{
		{"vips: []\n", "", false},
		{"interfaces: [eth0.100]\nvips: [{address: 192.0.2.10}]\n", "", false},
		{listenerLoopbackCfg, "tcp,udp", true},
		{"interfaces: [eth0.100]\nvips: [{address: '2001:db8::10', ports: [{port: 443}]}]\n", "tcp", false},
	} {
		_, d := h.plan(t, mustConfig(t, c.cfg))
		protos, v4 := listenerDumpSpec(d)
		var ps []string
		for _, p := range protos {
			ps = append(ps, string(p))
		}
		if got := strings.Join(ps, ","); got != c.protos || v4 != c.v4 {
			t.Errorf("%q: dumps %q v4 %v, want %q %v", c.cfg, got, v4, c.protos, c.v4)
		}
	}
}
