package health

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"

	"github.com/dsr-agent/dsr-agent/internal/atomicfile"
)

// DrainFile is the file in the state dir that records the operator's drain,
// so a drained host stays drained through daemon restarts and reboots.
const DrainFile = "drain"

// LoadDrain reads the persisted rotation state; a missing file means in rotation.
func LoadDrain(stateDir string) (DrainMode, error) {
	b, err := os.ReadFile(filepath.Join(stateDir, DrainFile))
	if errors.Is(err, os.ErrNotExist) {
		return InRotation, nil
	}
	if err != nil {
		return InRotation, fmt.Errorf("read drain state: %w", err)
	}
	switch m := DrainMode(strings.TrimSpace(string(b))); m {
	case Drained, Maintenance:
		return m, nil
	default:
		return InRotation, fmt.Errorf("drain state %s: unexpected content %q", filepath.Join(stateDir, DrainFile), m)
	}
}

// SaveDrain persists m atomically (temp file + rename + fsync of the
// directory), removing the file when back in rotation.
func SaveDrain(stateDir string, m DrainMode) error {
	path := filepath.Join(stateDir, DrainFile)
	if m == InRotation {
		if err := os.Remove(path); err != nil && !errors.Is(err, os.ErrNotExist) {
			return fmt.Errorf("clear drain state: %w", err)
		}
		if err := atomicfile.SyncDir(stateDir); err != nil && !errors.Is(err, os.ErrNotExist) {
			return err
		}
		return nil
	}
	if err := os.MkdirAll(stateDir, 0o700); err != nil {
		return fmt.Errorf("create state dir: %w", err)
	}
	if err := atomicfile.Write(path, []byte(string(m)+"\n"), 0o600); err != nil {
		return fmt.Errorf("write drain state: %w", err)
	}
	return nil
}

// String is the state as shown to people and in /status.
func (m DrainMode) String() string {
	if m == InRotation {
		return "in-rotation"
	}
	return string(m)
}

// Request is the control-socket word that asks for m.
func (m DrainMode) Request() string {
	if m == InRotation {
		return "undrain"
	}
	return string(m)
}

// ParseRequest is the inverse of Request.
func ParseRequest(word string) (DrainMode, bool) {
	for _, m := range []DrainMode{InRotation, Drained, Maintenance} {
		if m.Request() == word {
			return m, true
		}
	}
	return InRotation, false
}
