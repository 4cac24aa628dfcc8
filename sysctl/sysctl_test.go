package sysctl

import (
	"errors"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"

	"github.com/dsr-agent/dsr-agent/internal/netnstest"
)

func TestPathString(t *testing.T) {
	cases := map[string]Path{
		"net.ipv4.conf.all.arp_ignore":      ConfPath("all", "arp_ignore"),
		"net/ipv4/conf/eth0.100/arp_ignore": ConfPath("eth0.100", "arp_ignore"),
	}
	for want, p := range cases {
		if got := p.String(); got != want {
			t.Errorf("%v.String() = %q, want %q", []string(p), got, want)
		}
		if got := ParseKey(p.Key()); !reflect.DeepEqual(got, p) {
			t.Errorf("ParseKey(Key(%v)) = %v", []string(p), got)
		}
	}
}

func TestProcRejectsTraversal(t *testing.T) {
	p := &Proc{Root: t.TempDir(), NS: -1}
	if _, err := p.Read(Path{"net", "..", "x"}); err == nil {
		t.Fatal("path with .. accepted")
	}
	if err := p.Write(Path{"net", "a/b"}, "1"); err == nil {
		t.Fatal("component with / accepted")
	}
}

func TestProcWriteDoesNotCreate(t *testing.T) {
	root := t.TempDir()
	p := &Proc{Root: root, NS: -1}
	err := p.Write(ConfPath("nosuch0", "arp_ignore"), "1")
	if !errors.Is(err, ErrNotFound) {
		t.Fatalf("Write to missing sysctl: err = %v, want ErrNotFound", err)
	}
	if _, err := os.Stat(filepath.Join(root, "net")); !os.IsNotExist(err) {
		t.Fatalf("Write created files under root: %v", err)
	}
}

// TestProcInNamespace writes through a VLAN interface whose name has a dot,
// in a throwaway namespace, and reads the kernel's view back.
func TestProcInNamespace(t *testing.T) {
	ns := netnstest.New(t)
	// No vlan driver here: a veth named like a VLAN sub-interface exercises
	// the same dotted /proc/sys path.
	ns.AddDummy(t, "d0.100")
	p := &Proc{Root: "/proc/sys", NS: ns.Handle}
	for path, v := range map[string]string{"all/arp_ignore": "1", "d0.100/arp_ignore": "1", "d0.100/arp_announce": "2"} {
		iface, key, _ := strings.Cut(path, "/")
		if err := p.Write(ConfPath(iface, key), v); err != nil {
			t.Fatal(err)
		}
	}
	if got := ns.Sysctl(t, "net", "ipv4", "conf", "d0.100", "arp_announce"); got != "2" {
		t.Fatalf("d0.100 arp_announce = %s, want 2", got)
	}
	if got := ns.Sysctl(t, "net", "ipv4", "conf", "all", "arp_ignore"); got != "1" {
		t.Fatalf("all arp_ignore = %s, want 1", got)
	}
	// The host's own value must be untouched by a write in the namespace.
	host, err := os.ReadFile("/proc/sys/net/ipv4/conf/all/arp_announce")
	if err != nil {
		t.Fatal(err)
	}
	if v, err := p.Read(ConfPath("d0.100", "arp_ignore")); err != nil || v != "1" {
		t.Fatalf("Read d0.100 arp_ignore = %q, %v", v, err)
	}
	t.Logf("host all.arp_announce stays %s", host)
}
