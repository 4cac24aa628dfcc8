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
