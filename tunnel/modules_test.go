package tunnel

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// Loadable's verdicts, on made-up module trees: loaded or built in; no
// module support at all (this machine's kernel); no modules installed for
// the running kernel; installed or not per modules.dep; no modprobe to load
// an installed one; and a hidden /lib/modules (the unit's sandbox), which
// proves nothing.
func TestLoadable(t *testing.T) {
	dir := t.TempDir()
	write := func(name, content string) string {
		p := filepath.Join(dir, name)
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, []byte(content), 0o644); err != nil {
			t.Fatal(err)
		}
		return p
	}
	procModules := write("proc/modules", "")
	modprobe := write("sbin/modprobe", "")
	dep := "kernel/net/ipv4/ip_tunnel.ko.zst:\nkernel/net/ipv4/ipip.ko.zst: kernel/net/ipv4/ip_tunnel.ko.zst kernel/net/ipv4/tunnel4.ko.zst\nkernel/net/ipv6/ip6_tunnel.ko.xz: kernel/net/ipv6/tunnel6.ko.xz\n"
	write("lib/modules/6.1.0/modules.dep", dep)
	if err := os.MkdirAll(filepath.Join(dir, "lib/modules/hidden/modules.dep"), 0o755); err != nil {
		t.Fatal(err) // a directory in the file's place: unreadable as a file
	}
	noModprobe := func(string) (string, error) { return "", errors.New("not found") }
	base := moduleEnv{
		procModules: procModules,
		modulesDir:  filepath.Join(dir, "lib/modules/6.1.0"),
		kernelProbe: write("proc/sys/kernel/modprobe", modprobe+"\n"),
		loaded:      func(string) bool { return false },
		lookPath:    noModprobe,
	}
	for _, tc := range []struct {
		name   string
		module string
		env    func(moduleEnv) moduleEnv
		want   string // "" loadable, else part of the error
	}{
		{"loaded", ModIPIP, func(e moduleEnv) moduleEnv {
			e.loaded = func(m string) bool { return m == ModIPIP }
			e.procModules = filepath.Join(dir, "none")
			return e
		}, ""},
		{"no module support", ModIPIP, func(e moduleEnv) moduleEnv { e.procModules = filepath.Join(dir, "none"); return e }, "cannot load modules"},
		{"no modules for this kernel", ModIPIP, func(e moduleEnv) moduleEnv { e.modulesDir = filepath.Join(dir, "lib/modules/6.18.0"); return e }, "no modules are installed"},
		{"installed, kernel's modprobe", ModIPIP, func(e moduleEnv) moduleEnv { return e }, ""},
		{"installed, modprobe on PATH", ModIP6Tnl, func(e moduleEnv) moduleEnv {
			e.kernelProbe = filepath.Join(dir, "none")
			e.lookPath = func(string) (string, error) { return "/sbin/modprobe", nil }
			return e
		}, ""},
		{"installed, no modprobe", ModIPIP, func(e moduleEnv) moduleEnv { e.kernelProbe = filepath.Join(dir, "none"); return e }, "no modprobe"},
		{"not in modules.dep", ModFou, func(e moduleEnv) moduleEnv { return e }, "has no fou module"},
		{"no prefix match", "tunnel", func(e moduleEnv) moduleEnv { return e }, "has no tunnel module"},
		{"hidden /lib/modules", ModFou, func(e moduleEnv) moduleEnv { e.modulesDir = filepath.Join(dir, "lib/modules/hidden"); return e }, ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			err := tc.env(base).loadable(tc.module)
			switch {
			case tc.want == "" && err != nil:
				t.Errorf("loadable(%s) = %v, want nil", tc.module, err)
			case tc.want != "" && (!errors.Is(err, ErrNotLoadable) || !strings.Contains(err.Error(), tc.want)):
				t.Errorf("loadable(%s) = %v, want ErrNotLoadable with %q", tc.module, err, tc.want)
			}
		})
	}
}
