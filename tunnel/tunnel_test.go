package tunnel

import (
	"encoding/json"
	"errors"
	"slices"
	"strings"
	"testing"
)

func commands(steps []Step) []string {
	out := []string{}
	for _, s := range steps {
		out = append(out, s.Command())
	}
	return out
}

func state(mods []string, links []Link, fou ...FouPort) Observed {
	st := Observed{Modules: map[string]bool{}, Links: map[string]Link{}, Fou: fou}
	for _, m := range mods {
		st.Modules[m] = true
	}
	for _, l := range links {
		st.Links[l.Name] = l
	}
	return st
}

var (
	tunlUp     = Link{Name: DevIPv4, Type: "ipip", Up: true}
	tunlDown   = Link{Name: DevIPv4, Type: "ipip"}
	ip6tnlUp   = Link{Name: DevIPv6, Type: "ip6tnl", Up: true}
	gue4       = FouPort{FouKey: FouKey{4, 6080}, Encap: "gue"}
	gue6       = FouPort{FouKey: FouKey{6, 6080}, Encap: "gue"}
	allModules = []string{ModIPIP, ModIP6Tnl, ModFou}
)

// TestNeeded is a sequence of (spec, observed, owned) with the commands
// expected, in order.
func TestNeeded(t *testing.T) {
	for _, tc := range []struct {
		name     string
		spec     Spec
		st       Observed
		owned    Owned
		want     []string
		conflict string
	}{
		{name: "fresh host, ipip",
			spec: Spec{IPv4: true}, st: state(nil, nil),
			want: []string{"modprobe ipip", "ip link set tunl0 up"}},
		{name: "fresh host, gue both families",
			spec: Spec{IPv4: true, IPv6: true, GUEPort: 6080}, st: state(nil, nil),
			want: []string{"modprobe ipip", "modprobe ip6_tunnel", "modprobe fou", "ip link set tunl0 up",
				"ip link set ip6tnl0 up", "ip fou add port 6080 gue", "ip -6 fou add port 6080 gue"}},
		{name: "module loaded, device down",
			spec: Spec{IPv4: true, GUEPort: 6080}, st: state(allModules, []Link{tunlDown}),
			want: []string{"ip link set tunl0 up", "ip fou add port 6080 gue"}},
		{name: "converged",
			spec: Spec{IPv4: true, IPv6: true, GUEPort: 6080}, st: state(allModules, []Link{tunlUp, ip6tnlUp}, gue4, gue6),
			owned: Owned{LinksUp: []string{DevIPv4}, FouPorts: []FouKey{{4, 6080}, {6, 6080}}},
			want:  []string{}},
		{name: "module loaded but no fallback device (fb_tunnels_only_for_init_net)",
			spec: Spec{IPv4: true, IPv6: true}, st: state(allModules, nil),
			want: []string{"ip link add tunl0 type ipip", "ip link set tunl0 up",
				"ip -6 link add ip6tnl0 type ip6tnl mode any", "ip link set ip6tnl0 up"}},
		{name: "gue to ipip: our fou port goes",
			spec: Spec{IPv4: true}, st: state(allModules, []Link{tunlUp}, gue4),
			owned: Owned{LinksUp: []string{DevIPv4}, FouPorts: []FouKey{{4, 6080}}},
			want:  []string{"ip fou del port 6080"}},
		{name: "port change: add the new one, then delete ours",
			spec: Spec{IPv4: true, GUEPort: 7000}, st: state(allModules, []Link{tunlUp}, gue4),
			owned: Owned{FouPorts: []FouKey{{4, 6080}}},
			want:  []string{"ip fou add port 7000 gue", "ip fou del port 6080"}},
		{name: "a foreign gue port on our number is used, never owned",
			spec: Spec{IPv4: true, GUEPort: 6080}, st: state(allModules, []Link{tunlUp}, gue4),
			want: []string{}},
		{name: "a foreign direct port on our number is a conflict; the rest still goes",
			spec: Spec{IPv4: true, GUEPort: 6080},
			st:   state(allModules, []Link{tunlDown}, FouPort{FouKey: FouKey{4, 6080}, Encap: "direct", Protocol: 4}),
			want: []string{"ip link set tunl0 up"}, conflict: "fou port 6080/IPv4 exists with encap direct ipproto 4, not gue"},
		{name: "an IPv6 gue port does not serve IPv4",
			spec: Spec{IPv4: true, GUEPort: 6080}, st: state(allModules, []Link{tunlUp}, gue6),
			want: []string{"ip fou add port 6080 gue"}},
		{name: "tunl0 of another kind",
			spec: Spec{IPv4: true}, st: state(allModules, []Link{{Name: DevIPv4, Type: "gre", Up: true}}),
			want: []string{}, conflict: "tunl0 exists as a gre device, not ipip"},
		{name: "tunnel mode off: only what we own is undone, fou first",
			spec:  Spec{},
			st:    state(allModules, []Link{tunlUp, ip6tnlUp}, gue4, FouPort{FouKey: FouKey{4, 7070}, Encap: "gue"}),
			owned: Owned{LinksUp: []string{DevIPv4}, FouPorts: []FouKey{{4, 6080}}},
			want:  []string{"ip fou del port 6080", "ip link set tunl0 down"}},
		{name: "a device we created is deleted",
			spec: Spec{}, st: state(allModules, []Link{tunlUp}),
			owned: Owned{LinksUp: []string{DevIPv4}, LinksCreated: []string{DevIPv4}},
			want:  []string{"ip link del tunl0"}},
		{name: "owned things already gone: nothing to do",
			spec: Spec{}, st: state(nil, nil),
			owned: Owned{LinksUp: []string{DevIPv4}, FouPorts: []FouKey{{4, 6080}}},
			want:  []string{}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			steps, err := Needed(tc.spec, tc.st, tc.owned)
			if got := commands(steps); !slices.Equal(got, tc.want) {
				t.Errorf("steps:\n got  %q\n want %q", got, tc.want)
			}
			if tc.conflict == "" {
				if err != nil {
					t.Errorf("unexpected error: %v", err)
				}
				return
			}
			var ce *ConflictError
			if !errors.As(err, &ce) || !strings.Contains(err.Error(), tc.conflict) {
				t.Errorf("error = %v, want a ConflictError containing %q", err, tc.conflict)
			}
		})
	}
}

