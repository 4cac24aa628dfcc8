//go:build firewalld

package firewalld

// Built with the `firewalld` tag only (make test-firewalld), like the e2e and
// crash tests, so test-unit/test-root do not run them a second time.
//
// Tests against a real firewalld (Debian's firewalld 1.3, nftables backend),
// run as root in a throwaway network namespace with its own D-Bus system bus
// and private copies of /etc/firewalld and /usr/lib/firewalld: the host's
// firewall, bus and configuration are never touched (the test proves
// /etc/firewalld is unchanged).

import (
	"bytes"
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"io/fs"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/dsr-agent/dsr-agent/internal/netnstest"
)

// busConfig is the system bus's own policy (Debian's system.conf: deny by
// default, only the bus itself may be called) plus firewalld's packaged
// policy file, so the calls are allowed exactly as on a real host.
const busConfig = `<!DOCTYPE busconfig PUBLIC "-//freedesktop//DTD D-Bus Bus Configuration 1.0//EN"
 "http://www.freedesktop.org/standards/dbus/1.0/busconfig.dtd">
<busconfig>
  <type>system</type>
  <auth>EXTERNAL</auth>
  <listen>unix:path=%s</listen>
  <policy context="default">
    <allow user="*"/>
    <deny own="*"/>
    <deny send_type="method_call"/>
    <allow send_type="signal"/>
    <allow send_requested_reply="true" send_type="method_return"/>
    <allow send_requested_reply="true" send_type="error"/>
    <allow receive_type="method_call"/>
    <allow receive_type="method_return"/>
    <allow receive_type="error"/>
    <allow receive_type="signal"/>
    <allow send_destination="org.freedesktop.DBus" send_interface="org.freedesktop.DBus"/>
    <allow send_destination="org.freedesktop.DBus" send_interface="org.freedesktop.DBus.Introspectable"/>
    <allow send_destination="org.freedesktop.DBus" send_interface="org.freedesktop.DBus.Properties"/>
  </policy>
  <include>%s</include>
</busconfig>
`

const firewalldBusPolicy = "/usr/share/dbus-1/system.d/FirewallD.conf"

// lab is one firewalld on a private bus in a network namespace.
type lab struct {
	ns      *netnstest.NS
	client  *netnstest.NS // a second namespace: the director/client side
	dir     string
	busAddr string
	c       *Client
	log     *bytes.Buffer
}

func needTools(t *testing.T) {
	t.Helper()
	var missing []string
	for _, p := range []string{"firewalld", "firewall-cmd", "dbus-daemon"} {
		if _, err := exec.LookPath(p); err != nil {
			missing = append(missing, p)
		}
	}
	if _, err := os.Stat(firewalldBusPolicy); err != nil {
		missing = append(missing, firewalldBusPolicy)
	}
	if len(missing) == 0 {
		return
	}
	msg := fmt.Sprintf("missing %s (make deps-firewalld, or apt-get install $(mk/install-deps.sh --list firewalld))", strings.Join(missing, ", "))
	if os.Getenv(netnstest.RequireRootEnv) == "1" {
		t.Fatal(msg)
	}
	t.Skip(msg)
}

// treeDigest hashes every file's path, mode and content under dir.
func treeDigest(t *testing.T, dir string) string {
	t.Helper()
	h := sha256.New()
	err := filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		info, err := d.Info()
		if err != nil {
			return err
		}
		fmt.Fprintf(h, "%s %v\n", p, info.Mode())
		if d.Type().IsRegular() {
			b, err := os.ReadFile(p)
			if err != nil {
				return err
			}
			h.Write(b)
		}
		return nil
	})
	if err != nil {
		t.Fatalf("digest %s: %v", dir, err)
	}
	return fmt.Sprintf("%x", h.Sum(nil))
}

