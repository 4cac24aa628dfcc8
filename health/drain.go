package health

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
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
		return syncDir(stateDir)
	}
	if err := os.MkdirAll(stateDir, 0o700); err != nil {
		return fmt.Errorf("create state dir: %w", err)
	}
	f, err := os.CreateTemp(stateDir, ".drain-*")
	if err != nil {
		return fmt.Errorf("write drain state: %w", err)
	}
	tmp := f.Name()
	_, werr := f.WriteString(string(m) + "\n")
	if werr == nil {
		werr = f.Sync()
	}
	if cerr := f.Close(); werr == nil {
		werr = cerr
	}
	if werr == nil {
		werr = os.Rename(tmp, path)
	}
	if werr != nil {
		os.Remove(tmp)
		return fmt.Errorf("write drain state: %w", werr)
	}
	return syncDir(stateDir)
}

func syncDir(dir string) error {
	d, err := os.Open(dir)
	if errors.Is(err, os.ErrNotExist) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("sync state dir: %w", err)
	}
	defer d.Close()
	if err := d.Sync(); err != nil {
		return fmt.Errorf("sync state dir: %w", err)
	}
	return nil
}