// Applying Needed's steps (simulated on the state) converges: a second pass
// has nothing to do, and Remove then undoes exactly what was recorded.
func TestRecordConverges(t *testing.T) {
	spec := Spec{IPv4: true, GUEPort: 6080}
	foreign := FouPort{FouKey: FouKey{4, 9999}, Encap: "gue"}
	st := state(nil, nil, foreign)
	var owned Owned
	simulate := func(steps []Step) {
		for _, s := range steps {
			switch s.Kind {
			case LoadModule:
				st.Modules[s.Module] = true
				if s.Module == ModIPIP {
					st.Links[DevIPv4] = tunlDown
				}
			case SetUp:
				st.Links[s.Link] = tunlUp
			case SetDown:
				st.Links[s.Link] = tunlDown
			case AddFou:
				st.Fou = append(st.Fou, FouPort{FouKey: s.Fou, Encap: "gue"})
			case DelFou:
				st.Fou = slices.DeleteFunc(st.Fou, func(p FouPort) bool { return p.FouKey == s.Fou })
			}
			owned.Record(s)
		}
	}
	steps, err := Needed(spec, st, owned)
	if err != nil {
		t.Fatal(err)
	}
	simulate(steps)
	if again, _ := Needed(spec, st, owned); len(again) != 0 {
		t.Fatalf("second pass not empty: %q", commands(again))
	}
	b, err := json.Marshal(owned)
	if err != nil {
		t.Fatal(err)
	}
	if got, want := string(b), `{"links_up":["tunl0"],"fou_ports":[{"family":4,"port":6080}]}`; got != want {
		t.Fatalf("owned JSON = %s, want %s", got, want)
	}
	var back Owned
	if err := json.Unmarshal(b, &back); err != nil {
		t.Fatal(err)
	}
	rm := Remove(st, back)
	if got, want := commands(rm), []string{"ip fou del port 6080", "ip link set tunl0 down"}; !slices.Equal(got, want) {
		t.Fatalf("Remove = %q, want %q", got, want)
	}
	simulate(rm)
	if !owned.Empty() {
		t.Fatalf("owned after remove: %+v", owned)
	}
	if !slices.Contains(st.Fou, foreign) {
		t.Fatalf("the foreign fou port went: %+v", st.Fou)
	}
}

func TestRemovalFlag(t *testing.T) {
	for _, s := range []Step{LoadStep(ModIPIP), createLinkStep(DevIPv4), setUpStep(DevIPv4), addFouStep(FouKey{4, 1})} {
		if s.Removal() {
			t.Errorf("%v is not a removal", s)
		}
	}
	for _, s := range []Step{delFouStep(FouKey{4, 1}), setDownStep(DevIPv4), deleteLinkStep(DevIPv4)} {
		if !s.Removal() {
			t.Errorf("%v is a removal", s)
		}
	}
}