func startLab(t *testing.T) *lab {
	t.Helper()
	netnstest.RequireRoot(t)
	needTools(t)
	l := &lab{ns: netnstest.New(t), client: netnstest.New(t), log: &bytes.Buffer{}}
	// The LB-facing NIC: a cable to the client namespace.
	netnstest.Connect(t, l.ns, "lbnet0", []string{"10.99.0.2/24"}, l.client, "lbcl0", []string{"10.99.0.10/24"})

	l.dir = t.TempDir()
	for _, cp := range [][2]string{{"/etc/firewalld", "system"}, {"/usr/lib/firewalld", "default"}} {
		if out, err := exec.Command("cp", "-a", cp[0], filepath.Join(l.dir, cp[1])).CombinedOutput(); err != nil {
			t.Fatalf("copy %s: %v\n%s", cp[0], err, out)
		}
	}
	sock := filepath.Join(l.dir, "bus")
	l.busAddr = "unix:path=" + sock
	conf := filepath.Join(l.dir, "bus.conf")
	if err := os.WriteFile(conf, fmt.Appendf(nil, busConfig, sock, firewalldBusPolicy), 0o644); err != nil {
		t.Fatal(err)
	}
	bus := exec.Command("ip", "netns", "exec", l.ns.Name, "dbus-daemon", "--config-file="+conf, "--nofork", "--nopidfile")
	bus.Stdout, bus.Stderr = l.log, l.log
	startAndReap(t, bus, "dbus-daemon")
	waitFor(t, 10*time.Second, "dbus-daemon socket", func() error { _, err := os.Stat(sock); return err })

	// ip netns exec gives firewalld a mount namespace of its own (slave to
	// the host's); a tmpfs over /run there keeps its temp files
	// (/run/firewalld) and any look at the host's real system bus away.
	script := `mount -t tmpfs tmpfs /run && exec firewalld --nofork --nopid --log-target console --system-config "$1" --default-config "$2"`
	fw := exec.Command("ip", "netns", "exec", l.ns.Name, "sh", "-c", script, "sh",
		filepath.Join(l.dir, "system"), filepath.Join(l.dir, "default"))
	fw.Env = append(os.Environ(), "DBUS_SYSTEM_BUS_ADDRESS="+l.busAddr)
	fw.Stdout, fw.Stderr = l.log, l.log
	startAndReap(t, fw, "firewalld")

	ctx := context.Background()
	var err error
	l.c, err = ConnectAddress(ctx, l.busAddr)
	if err != nil {
		t.Fatalf("%v\nlog:\n%s", err, l.log)
	}
	t.Cleanup(func() { _ = l.c.Close() })
	// firewalld owns its name early and says RUNNING once the rules are in.
	waitFor(t, 90*time.Second, "firewalld state RUNNING", func() error {
		v, err := l.c.property(ctx, l.c.obj, ifaceMain, "state")
		if err != nil {
			return err
		}
		if s, _ := v.Value().(string); s != "RUNNING" {
			return fmt.Errorf("state %q", s)
		}
		return nil
	})
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("dbus-daemon and firewalld output:\n%s", l.log)
		}
	})
	return l
}

// startAndReap starts cmd and stops it (SIGTERM, then SIGKILL) at cleanup.
func startAndReap(t *testing.T, cmd *exec.Cmd, what string) {
	t.Helper()
	if err := cmd.Start(); err != nil {
		t.Fatalf("start %s: %v", what, err)
	}
	done := make(chan struct{})
	go func() { _ = cmd.Wait(); close(done) }()
	t.Cleanup(func() {
		_ = cmd.Process.Signal(syscall.SIGTERM)
		select {
		case <-done:
		case <-time.After(15 * time.Second):
			_ = cmd.Process.Kill()
			<-done
		}
	})
}

func waitFor(t *testing.T, max time.Duration, what string, f func() error) {
	t.Helper()
	deadline := time.Now().Add(max)
	for {
		err := f()
		if err == nil {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("waiting for %s: %v", what, err)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// firewallCmd runs firewall-cmd in the namespace against the private bus.
// installServiceXML puts packaging/firewalld/dsr-agent.xml where the
// packages install it (/usr/lib/firewalld/services), in the private copy.
func (l *lab) installServiceXML(t *testing.T) {
	t.Helper()
	xml, err := os.ReadFile("../packaging/firewalld/dsr-agent.xml")
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(l.dir, "default/services/dsr-agent.xml"), xml, 0o644); err != nil {
		t.Fatal(err)
	}
}

func (l *lab) firewallCmd(t *testing.T, line string) string {
	t.Helper()
	args := strings.Fields(line)
	if args[0] != "firewall-cmd" {
		t.Fatalf("not a firewall-cmd line: %q", line)
	}
	out, err := l.firewallCmdErr(line)
	if err != nil {
		t.Fatalf("%s: %v\n%s", line, err, out)
	}
	return out
}

func (l *lab) firewallCmdErr(line string) (string, error) {
	args := strings.Fields(line)
	cmd := exec.Command("ip", append([]string{"netns", "exec", l.ns.Name}, args...)...)
	cmd.Env = append(os.Environ(), "DBUS_SYSTEM_BUS_ADDRESS="+l.busAddr)
	out, err := cmd.CombinedOutput()
	return string(out), err
}

// listen opens a TCP listener on addr inside the lab's namespace.
func (l *lab) listen(t *testing.T, addr string) {
	t.Helper()
	var ln net.Listener
	l.ns.Do(t, func() {
		var err error
		if ln, err = net.Listen("tcp", addr); err != nil {
			t.Fatalf("listen %s: %v", addr, err)
		}
	})
	t.Cleanup(func() { _ = ln.Close() })
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			_ = c.Close()
		}
	}()
}

