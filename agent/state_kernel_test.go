package agent

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// TestCorruptStateRecovers: after a power cut or a bad edit the state file
// may be anything. apply, status and remove must still work: the file is
// moved aside, ownership rebuilt from labels and tables, and the sysctls
// whose saved values are lost are named, never silently dropped.
func TestCorruptStateRecovers(t *testing.T) {
	cases := map[string]func(t *testing.T, path string){
		"truncated":   func(t *testing.T, p string) { truncateTo(t, p, 20) },
		"garbage":     func(t *testing.T, p string) { writeFile(t, p, "\x00\xff not json at all") },
		"empty":       func(t *testing.T, p string) { writeFile(t, p, "") },
		"null":        func(t *testing.T, p string) { writeFile(t, p, "null\n") },
		"wrong types": func(t *testing.T, p string) { writeFile(t, p, `{"saved_sysctls": [1,2], "addresses": 5}`) },
		"bad values":  func(t *testing.T, p string) { writeFile(t, p, `{"saved_sysctls": {"kernel/core_pattern": "|/tmp/x"}}`) },
		"directory": func(t *testing.T, p string) {
			if err := os.Remove(p); err != nil {
				t.Fatal(err)
			}
			if err := os.Mkdir(p, 0o700); err != nil {
				t.Fatal(err)
			}
		},
		"symlink": func(t *testing.T, p string) {
			target := filepath.Join(t.TempDir(), "elsewhere.json")
			writeFile(t, target, `{}`)
			if err := os.Remove(p); err != nil {
				t.Fatal(err)
			}
			if err := os.Symlink(target, p); err != nil {
				t.Fatal(err)
			}
		},
	}
	for name, corrupt := range cases {
		t.Run(name, func(t *testing.T) {
			th := newTestHost(t)
			th.apply(arptablesCfg) // VIPs on the NIC: losing them would steal the VIP
			th.apply(loopbackCfg)  // and sysctls saved (0) for remove
			statePath := filepath.Join(th.state, stateFile)
			corrupt(t, statePath)

			r := th.status(loopbackCfg)
			if !r.InSync || !strings.Contains(strings.Join(r.Warnings, "\n"), "state file was unreadable") {
				t.Fatalf("status with a corrupt state: %s", r)
			}
			p := th.apply(loopbackCfg)
			if !strings.Contains(p.String(), "lost for net.ipv4.conf.all.arp_ignore") {
				t.Fatalf("apply does not name the lost sysctls:\n%s", p)
			}
			aside, _ := filepath.Glob(statePath + ".corrupt-*")
			if len(aside) != 1 {
				t.Fatalf("corrupt state not moved aside: %v", aside)
			}
			if st, err := os.Lstat(statePath); err != nil || !st.Mode().IsRegular() {
				t.Fatalf("state not rewritten as a regular file: %v %v", st, err)
			}
			th.requireInSync(loopbackCfg)
			done, err := th.host.Remove()
			if err != nil {
				t.Fatal(err)
			}
			th.requireNoVIPs()
			if !strings.Contains(done.String(), "net.ipv4.conf.all.arp_ignore") {
				t.Fatalf("remove does not name the sysctls it cannot restore:\n%s", done)
			}
		})
	}
}

// TestStateNullDoesNotLoseSysctlsSilently: `null` used to parse as an empty
// state: remove exited 0 and arp_ignore stayed 1 for good, unreported.
func TestStateNullDoesNotLoseSysctlsSilently(t *testing.T) {
	th := newTestHost(t)
	th.apply(loopbackCfg)
	writeFile(t, filepath.Join(th.state, stateFile), "null")
	done, err := th.host.Remove()
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(done.String(), "values found before dsr-agent are lost") {
		t.Fatalf("remove after `null` state says nothing of the lost values:\n%s", done)
	}
}

