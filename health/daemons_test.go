package health

// The checks against the real daemons from Debian (mk/health.packages), each
// in a throwaway network namespace (root), each with a negative control: the
// daemon stopped, the check down with a reason.

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/dsr-agent/dsr-agent/internal/lab"
	"github.com/dsr-agent/dsr-agent/internal/netnstest"
)

// needBinary finds a daemon's binary or skips (fails under
// DSR_AGENT_REQUIRE_ROOT=1: make test installs mk/health.packages).
func needBinary(t *testing.T, path, pkg string) string {
	t.Helper()
	if _, err := os.Stat(path); err == nil {
		return path
	}
	if os.Getenv(netnstest.RequireRootEnv) == "1" {
		t.Fatalf("%s missing: apt-get install %s (mk/health.packages)", path, pkg)
	}
	t.Skipf("%s missing: apt-get install %s (mk/health.packages)", path, pkg)
	return ""
}

// daemon is a process started in a namespace for one test.
type daemon struct {
	name string
	cmd  *exec.Cmd
	log  string
	done chan struct{}
}

func startDaemon(t *testing.T, ns *netnstest.NS, dir, name string, argv ...string) *daemon {
	t.Helper()
	d := &daemon{name: name, log: filepath.Join(dir, name+".out"), done: make(chan struct{})}
	f, err := os.Create(d.log)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	d.cmd = exec.Command("ip", append([]string{"netns", "exec", ns.Name}, argv...)...)
	d.cmd.Stdout, d.cmd.Stderr = f, f
	// Never outlive the test binary in a deleted namespace.
	d.cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := d.cmd.Start(); err != nil {
		t.Fatalf("start %s: %v", name, err)
	}
	go func() { _ = d.cmd.Wait(); close(d.done) }()
	t.Cleanup(d.stop)
	return d
}

func (d *daemon) output() string { b, _ := os.ReadFile(d.log); return string(b) }

// stop ends the daemon (SIGTERM, SIGKILL after 5s) and waits. Idempotent.
func (d *daemon) stop() {
	select {
	case <-d.done:
		return
	default:
	}
	_ = d.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-d.done:
	case <-time.After(5 * time.Second):
		_ = d.cmd.Process.Kill()
		<-d.done
	}
}

// probeIn runs one probe on a thread inside ns.
func probeIn(t *testing.T, ns *netnstest.NS, p Prober, timeout time.Duration) (res Result, reason string) {
	t.Helper()
	ns.Do(t, func() { res, reason = probeOnce(t, p, timeout) })
	return res, reason
}