// dial connects from the client namespace: what the director sees.
func (l *lab) dial(t *testing.T, addr string) error {
	t.Helper()
	var err error
	l.client.Do(t, func() {
		var c net.Conn
		c, err = net.DialTimeout("tcp", addr, 2*time.Second)
		if err == nil {
			_ = c.Close()
		}
	})
	return err
}

func TestRealFirewalld(t *testing.T) {
	etcBefore := treeDigest(t, "/etc/firewalld")
	l := startLab(t)
	ctx := context.Background()

	ver, err := l.c.Version(ctx)
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("firewalld %s", ver)

	// An interface firewalld was never told about is in the default zone.
	zone, isDefault, err := l.c.ZoneOfInterface(ctx, "lbnet0")
	if err != nil {
		t.Fatal(err)
	}
	if zone != "public" || !isDefault {
		t.Fatalf("zone of lbnet0 = %q (default %v), want public (the default zone)", zone, isDefault)
	}

	// Positive control for "open through a service": public has ssh.
	if v, err := l.c.Allows(ctx, "public", 22, "tcp"); err != nil || v.Status != Open || v.How != "service ssh" {
		t.Fatalf("public 22/tcp = %+v, %v; want open by service ssh", v, err)
	}

	req := Request{Wants: []Want{
		{Kind: VIPPort, Iface: "lbnet0", Addr: "10.99.0.100", Port: 80},
		{Kind: Health, Iface: "lbnet0", Addr: "10.99.0.2", Port: 8558},
		{Kind: AgentCheck, Iface: "lbnet0", Addr: "10.99.0.2", Port: 3333},
	}}
	l.listen(t, "10.99.0.2:8558")
	l.listen(t, "10.99.0.2:3333")
	l.listen(t, "0.0.0.0:80")

	// The kernel agrees with the finding: the default zone rejects 8558.
	if err := l.dial(t, "10.99.0.2:8558"); err == nil {
		t.Fatal("health port 8558 reachable through the default zone; want it rejected (firewalld not filtering?)")
	} else {
		t.Logf("health port before the fix: %v", err)
	}
	if err := l.dial(t, "10.99.0.2:80"); err == nil {
		t.Fatal("port 80 reachable through the default zone; want it rejected")
	}

	// firewalld runs and the package is not installed yet: the health and
	// agent-check ports can only be opened by port.
	in, err := Gather(ctx, l.c, req)
	if err != nil {
		t.Fatal(err)
	}
	if in.Service != ServiceAbsent {
		t.Fatalf("dsr-agent service before install: %s, want absent", in.Service)
	}
	checkFixes(t, "before install", Findings(in), map[string][]string{
		"vip 10.99.0.100 port 80/tcp":            {"firewall-cmd --zone=public --add-port=80/tcp", "firewall-cmd --permanent --zone=public --add-port=80/tcp"},
		"health on 10.99.0.2 port 8558/tcp":      {"firewall-cmd --zone=public --add-port=8558/tcp", "firewall-cmd --permanent --zone=public --add-port=8558/tcp"},
		"agent-check on 10.99.0.2 port 3333/tcp": {"firewall-cmd --zone=public --add-port=3333/tcp", "firewall-cmd --permanent --zone=public --add-port=3333/tcp"},
	})

	// The package is installed while firewalld runs: its permanent
	// configuration picks the file up (it watches the directory), its
	// runtime does not until a reload, and the fix says so.
	l.installServiceXML(t)
	waitFor(t, 30*time.Second, "firewalld's permanent config to see dsr-agent.xml", func() error {
		st, _, err := l.c.ServiceStateOf(ctx, ServiceName)
		if err != nil {
			return err
		}
		if st != ServiceInstalled {
			return fmt.Errorf("service state %s", st)
		}
		return nil
	})
	if in, err = Gather(ctx, l.c, req); err != nil {
		t.Fatal(err)
	}
	got := Findings(in)
	checkFixes(t, "installed, not loaded", got, map[string][]string{
		"vip 10.99.0.100 port 80/tcp":            {"firewall-cmd --zone=public --add-port=80/tcp", "firewall-cmd --permanent --zone=public --add-port=80/tcp"},
		"health on 10.99.0.2 port 8558/tcp":      {"firewall-cmd --permanent --zone=public --add-service=dsr-agent", "firewall-cmd --reload"},
		"agent-check on 10.99.0.2 port 3333/tcp": {"firewall-cmd --permanent --zone=public --add-service=dsr-agent", "firewall-cmd --reload"},
	})
	t.Logf("findings, package installed while firewalld ran:\n%s", render(got))
	// Negative control: the runtime line really would fail here.
	if out, err := l.firewallCmdErr("firewall-cmd --zone=public --add-service=dsr-agent"); err == nil || !strings.Contains(out, "INVALID_SERVICE") {
		t.Fatalf("runtime --add-service before reload: %v %s; want INVALID_SERVICE", err, out)
	}

	// Apply exactly the lines the findings print (the service lines come
	// twice, for health and agent-check; ALREADY_ENABLED is exit 0).
	for _, f := range got {
		for _, line := range f.Fix {
			l.firewallCmd(t, line)
		}
	}
	if in, err = Gather(ctx, l.c, req); err != nil {
		t.Fatal(err)
	}
	if f := Findings(in); len(f) != 0 {
		t.Fatalf("findings after the fix, want none:\n%s", render(f))
	}
	for _, ch := range in.Checked {
		t.Logf("%s: %s (%s)", subjectOf(ch.Want), ch.Admission.Status, ch.Admission.How)
	}
	for _, p := range []string{"8558", "3333", "80"} {
		if err := l.dial(t, "10.99.0.2:"+p); err != nil {
			t.Fatalf("port %s after the fix: %v", p, err)
		}
	}

	// What status pays per call: 100 VIP ports on one interface cost one
	// zone read (Gather caches per zone), not 100.
	many := Request{}
	for p := uint16(20000); p < 20100; p++ {
		many.Wants = append(many.Wants, Want{Kind: VIPPort, Iface: "lbnet0", Addr: "10.99.0.100", Port: p})
	}
	start := time.Now()
	if in, err = Gather(ctx, l.c, many); err != nil || len(in.Checked) != 100 {
		t.Fatalf("100 ports: %d checked, %v", len(in.Checked), err)
	}
	t.Logf("Gather, 100 VIP ports on one interface: %v", time.Since(start))

	// The --permanent lines survive a reload; they went to the private
	// system config, not /etc/firewalld.
	l.firewallCmd(t, "firewall-cmd --reload")
	if in, err = Gather(ctx, l.c, req); err != nil {
		t.Fatal(err)
	}
	if f := Findings(in); len(f) != 0 {
		t.Fatalf("findings after reload, want none:\n%s", render(f))
	}
	pub, err := os.ReadFile(filepath.Join(l.dir, "system/zones/public.xml"))
	if err != nil {
		t.Fatalf("the --permanent lines did not write the private system config: %v", err)
	}
	if !bytes.Contains(pub, []byte(`<service name="dsr-agent"/>`)) || !bytes.Contains(pub, []byte(`port="80"`)) {
		t.Fatalf("private public.xml lacks the service or port:\n%s", pub)
	}

	// Loaded in the runtime, removed from the zone at runtime only: now the
	// runtime line works and is printed first.
	l.firewallCmd(t, "firewall-cmd --zone=public --remove-service=dsr-agent")
	if in, err = Gather(ctx, l.c, req); err != nil {
		t.Fatal(err)
	}
	got = Findings(in)
	checkFixes(t, "loaded", got, map[string][]string{
		"health on 10.99.0.2 port 8558/tcp":      {"firewall-cmd --zone=public --add-service=dsr-agent", "firewall-cmd --permanent --zone=public --add-service=dsr-agent"},
		"agent-check on 10.99.0.2 port 3333/tcp": {"firewall-cmd --zone=public --add-service=dsr-agent", "firewall-cmd --permanent --zone=public --add-service=dsr-agent"},
	})
	l.firewallCmd(t, got[0].Fix[0])
	if in, err = Gather(ctx, l.c, req); err != nil {
		t.Fatal(err)
	}
	if f := Findings(in); len(f) != 0 {
		t.Fatalf("findings after the runtime line, want none:\n%s", render(f))
	}

	// Check, as validate and status call it, through the system bus
	// address of the environment: everything open, nothing to say.
	t.Setenv("DBUS_SYSTEM_BUS_ADDRESS", l.busAddr)
	if f, err := Check(ctx, req); err != nil || len(f) != 0 {
		t.Fatalf("Check after the fixes: %v, %v; want nothing", f, err)
	}
	if f, err := Check(ctx, Request{Wants: []Want{{Kind: VIPPort, Iface: "lbnet0", Addr: "10.99.0.100", Port: 8081}}}); err != nil || len(f) != 1 {
		t.Fatalf("Check of closed 8081: %v, %v; want one finding", f, err)
	}

	// An ordinary user (validate needs no privileges): firewalld shows its
	// zones only to root, and Gather says so once, as ErrNotAuthorized.
	l.gatherAsNobody(t)

	// firewalld mode: VIP ports are not judged by zone; redirects are.
	in, err = Gather(ctx, l.c, Request{VIPsRedirected: true, Wants: []Want{{Kind: VIPPort, Iface: "lbnet0", Addr: "10.99.0.100", Port: 443}}})
	if err != nil {
		t.Fatal(err)
	}
	if len(in.Checked) != 0 || in.Redirects == nil {
		t.Fatalf("firewalld mode: checked %d ports (want 0), redirects %+v, err %v", len(in.Checked), in.Redirects, in.RedirectsErr)
	}
	maj, min, _ := parseVersion(ver)
	wantAccepted := maj < 2 || (maj == 2 && min < 3) // 2.3+: depends on StrictForwardPorts
	if wantAccepted && !in.Redirects.Accepted {
		t.Fatalf("firewalld %s: redirects not accepted (%s); want accepted", ver, in.Redirects.Why)
	}
	t.Logf("redirects: accepted=%v: %s", in.Redirects.Accepted, in.Redirects.Why)
	if wantAccepted && len(Findings(in)) != 0 {
		t.Fatalf("firewalld mode findings, want none:\n%s", render(Findings(in)))
	}

	// What the kernel does agrees: a redirect in a nat table of our own (as
	// dsr-agent's `ip dsr-agent` in firewalld mode) from VIP:443 to 8443 is
	// let in by the public zone although 8443 is not open there; 8443
	// reached directly is rejected (the negative control: the accept comes
	// from `ct status dnat`, not from an open port).
	if wantAccepted {
		l.listen(t, "0.0.0.0:8443")
		l.client.Exec(t, "ip", "route", "add", "10.99.0.100/32", "via", "10.99.0.2")
		l.ns.Exec(t, "nft", "add table ip dsrt-nat; "+
			"add chain ip dsrt-nat pre { type nat hook prerouting priority dstnat; }; "+
			"add rule ip dsrt-nat pre ip daddr 10.99.0.100 tcp dport 443 redirect to :8443")
		if err := l.dial(t, "10.99.0.2:8443"); err == nil {
			t.Fatal("8443 reachable directly; want it rejected by the public zone")
		}
		if err := l.dial(t, "10.99.0.100:443"); err != nil {
			t.Fatalf("redirected VIP:443 -> 8443 rejected although firewalld %s reports it accepts redirects: %v", ver, err)
		}
	}

	// A zone with target ACCEPT lets everything in.
	l.firewallCmd(t, "firewall-cmd --zone=trusted --change-interface=lbnet0")
	zone, isDefault, err = l.c.ZoneOfInterface(ctx, "lbnet0")
	if err != nil || zone != "trusted" || isDefault {
		t.Fatalf("zone of lbnet0 after --change-interface = %q (default %v), %v; want trusted", zone, isDefault, err)
	}
	if v, err := l.c.Allows(ctx, "trusted", 9999, "udp"); err != nil || v.Status != Open || v.How != "zone target ACCEPT" {
		t.Fatalf("trusted 9999/udp = %+v, %v; want open by target ACCEPT", v, err)
	}

	if after := treeDigest(t, "/etc/firewalld"); after != etcBefore {
		t.Fatal("/etc/firewalld changed during the test")
	}
}

