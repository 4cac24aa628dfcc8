package netnstest

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"sync"
	"testing"
)

// AgentBinEnv names a prebuilt dsr-agent for the tests that run the binary
// (make sets it); without it AgentBinary builds one from this module.
const AgentBinEnv = "DSR_AGENT_BIN"

var (
	agentOnce sync.Once
	agentBin  string
	agentErr  error
	agentDir  string
)

// AgentBinary returns the dsr-agent under test: $DSR_AGENT_BIN, or one built
// once per test process. Root only (the tests that run it need namespaces).
func AgentBinary(t testing.TB) string {
	t.Helper()
	RequireRoot(t)
	agentOnce.Do(func() {
		if p := os.Getenv(AgentBinEnv); p != "" {
			agentBin, agentErr = filepath.Abs(p)
			return
		}
		agentDir, agentErr = os.MkdirTemp("", "dsr-agent-bin-")
		if agentErr != nil {
			return
		}
		agentBin = filepath.Join(agentDir, "dsr-agent")
		_, file, _, _ := runtime.Caller(0)
		cmd := exec.Command("go", "build", "-o", agentBin, "./cmd/dsr-agent")
		cmd.Dir = filepath.Join(filepath.Dir(file), "..", "..")
		cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
		if out, err := cmd.CombinedOutput(); err != nil {
			agentErr = fmt.Errorf("go build ./cmd/dsr-agent: %w\n%s", err, out)
		}
	})
	if agentErr != nil {
		t.Fatalf("dsr-agent binary: %v", agentErr)
	}
	return agentBin
}

// RemoveBuiltAgent deletes a binary AgentBinary built (call it from TestMain
// after m.Run).
func RemoveBuiltAgent() {
	if agentDir != "" {
		os.RemoveAll(agentDir)
	}
}
