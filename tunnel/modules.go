package tunnel

import (
	"bufio"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
)

// ErrNotLoadable is a module this kernel cannot get: not loaded, not built
// in, and nothing on the host that could load it.
var ErrNotLoadable = errors.New("kernel module not loadable")

// Loadable tells, without loading anything, whether module can be had: nil
// when it is loaded or built in, or installed for the running kernel with a
// modprobe to load it; an error wrapping ErrNotLoadable saying why not. It
// answers nil when nothing readable here proves the module missing (the
// packaged unit hides /lib/modules from the daemon: there `dsr-agent
// prepare` has already loaded what exists, and the load step itself is the
// test).
//
// The callers check this before the first change of a plan: a mode switch
// to tunnel on a kernel without ipip must be refused while the VIPs are
// still where they were, not fail halfway.
func Loadable(module string) error {
	var u unix.Utsname
	release := ""
	if unix.Uname(&u) == nil {
		release = unix.ByteSliceToString(u.Release[:])
	}
	return moduleEnv{
		procModules: "/proc/modules",
		modulesDir:  filepath.Join("/lib/modules", release),
		kernelProbe: "/proc/sys/kernel/modprobe",
		loaded:      ModuleLoaded,
		lookPath:    exec.LookPath,
	}.loadable(module)
}

// moduleEnv is where Loadable looks (paths and lookups replaceable in tests).
type moduleEnv struct {
	procModules string // absent: a kernel built without module support
	modulesDir  string // /lib/modules/RELEASE
	kernelProbe string // the kernel's usermode modprobe path (request_module)
	loaded      func(string) bool
	lookPath    func(string) (string, error)
}

func (e moduleEnv) loadable(module string) error {
	if e.loaded(module) {
		return nil
	}
	if _, err := os.Stat(e.procModules); errors.Is(err, fs.ErrNotExist) {
		return fmt.Errorf("%w: %s is not built into this kernel, and the kernel cannot load modules (no %s: built without CONFIG_MODULES)",
			ErrNotLoadable, module, e.procModules)
	}
	depPath := filepath.Join(e.modulesDir, "modules.dep")
	f, err := os.Open(depPath)
	if errors.Is(err, fs.ErrNotExist) {
		if _, derr := os.Stat(e.modulesDir); errors.Is(derr, fs.ErrNotExist) {
			return fmt.Errorf("%w: %s is not loaded and no modules are installed for the running kernel (no %s)", ErrNotLoadable, module, e.modulesDir)
		}
	}
	if err != nil {
		// Hidden (the unit's ProtectKernelModules) or unreadable: nothing
		// proves the module missing.
		return nil
	}
	defer f.Close()
	found, err := depLists(f, module)
	if err != nil {
		return nil
	}
	if !found {
		return fmt.Errorf("%w: the running kernel has no %s module (not in %s)", ErrNotLoadable, module, depPath)
	}
	if _, err := e.lookPath(Modprobe); err == nil {
		return nil
	}
	// The kernel's own request_module (how the daemon loads ipip) runs
	// the modprobe named here, in the initial namespaces.
	if b, err := os.ReadFile(e.kernelProbe); err == nil {
		if p := strings.TrimSpace(string(b)); p != "" {
			if _, err := os.Stat(p); err == nil {
				return nil
			}
		}
	}
	return fmt.Errorf("%w: %s is installed but not loaded, and there is no %s (kmod) to load it", ErrNotLoadable, module, Modprobe)
}

// depLists reports whether modules.dep has an entry for module: a line
// "kernel/net/ipv4/ipip.ko.xz: ..." (any compression; '-' and '_' are the
// same character in module names).
func depLists(f *os.File, module string) (bool, error) {
	want := strings.ReplaceAll(module, "-", "_")
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 64*1024), 1024*1024)
	for sc.Scan() {
		path, _, ok := strings.Cut(sc.Text(), ":")
		if !ok {
			continue
		}
		name := filepath.Base(path)
		i := strings.Index(name, ".ko")
		if i < 0 {
			continue
		}
		if strings.ReplaceAll(name[:i], "-", "_") == want {
			return true, nil
		}
	}
	return false, sc.Err()
}