// helperEnv makes TestHelperGatherAsUser do its work: it is run by
// gatherAsNobody as a separate process with another uid (D-Bus
// authenticates the connecting process's uid; a Go process cannot switch
// the uid of one thread).
const helperEnv = "DSR_FIREWALLD_HELPER_BUS"

func TestHelperGatherAsUser(t *testing.T) {
	addr := os.Getenv(helperEnv)
	if addr == "" {
		t.Skip("helper for TestRealFirewalld")
	}
	c, err := ConnectAddress(context.Background(), addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	_, err = Gather(context.Background(), c, Request{Wants: []Want{{Kind: Health, Iface: "lbnet0", Port: 8558}}})
	fmt.Printf("uid %d: not authorized %v: %v\n", os.Geteuid(), errors.Is(err, ErrNotAuthorized), err)
}

func (l *lab) gatherAsNobody(t *testing.T) {
	t.Helper()
	// The test binary and the bus socket must be reachable for uid 65534.
	bin := filepath.Join(l.dir, "helper.test")
	if out, err := exec.Command("cp", os.Args[0], bin).CombinedOutput(); err != nil {
		t.Fatalf("copy test binary: %v\n%s", err, out)
	}
	for d := l.dir; d != filepath.Dir(os.TempDir()) && d != "/"; d = filepath.Dir(d) {
		if strings.HasPrefix(d, os.TempDir()+"/") {
			if err := os.Chmod(d, 0o755); err != nil {
				t.Fatal(err)
			}
		}
	}
	cmd := exec.Command(bin, "-test.run=^TestHelperGatherAsUser$", "-test.v")
	cmd.Env = append(os.Environ(), helperEnv+"="+l.busAddr)
	cmd.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: 65534, Gid: 65534}}
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("helper as uid 65534: %v\n%s", err, out)
	}
	if !strings.Contains(string(out), "uid 65534: not authorized true:") {
		t.Fatalf("Gather as uid 65534: want ErrNotAuthorized; got\n%s", out)
	}
	t.Logf("as an ordinary user: %s", strings.TrimSpace(strings.Split(string(out), "\n")[1]))
}