// TestUnsafeStateDirRefused: a state dir another user can change decides
// what root deletes; it is refused before anything is read or changed.
func TestUnsafeStateDirRefused(t *testing.T) {
	base := t.TempDir()
	mk := func(path string, mode os.FileMode, uid int) string {
		if err := os.MkdirAll(path, 0o700); err != nil {
			t.Fatal(err)
		}
		if err := os.Chmod(path, mode); err != nil {
			t.Fatal(err)
		}
		if err := os.Lchown(path, uid, uid); err != nil {
			t.Fatal(err)
		}
		return path
	}
	userDir := mk(filepath.Join(base, "user"), 0o755, 65534)
	worldDir := mk(filepath.Join(base, "world"), 0o777, 0)
	stickyDir := mk(filepath.Join(base, "sticky"), os.ModeSticky|0o777, 0)
	userInSticky := mk(filepath.Join(stickyDir, "theirs"), 0o700, 65534)
	rootInSticky := mk(filepath.Join(stickyDir, "ours"), 0o700, 0)
	link := filepath.Join(stickyDir, "link")
	if err := os.Symlink(rootInSticky, link); err != nil {
		t.Fatal(err)
	}
	if err := os.Lchown(link, 65534, 65534); err != nil {
		t.Fatal(err)
	}
	for _, bad := range []string{
		filepath.Join(userDir, "state"), filepath.Join(worldDir, "state"), worldDir,
		filepath.Join(userInSticky, "state"), link, filepath.Join(link, "state"),
		mk(filepath.Join(base, "groupw"), 0o770, 0),
	} {
		if err := CheckStateDir(bad); !errors.Is(err, ErrUnsafeStateDir) {
			t.Errorf("CheckStateDir(%s) = %v, want ErrUnsafeStateDir", bad, err)
		}
	}
	for _, good := range []string{filepath.Join(rootInSticky, "state"), rootInSticky, filepath.Join(base, "new", "deeper")} {
		if err := CheckStateDir(good); err != nil {
			t.Errorf("CheckStateDir(%s) = %v, want nil", good, err)
		}
	}

	// Through the host: nothing read, nothing changed.
	th := newTestHost(t)
	h, err := OpenHostAt(filepath.Join(userDir, "state"), th.ns.Handle)
	if err != nil {
		t.Fatal(err)
	}
	defer h.Close()
	before := th.foreign()
	if _, err := h.Apply(mustConfig(t, loopbackCfg)); !errors.Is(err, ErrUnsafeStateDir) {
		t.Fatalf("apply with an unsafe state dir: %v", err)
	}
	if _, err := h.Remove(); !errors.Is(err, ErrUnsafeStateDir) {
		t.Fatalf("remove with an unsafe state dir: %v", err)
	}
	th.requireNoVIPs()
	if after := th.foreign(); after != before {
		t.Fatalf("host changed:\n%s\n%s", before, after)
	}
}

// TestPlantedLockSymlink: a `lock` symlink must not make root create or lock
// another file.
func TestPlantedLockSymlink(t *testing.T) {
	th := newTestHost(t)
	if err := os.MkdirAll(th.state, 0o700); err != nil {
		t.Fatal(err)
	}
	victim := filepath.Join(t.TempDir(), "created-by-root")
	if err := os.Symlink(victim, filepath.Join(th.state, "lock")); err != nil {
		t.Fatal(err)
	}
	if _, err := th.host.Apply(mustConfig(t, loopbackCfg)); err == nil {
		t.Fatal("apply followed a planted lock symlink")
	}
	if _, err := os.Lstat(victim); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("a file was created through the lock symlink: %v", err)
	}
	th.requireNoVIPs()
}

// TestForgedStateNeverDeletesHostAddress: a state file claiming the host's
// own addresses (primary /24, a primary /32, an IPv6 address on the NIC)
// must not make remove delete them.
func TestForgedStateNeverDeletesHostAddress(t *testing.T) {
	th := newTestHost(t)
	th.ns.Exec(t, "ip", "addr", "add", "203.0.113.7/32", "dev", "lo")
	th.ns.AddDummy(t, "eth9", "203.0.113.9/32")
	writeFile(t, filepath.Join(th.state, stateFile), `{"addresses": [
		{"link": "eth0.100", "prefix": "198.51.100.21/24"},
		{"link": "eth9", "prefix": "203.0.113.9/32"},
		{"link": "eth0.100", "prefix": "2001:db8:1::21/64"}]}`)
	// Global addresses only: link-local ones appear on their own schedule.
	before := th.ns.Exec(t, "ip", "-o", "addr", "show", "scope", "global")
	if _, err := th.host.Remove(); err != nil {
		t.Fatal(err)
	}
	if after := th.ns.Exec(t, "ip", "-o", "addr", "show", "scope", "global"); after != before {
		t.Fatalf("remove deleted host addresses named by a forged state:\n--- before\n%s\n--- after\n%s", before, after)
	}
}

func writeFile(t *testing.T, path, data string) {
	t.Helper()
	if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(path, []byte(data), 0o600); err != nil {
		t.Fatal(err)
	}
}

func truncateTo(t *testing.T, path string, n int64) {
	t.Helper()
	if err := os.Truncate(path, n); err != nil {
		t.Fatal(err)
	}
}