// waitUp probes until p succeeds (the daemon is ready) or 10s pass.
func waitUp(t *testing.T, ns *netnstest.NS, d *daemon, p Prober) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		_, reason := probeIn(t, ns, p, 500*time.Millisecond)
		if reason == "" {
			return
		}
		select {
		case <-d.done:
			t.Fatalf("%s exited during startup:\n%s", d.name, d.output())
		default:
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s not ready after 10s (%s):\n%s", d.name, reason, d.output())
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// opensslCert writes a self-signed certificate for name valid for days
// (openssl from Debian) and returns the cert and key paths.
func opensslCert(t *testing.T, dir, name string, days int) (string, string) {
	t.Helper()
	openssl := needBinary(t, "/usr/bin/openssl", "openssl")
	crt, key := filepath.Join(dir, name+".crt"), filepath.Join(dir, name+".key")
	out, err := exec.Command(openssl, "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1",
		"-nodes", "-keyout", key, "-out", crt, "-days", fmt.Sprint(days), "-subj", "/CN="+name,
		"-addext", "subjectAltName=DNS:"+name).CombinedOutput()
	if err != nil {
		t.Fatalf("openssl req: %v\n%s", err, out)
	}
	return crt, key
}

// TestTLSCheckRealNginx: Debian's nginx with self-signed certificates, one
// server block per name: the SNI picks the certificate, a certificate that
// expires in 3 days warns (the check stays up), verify refuses a
// self-signed one, and a stopped nginx is down.
func TestTLSCheckRealNginx(t *testing.T) {
	if testing.Short() {
		t.Skip("runs nginx (make test-root)")
	}
	ns := netnstest.New(t)
	nginx := needBinary(t, "/usr/sbin/nginx", "nginx-light")
	dir := t.TempDir()
	var servers strings.Builder
	for _, s := range []struct {
		name string
		days int
		def  string
	}{{"default.invalid", 365, " default_server"}, {"www.example.com", 365, ""}, {"soon.example.com", 3, ""}} {
		crt, key := opensslCert(t, dir, s.name, s.days)
		fmt.Fprintf(&servers, "  server {\n    listen 127.0.0.1:443 ssl%s;\n    server_name %s;\n    ssl_certificate %s;\n    ssl_certificate_key %s;\n    return 200 \"%s\\n\";\n  }\n",
			s.def, s.name, crt, key, s.name)
	}
	conf := filepath.Join(dir, "nginx.conf")
	tmp := filepath.Join(dir, "tmp")
	if err := os.MkdirAll(tmp, 0o755); err != nil {
		t.Fatal(err)
	}
	err := os.WriteFile(conf, []byte(fmt.Sprintf(`daemon off;
pid %[1]s/nginx.pid;
error_log %[1]s/error.log;
worker_processes 1;
events { worker_connections 64; }
http {
  access_log off;
  client_body_temp_path %[2]s/body;
  proxy_temp_path %[2]s/proxy;
  fastcgi_temp_path %[2]s/fastcgi;
  uwsgi_temp_path %[2]s/uwsgi;
  scgi_temp_path %[2]s/scgi;
%[3]s}
`, dir, tmp, servers.String())), 0o644)
	if err != nil {
		t.Fatal(err)
	}
	d := startDaemon(t, ns, dir, "nginx", nginx, "-c", conf, "-p", dir, "-e", filepath.Join(dir, "error.log"))
	const addr = "127.0.0.1:443"
	warn := 14 * 24 * time.Hour
	waitUp(t, ns, d, NewTLSProber(addr, "www.example.com", false, warn))

	for _, tc := range []struct {
		sni         string
		verify      bool
		wantErr     string
		wantWarning string
	}{
		{sni: "www.example.com"},
		{sni: "soon.example.com", wantWarning: `certificate "soon.example.com" expires `},
		{sni: "other.example.com"}, // nginx's default_server, a year left
		{sni: "www.example.com", verify: true, wantErr: "certificate for www.example.com not accepted: x509: certificate signed by unknown authority"},
	} {
		res, reason := probeIn(t, ns, NewTLSProber(addr, tc.sni, tc.verify, warn), 2*time.Second)
		t.Logf("sni %s verify %v: reason %q warning %q", tc.sni, tc.verify, reason, res.Warning)
		if reason != tc.wantErr || !strings.HasPrefix(res.Warning, tc.wantWarning) || (tc.wantWarning == "") != (res.Warning == "") {
			t.Errorf("sni %s verify %v: reason %q warning %q; want reason %q, warning %q…", tc.sni, tc.verify, reason, res.Warning, tc.wantErr, tc.wantWarning)
		}
		if tc.wantWarning != "" && !strings.Contains(res.Warning, "(in 2d)") && !strings.Contains(res.Warning, "(in 3d)") {
			t.Errorf("warning %q does not say how long is left", res.Warning)
		}
	}
	// Negative control: nginx stopped.
	d.stop()
	if _, reason := probeIn(t, ns, NewTLSProber(addr, "www.example.com", false, warn), time.Second); reason != "connection refused" {
		t.Fatalf("stopped nginx: reason %q, want connection refused", reason)
	}
}

// TestDNSCheckRealUnbound: Debian's unbound (started as internal/lab does:
// foreground, no chroot, no privilege drop) with a static local zone.
func TestDNSCheckRealUnbound(t *testing.T) {
	if testing.Short() {
		t.Skip("runs unbound (make test-root)")
	}
	ns := netnstest.New(t)
	unbound := needBinary(t, "/usr/sbin/unbound", "unbound")
	dir := t.TempDir()
	conf := filepath.Join(dir, "unbound.conf")
	err := os.WriteFile(conf, []byte(lab.UnboundTestConfig(dir,
		"interface: 127.0.0.1",
		"port: 53",
		"do-ip4: yes",
		"do-ip6: no",
		"access-control: 127.0.0.0/8 allow",
		`local-zone: "example.test." static`,
		`local-data: "www.example.test. 30 IN A 192.0.2.80"`,
		`local-data: 'www.example.test. 30 IN TXT "v=up"'`,
		`local-data: "alias.example.test. 30 IN CNAME www.example.test."`,
	)), 0o644)
	if err != nil {
		t.Fatal(err)
	}
	d := startDaemon(t, ns, dir, "unbound", unbound, "-d", "-c", conf)
	const addr = "127.0.0.1:53"
	dns := func(name, typ, expect string) Prober {
		p, err := NewDNSProber(addr, name, typ, expect)
		if err != nil {
			t.Fatal(err)
		}
		return p
	}
	waitUp(t, ns, d, dns("www.example.test", "A", ""))
	for _, tc := range []struct{ name, typ, expect, want string }{
		{"www.example.test", "A", "192.0.2.80", ""},
		{"www.example.test.", "TXT", "v=up", ""},
		{"alias.example.test", "CNAME", "www.example.test.", ""},
		{"www.example.test", "A", "192.0.2.81", "www.example.test. A: answer 192.0.2.80, want 192.0.2.81"},
		{"www.example.test", "AAAA", "", "www.example.test. AAAA: no answer (NOERROR, empty answer section)"},
		{"nope.example.test", "A", "", "nope.example.test. A: NXDOMAIN"},
	} {
		_, reason := probeIn(t, ns, dns(tc.name, tc.typ, tc.expect), 2*time.Second)
		t.Logf("%s %s expect %q: reason %q", tc.name, tc.typ, tc.expect, reason)
		if reason != tc.want {
			t.Errorf("%s %s expect %q: reason %q, want %q", tc.name, tc.typ, tc.expect, reason, tc.want)
		}
	}
	d.stop()
	if _, reason := probeIn(t, ns, dns("www.example.test", "A", ""), time.Second); reason != "connection refused" {
		t.Fatalf("stopped unbound: reason %q, want connection refused (ICMP port unreachable)", reason)
	}
}

// TestExecCheckRealRedis: `redis-cli ping` against Debian's redis-server as
// an exec check, and a dynamic weight (MISC_CHECK exit code 2-255) computed
// from the live server; stopped, both are down with redis-cli's reason.
func TestExecCheckRealRedis(t *testing.T) {
	if testing.Short() {
		t.Skip("runs redis-server (make test-root)")
	}
	ns := netnstest.New(t)
	server := needBinary(t, "/usr/bin/redis-server", "redis-server")
	cli := needBinary(t, "/usr/bin/redis-cli", "redis-tools")
	dir := t.TempDir()
	d := startDaemon(t, ns, dir, "redis", server, "--port", "6379", "--bind", "127.0.0.1",
		"--save", "", "--appendonly", "no", "--dir", dir, "--daemonize", "no", "--logfile", "")
	ping, err := NewExecProber([]string{cli, "-h", "127.0.0.1", "-p", "6379", "ping"})
	if err != nil {
		t.Fatal(err)
	}
	waitUp(t, ns, d, ping)
	// Weight 2 + number of keys: exit code 2+n means up, weight n.
	weighted, _ := NewExecProber([]string{"/bin/sh", "-c", `n=$(` + cli + ` -h 127.0.0.1 dbsize) || exit 1; exit $((2 + n))`})
	res, reason := probeIn(t, ns, weighted, 2*time.Second)
	if reason != "" || res.Weight == nil || *res.Weight != 0 {
		t.Fatalf("empty redis: reason %q weight %v, want up with weight 0", reason, res.Weight)
	}
	for _, k := range []string{"a", "b", "c"} {
		ns.Exec(t, cli, "-h", "127.0.0.1", "set", k, "1")
	}
	res, reason = probeIn(t, ns, weighted, 2*time.Second)
	if reason != "" || res.Weight == nil || *res.Weight != 3 {
		t.Fatalf("3 keys: reason %q weight %v, want up with weight 3", reason, res.Weight)
	}
	d.stop()
	_, reason = probeIn(t, ns, ping, 2*time.Second)
	if reason != "exit 1: Could not connect to Redis at 127.0.0.1:6379: Connection refused" {
		t.Errorf("stopped redis, ping: reason %q", reason)
	}
	if res, reason := probeIn(t, ns, weighted, 2*time.Second); !strings.HasPrefix(reason, "exit 1") || res.Weight != nil {
		t.Errorf("stopped redis, weighted: reason %q weight %v, want exit 1 and no weight", reason, res.Weight)
	}
}