// TestRealNotRunning: a bus without firewalld gives no findings and no
// error (a host without firewalld is fine), and the client does not hang.
func TestRealNotRunning(t *testing.T) {
	netnstest.RequireRoot(t)
	needTools(t)
	dir := t.TempDir()
	sock := filepath.Join(dir, "bus")
	conf := filepath.Join(dir, "bus.conf")
	if err := os.WriteFile(conf, fmt.Appendf(nil, busConfig, sock, firewalldBusPolicy), 0o644); err != nil {
		t.Fatal(err)
	}
	bus := exec.Command("dbus-daemon", "--config-file="+conf, "--nofork", "--nopidfile")
	startAndReap(t, bus, "dbus-daemon")
	waitFor(t, 10*time.Second, "dbus-daemon socket", func() error { _, err := os.Stat(sock); return err })
	c, err := ConnectAddress(context.Background(), "unix:path="+sock)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	in, err := Gather(context.Background(), c, Request{Wants: []Want{{Kind: Health, Iface: "eth0", Port: 8558}}})
	if err != nil {
		t.Fatal(err)
	}
	if in.Running || len(Findings(in)) != 0 {
		t.Fatalf("no firewalld: running=%v findings %v", in.Running, Findings(in))
	}
	// Asking firewalld itself fails fast with the bus's error, wrapped.
	_, err = c.DefaultZone(context.Background())
	if err == nil || !strings.Contains(err.Error(), "getDefaultZone") {
		t.Fatalf("DefaultZone without firewalld: %v; want an error naming the call", err)
	}
}

// checkFixes asserts the findings are exactly want: subject -> fix lines.
func checkFixes(t *testing.T, when string, got []Finding, want map[string][]string) {
	t.Helper()
	if len(got) != len(want) {
		t.Fatalf("%s: %d findings, want %d:\n%s", when, len(got), len(want), render(got))
	}
	for _, f := range got {
		w, ok := want[f.Subject]
		if !ok || strings.Join(f.Fix, "\n") != strings.Join(w, "\n") {
			t.Errorf("%s: finding %q fix %q; want %q", when, f.Subject, f.Fix, w)
		}
	}
}

func render(fs []Finding) string {
	var b strings.Builder
	for _, f := range fs {
		b.WriteString(f.String())
		b.WriteByte('\n')
	}
	return b.String()
}