// ModuleLoaded reports whether a module is loaded or built into the kernel.
// /sys/module/NAME exists for loaded modules and for built-in ones with
// parameters; modules.builtin lists the rest.
func ModuleLoaded(name string) bool {
	if _, err := os.Stat("/sys/module/" + name); err == nil {
		return true
	}
	if builtinModules()[name] {
		return true
	}
	// A built-in fou without parameters has no /sys/module entry, and the
	// unit hides modules.builtin: ask generic netlink for its families (a
	// dump, which never loads a module).
	return name == ModFou && genlFamilyPresent("fou")
}

func genlFamilyPresent(name string) bool {
	fams, err := netlink.GenlFamilyList()
	if err != nil {
		return false
	}
	for _, f := range fams {
		if f.Name == name {
			return true
		}
	}
	return false
}

// builtinModules is modules.builtin, read once: the fou poll asks every
// second, and the file does not change while the kernel runs.
var builtinModules = sync.OnceValue(func() map[string]bool {
	out := map[string]bool{}
	var u unix.Utsname
	if unix.Uname(&u) != nil {
		return out
	}
	b, err := os.ReadFile("/lib/modules/" + unix.ByteSliceToString(u.Release[:]) + "/modules.builtin")
	if err != nil {
		return out
	}
	for _, l := range strings.Split(string(b), "\n") {
		if i := strings.LastIndex(l, "/"); i >= 0 && strings.HasSuffix(l, ".ko") {
			out[strings.TrimSuffix(l[i+1:], ".ko")] = true
		}
	}
	return out
})

// probeLink is the name of the device briefly created to make the kernel
// load a tunnel module (the module's own fallback device then appears).
const probeLink = "dsr-probe0"

// autoload makes the kernel load a tunnel module through its alias
// (rtnl-link-ipip, rtnl-link-ip6tnl): a link of the module's kind, created
// and at once deleted. fou has no such alias (fou_core.c declares no
// MODULE_ALIAS_GENL_FAMILY), so only modprobe loads it; the packaged unit
// does that outside its sandbox (ExecStartPre=+dsr-agent prepare).
func autoload(h *netlink.Handle, module string) error {
	var l netlink.Link
	switch module {
	case ModIPIP:
		l = &netlink.Iptun{LinkAttrs: netlink.LinkAttrs{Name: probeLink}}
	case ModIP6Tnl:
		l = &netlink.Ip6tnl{LinkAttrs: netlink.LinkAttrs{Name: probeLink}}
	default:
		return fmt.Errorf("no on-demand load for module %s", module)
	}
	add, del := netlink.LinkAdd, netlink.LinkDel // nil h: the caller's namespace
	if h != nil {
		add, del = h.LinkAdd, h.LinkDel
	}
	err := add(l)
	if errors.Is(err, unix.EEXIST) {
		// The module loaded, and its fallback device (no local, no remote,
		// the probe's own parameters) already takes that slot:
		// newlink only gets that far once the kind exists.
		return nil
	}
	if err != nil {
		return fmt.Errorf("ip link add %s type %s: %w", probeLink, l.Type(), err)
	}
	return del(l)
}

// Modprobe is the command a LoadModule step runs (a variable for tests).
var Modprobe = "modprobe"

// loadModule loads a kernel module: first by asking the kernel to load it on
// demand, as `ip link add ... type ipip` does: request_module runs in the
// kernel, so it also works from the hardened unit (ProtectKernelModules, no
// CAP_SYS_MODULE), where modprobe itself is refused. A link of its kind or
// its netlink family exists then: loaded (or built in, which /sys/module
// does not always show). Else modprobe. h nil: the caller's namespace.
func loadModule(h *netlink.Handle, module string) error {
	if autoload(h, module) == nil {
		return nil
	}
	out, err := exec.Command(Modprobe, module).CombinedOutput()
	if err == nil {
		return nil
	}
	if errors.Is(err, exec.ErrNotFound) {
		return fmt.Errorf("load the %s module: no %s (kmod) on PATH: %w", module, Modprobe, err)
	}
	msg := strings.TrimSpace(string(out))
	if strings.Contains(msg, "not found") {
		return fmt.Errorf("kernel has no %s module (modprobe %s: %s): %w", module, module, msg, err)
	}
	return fmt.Errorf("modprobe %s: %s: %w", module, msg, err)
}
