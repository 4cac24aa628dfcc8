package daemon

import (
	"bufio"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"sync/atomic"
	"syscall"
	"testing"
	"time"
)

// helperEnv makes the test binary act as a helper process (a fake control
// socket server under another uid, a connection flood inside a namespace)
// instead of running tests: some parts of a test must be a separate process.
const helperEnv = "DSR_AGENT_TEST_HELPER"

func runHelper(name string) int {
	var err error
	switch name {
	case "fake-control":
		err = fakeControl(os.Getenv("DSR_AGENT_TEST_SOCKET"))
	case "flood":
		err = flood(os.Getenv("DSR_AGENT_FLOOD_TARGET"), os.Getenv("DSR_AGENT_FLOOD_SRC"),
			os.Getenv("DSR_AGENT_FLOOD_CONNS"), os.Getenv("DSR_AGENT_FLOOD_PAUSE"))
	default:
		err = fmt.Errorf("unknown helper %q", name)
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "helper:", err)
		return 1
	}
	return 0
}

// fakeControl answers every control request "healthy, in rotation" -- the
// lie a planted socket would tell -- after announcing on stdout that it
// listens.
func fakeControl(path string) error {
	ln, err := net.Listen("unix", path)
	if err != nil {
		return err
	}
	fmt.Println("listening")
	for {
		c, err := ln.Accept()
		if err != nil {
			return err
		}
		_, _ = io.WriteString(c, `{"drain":"in-rotation","healthy":true,"reasons":[]}`+"\n")
		c.Close()
	}
}

// helperBinary copies the test binary where any uid can execute it (the go
// test build directory is private to root).
func helperBinary(t *testing.T) string {
	t.Helper()
	self, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	dir, err := os.MkdirTemp("", "dsr-agent-helper-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	if err := os.Chmod(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	b, err := os.ReadFile(self)
	if err != nil {
		t.Fatal(err)
	}
	bin := filepath.Join(dir, "helper")
	if err := os.WriteFile(bin, b, 0o755); err != nil {
		t.Fatal(err)
	}
	return bin
}

// startHelperAs runs helper name as uid/gid and waits for its first line.
func startHelperAs(t *testing.T, name string, uid uint32, env ...string) *exec.Cmd {
	t.Helper()
	cmd, _ := startHelper(t, []string{helperBinary(t)}, name, &syscall.Credential{Uid: uid, Gid: uid}, env...)
	return cmd
}

// startHelper runs argv (ending with the test binary, possibly behind
// wrappers such as prlimit or ip netns exec) as helper name, waits for its
// first line and returns the lines that follow.
func startHelper(t testing.TB, argv []string, name string, cred *syscall.Credential, env ...string) (*exec.Cmd, <-chan string) {
	t.Helper()
	cmd := exec.Command(argv[0], argv[1:]...)
	cmd.Env = append(append(os.Environ(), helperEnv+"="+name), env...)
	if cred != nil {
		cmd.SysProcAttr = &syscall.SysProcAttr{Credential: cred}
	}
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	cmd.Stderr = os.Stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = cmd.Process.Kill(); _ = cmd.Wait() })
	sc := bufio.NewScanner(out)
	if !sc.Scan() {
		t.Fatalf("helper %s did not start: %v", name, sc.Err())
	}
	lines := make(chan string, 64)
	go func() {
		defer close(lines)
		for sc.Scan() {
			select {
			case lines <- sc.Text():
			default: // nobody reads: drop
			}
		}
	}()
	return cmd, lines
}

// flood keeps conns connections going to target from src, as a client
// outside allowed_sources would: each sends a keep-alive request and waits
// for the server to close; then, after pause (plus jitter, so the workers do
// not synchronise), it connects again. Against a server that answers 403 and
// keeps the connection alive, all of them stay open; against one that resets
// them at accept, it is a connection storm. It prints a line of counters
// every second and runs until killed.
func flood(target, src, connsStr, pauseStr string) error {
	conns, err := strconv.Atoi(connsStr)
	if err != nil {
		return fmt.Errorf("DSR_AGENT_FLOOD_CONNS: %w", err)
	}
	pause, err := time.ParseDuration(pauseStr)
	if err != nil {
		return fmt.Errorf("DSR_AGENT_FLOOD_PAUSE: %w", err)
	}
	d := net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP(src)}, Timeout: 5 * time.Second}
	req := []byte("GET /healthz HTTP/1.1\r\nHost: " + target + "\r\n\r\n")
	var open, attempts, failed atomic.Int64
	for i := range conns {
		go func() {
			rng := rand.New(rand.NewPCG(uint64(i), 1))
			for {
				attempts.Add(1)
				c, err := d.Dial("tcp", target)
				if err == nil {
					open.Add(1)
					if _, err := c.Write(req); err == nil {
						_, _ = io.Copy(io.Discard, c)
					}
					open.Add(-1)
					c.Close()
				} else {
					failed.Add(1)
				}
				time.Sleep(pause + time.Duration(rng.Int64N(int64(pause)+1)))
			}
		}()
	}
	fmt.Println("flooding")
	for range time.Tick(time.Second) {
		fmt.Printf("open %d attempts %d failed %d\n", open.Load(), attempts.Load(), failed.Load())
	}
	return nil
}
