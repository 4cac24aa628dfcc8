// Command fakeagent is a stand-in for dsr-agent, only for testing the boot
// test harness itself (test/boot/selftest.sh) before the real package exists.
// It does what the harness checks, crudely, by calling ip/sysctl/nft.
package main

import (
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"regexp"
	"strings"
	"time"
)

const state = "/var/lib/dsr-agent"

var sysctls = [][2]string{{"net.ipv4.conf.all.arp_ignore", "1"}, {"net.ipv4.conf.all.arp_announce", "2"}}

func cfg() (vips []string, listen string) {
	b, err := os.ReadFile("/etc/dsr-agent/config.yaml")
	if err != nil {
		return nil, ""
	}
	for _, m := range regexp.MustCompile(`address: *(\S+)`).FindAllStringSubmatch(string(b), -1) {
		vips = append(vips, m[1])
	}
	if m := regexp.MustCompile(`listen: *(\S+)`).FindStringSubmatch(string(b)); m != nil {
		listen = m[1]
	}
	return
}

func sh(args ...string) string {
	out, _ := exec.Command(args[0], args[1:]...).CombinedOutput()
	return strings.TrimSpace(string(out))
}

func prefix(v string) string {
	if strings.Contains(v, ":") {
		return v + "/128"
	}
	return v + "/32"
}

func apply() {
	os.MkdirAll(state, 0o700)
	if _, err := os.Stat(state + "/saved"); err != nil {
		var s []string
		for _, kv := range sysctls {
			s = append(s, kv[0]+"="+sh("sysctl", "-n", kv[0]))
		}
		os.WriteFile(state+"/saved", []byte(strings.Join(s, "\n")), 0o600)
	}
	for _, kv := range sysctls {
		sh("sysctl", "-qw", kv[0]+"="+kv[1])
	}
	vips, _ := cfg()
	for _, v := range vips {
		sh("ip", "addr", "replace", prefix(v), "dev", "lo")
	}
}

func status() int {
	rc := 0
	for _, kv := range sysctls {
		if sh("sysctl", "-n", kv[0]) != kv[1] {
			fmt.Println("differs:", kv[0])
			rc = 1
		}
	}
	vips, _ := cfg()
	lo := sh("ip", "-o", "addr", "show", "dev", "lo")
	for _, v := range vips {
		if !strings.Contains(lo, " "+prefix(v)+" ") {
			fmt.Println("missing:", v)
			rc = 1
		}
	}
	return rc
}

func remove() {
	vips, _ := cfg()
	for _, v := range vips {
		sh("ip", "addr", "del", prefix(v), "dev", "lo")
	}
	b, _ := os.ReadFile(state + "/saved")
	for _, l := range strings.Split(string(b), "\n") {
		if l != "" {
			sh("sysctl", "-qw", l)
		}
	}
	os.RemoveAll(state)
}

func notify(s string) {
	if p := os.Getenv("NOTIFY_SOCKET"); p != "" {
		if c, err := net.Dial("unixgram", p); err == nil {
			c.Write([]byte(s))
			c.Close()
		}
	}
}

func run() {
	apply()
	_, listen := cfg()
	http.HandleFunc("/healthz", func(w http.ResponseWriter, r *http.Request) {
		if _, err := os.Stat(state + "/drained"); err == nil {
			w.WriteHeader(503)
			fmt.Fprintln(w, "draining")
			return
		}
		fmt.Fprintln(w, "up")
	})
	go func() {
		for {
			time.Sleep(5 * time.Second)
			notify("WATCHDOG=1")
		}
	}()
	l, err := net.Listen("tcp", listen)
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	notify("READY=1")
	http.Serve(l, nil)
}

func main() {
	if len(os.Args) < 2 {
		os.Exit(2)
	}
	switch os.Args[1] {
	case "validate":
	case "apply":
		apply()
	case "status":
		os.Exit(status())
	case "remove":
		remove()
	case "run":
		run()
	case "drain":
		os.MkdirAll(state, 0o700)
		os.WriteFile(state+"/drained", nil, 0o600)
	case "undrain":
		os.Remove(state + "/drained")
	default:
		os.Exit(2)
	}
}