func TestOverheadAndMSS(t *testing.T) {
	for _, tc := range []struct {
		encap    Encap
		ipv6     bool
		overhead int
		mss1500  int
	}{
		{EncapIPIP, false, 20, 1440},
		{EncapGUE, false, 32, 1428},
		{EncapIPIP, true, 40, 1400},
		{EncapGUE, true, 52, 1388},
	} {
		if got := Overhead(tc.encap, tc.ipv6); got != tc.overhead {
			t.Errorf("Overhead(%s, ipv6=%v) = %d, want %d", tc.encap, tc.ipv6, got, tc.overhead)
		}
		if got := DefaultMSS(1500, tc.encap, tc.ipv6); got != tc.mss1500 {
			t.Errorf("DefaultMSS(1500, %s, ipv6=%v) = %d, want %d", tc.encap, tc.ipv6, got, tc.mss1500)
		}
	}
}

// Each step shows its command and records what it made (or undid) in Owned.
func TestCommandsAndRecord(t *testing.T) {
	full := func() Owned {
		return Owned{LinksUp: []string{DevIPv4, DevIPv6}, LinksCreated: []string{DevIPv6}, FouPorts: []FouKey{{4, 5555}, {6, 5555}}}
	}
	for _, tc := range []struct {
		s      Step
		want   string
		from   Owned
		record string
	}{
		{LoadStep(ModIP6Tnl), "modprobe ip6_tunnel", Owned{}, `{}`},
		{createLinkStep(DevIPv4), "ip link add tunl0 type ipip", Owned{}, `{"links_created":["tunl0"]}`},
		{createLinkStep(DevIPv6), "ip -6 link add ip6tnl0 type ip6tnl mode any", Owned{}, `{"links_created":["ip6tnl0"]}`},
		{setUpStep(DevIPv6), "ip link set ip6tnl0 up", Owned{LinksUp: []string{DevIPv6}}, `{"links_up":["ip6tnl0"]}`},
		{setDownStep(DevIPv4), "ip link set tunl0 down", full(), `{"links_up":["ip6tnl0"],"links_created":["ip6tnl0"],"fou_ports":[{"family":4,"port":5555},{"family":6,"port":5555}]}`},
		{deleteLinkStep(DevIPv6), "ip link del ip6tnl0", full(), `{"links_up":["tunl0"],"fou_ports":[{"family":4,"port":5555},{"family":6,"port":5555}]}`},
		{addFouStep(FouKey{6, 6080}), "ip -6 fou add port 6080 gue", Owned{}, `{"fou_ports":[{"family":6,"port":6080}]}`},
		{delFouStep(FouKey{4, 5555}), "ip fou del port 5555", full(), `{"links_up":["tunl0","ip6tnl0"],"links_created":["ip6tnl0"],"fou_ports":[{"family":6,"port":5555}]}`},
		{delFouStep(FouKey{6, 5555}), "ip -6 fou del port 5555", Owned{}, `{}`},
	} {
		if got := tc.s.Command(); got != tc.want {
			t.Errorf("Command() = %q, want %q", got, tc.want)
		}
		o := tc.from
		o.Record(tc.s)
		if b, _ := json.Marshal(o); string(b) != tc.record {
			t.Errorf("%s: owned after Record = %s, want %s", tc.want, b, tc.record)
		}
	}
}

// A Step made outside this package has no action: an error, not a panic.
func TestStepWithoutAction(t *testing.T) {
	if err := (Step{Kind: SetUp, Link: DevIPv4}).Apply(nil); err == nil || !strings.Contains(err.Error(), "no action") {
		t.Fatalf("err = %v", err)
	}
}

// The parser TestFouPollCost checks ListFou against (iproute2's ipfou.c
// print_fou_mapping format).
func TestIPFouShowParse(t *testing.T) {
	got := ipFouShow(t, "port 6081 gue -6\nport 6090 ipproto 4\nport 6080 gue local 192.0.2.1\n")
	want := []FouPort{
		{FouKey: FouKey{4, 6080}, Encap: "gue"},
		{FouKey: FouKey{4, 6090}, Encap: "direct", Protocol: 4},
		{FouKey: FouKey{6, 6081}, Encap: "gue"},
	}
	if !slices.Equal(got, want) {
		t.Fatalf("got %+v, want %+v", got, want)
	}
}
