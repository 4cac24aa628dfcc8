package daemon

import (
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"syscall"
	"testing"
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
	cmd := exec.Command(helperBinary(t))
	cmd.Env = append(append(os.Environ(), helperEnv+"="+name), env...)
	cmd.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: uid, Gid: uid}}
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	cmd.Stderr = os.Stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = cmd.Process.Kill(); _ = cmd.Wait() })
	line := make([]byte, 64)
	if n, err := out.Read(line); err != nil || n == 0 {
		t.Fatalf("helper %s did not start: %v", name, err)
	}
	return cmd
}
