package tunnel

import (
	"os"
	"os/exec"
	"strings"
	"testing"

	"github.com/dsr-agent/dsr-agent/internal/netnstest"
)

// The daemon runs in a unit that refuses modprobe (no CAP_SYS_MODULE,
// @module filtered). ipip and ip6_tunnel still load: the kernel's own
// request_module for a link kind. fou does not (no genl family alias), which
// is why the unit runs `dsr-agent prepare` outside its sandbox. This test
// runs first in the VM (file order), before anything has loaded the modules.
func TestAutoloadWithoutModprobe(t *testing.T) {
	netnstest.RequireRoot(t)
	for _, m := range []string{ModIPIP, ModIP6Tnl, ModFou} {
		if ModuleLoaded(m) {
			if out, err := exec.Command("rmmod", m).CombinedOutput(); err != nil {
				t.Skipf("%s is loaded and cannot be unloaded (%v: %s): nothing to prove here", m, err, strings.TrimSpace(string(out)))
			}
		}
	}
	saved := Modprobe
	Modprobe = "/bin/false"
	t.Cleanup(func() { Modprobe = saved })
	ns := newNS(t)
	for _, m := range []string{ModIPIP, ModIP6Tnl} {
		if err := LoadStep(m).ApplyIn(ns.h, ns.Handle); err != nil {
			if os.Getenv(RequireEnv) == "1" {
				t.Fatalf("load %s without modprobe: %v", m, err)
			}
			t.Skipf("load %s without modprobe: %v", m, err)
		}
		if !ModuleLoaded(m) {
			t.Errorf("%s: the on-demand load reported success, but the module is not loaded", m)
		}
	}
	if _, err := ns.h.LinkByName(DevIPv4); err != nil {
		t.Errorf("no %s after the on-demand load of ipip: %v", DevIPv4, err)
	}
	if err := LoadStep(ModFou).ApplyIn(ns.h, ns.Handle); err == nil {
		if ModuleLoaded(ModFou) {
			t.Log("fou loaded without modprobe on this kernel: prepare is belt and braces here")
		}
	} else if !strings.Contains(err.Error(), "fou") {
		t.Errorf("fou without modprobe: the error does not name the module: %v", err)
	}
}
