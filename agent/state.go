package agent

import (
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"

	"golang.org/x/sys/unix"
)

// stateFile records what dsr-agent owns so remove, re-apply and a restart
// after a crash touch exactly that and nothing else.
const stateFile = "state.json"

// State is what dsr-agent has changed on this host.
type State struct {
	// SavedSysctls maps a sysctl key (slash-joined path) to the value found
	// before dsr-agent first changed it; remove writes it back.
	SavedSysctls map[string]string `json:"saved_sysctls,omitempty"`
	// Addresses dsr-agent added ("<link> <prefix>"). Recorded before the add,
	// so a crash in between leaves an entry for an address that may be
	// missing, never an address nobody owns.
	Addresses []OwnedAddr `json:"addresses,omitempty"`

	// index mirrors Addresses for O(1) ownership checks (10,000 VIPs).
	index map[OwnedAddr]bool
}

// OwnedAddr is one address dsr-agent put on an interface.
type OwnedAddr struct {
	Link   string `json:"link"`
	Prefix string `json:"prefix"`
}

func (s *State) reindex() {
	s.index = make(map[OwnedAddr]bool, len(s.Addresses))
	for _, a := range s.Addresses {
		s.index[a] = true
	}
}

func (s *State) owns(link, prefix string) bool {
	if s.index == nil {
		s.reindex()
	}
	return s.index[OwnedAddr{Link: link, Prefix: prefix}]
}

func (s *State) addAddr(link, prefix string) {
	if !s.owns(link, prefix) {
		a := OwnedAddr{Link: link, Prefix: prefix}
		s.Addresses = append(s.Addresses, a)
		s.index[a] = true
	}
}

// keepAddrs drops every owned address for which keep is false.
func (s *State) keepAddrs(keep func(OwnedAddr) bool) (dropped int) {
	n := len(s.Addresses)
	s.Addresses = slices.DeleteFunc(s.Addresses, func(a OwnedAddr) bool { return !keep(a) })
	s.reindex()
	return n - len(s.Addresses)
}

// stateStore reads and writes the state file in the state dir.
type stateStore struct {
	dir string
}

func (st stateStore) path() string { return filepath.Join(st.dir, stateFile) }

func (st stateStore) load() (*State, error) {
	s := &State{SavedSysctls: map[string]string{}}
	data, err := os.ReadFile(st.path())
	if errors.Is(err, os.ErrNotExist) {
		return s, nil
	}
	if errors.Is(err, os.ErrPermission) && !canChange() {
		// validate and dry-run as a user: the root-only state dir cannot be
		// read, and ownership only matters to commands that change things.
		return s, nil
	}
	if err != nil {
		return nil, fmt.Errorf("read state %s: %w", st.path(), err)
	}
	if err := json.Unmarshal(data, s); err != nil {
		return nil, fmt.Errorf("parse state %s: %w", st.path(), err)
	}
	if s.SavedSysctls == nil {
		s.SavedSysctls = map[string]string{}
	}
	return s, nil
}

// save writes atomically: a temp file in the same dir, fsync, rename, fsync
// the dir. A crash leaves the old state or the new one, never a torn file.
func (st stateStore) save(s *State) error {
	if err := os.MkdirAll(st.dir, 0o700); err != nil {
		return fmt.Errorf("create state dir %s: %w", st.dir, err)
	}
	data, err := json.MarshalIndent(s, "", "  ")
	if err != nil {
		return err
	}
	return WriteFileAtomic(st.path(), append(data, '\n'), 0o600)
}

// clear deletes the state and lock files once dsr-agent owns nothing, so
// remove leaves no trace beyond the (empty) directory the package owns.
func (st stateStore) clear() error {
	// The lock file goes too (unlinking it while holding the lock is safe:
	// a waiter then holds a lock on nothing anyone else will open).
	for _, f := range []string{st.path(), filepath.Join(st.dir, "lock")} {
		if err := os.Remove(f); err != nil && !errors.Is(err, os.ErrNotExist) {
			return fmt.Errorf("remove %s: %w", f, err)
		}
	}
	return nil
}

// WriteFileAtomic replaces path with data via temp file, fsync and rename.
func WriteFileAtomic(path string, data []byte, perm os.FileMode) error {
	dir := filepath.Dir(path)
	tmp, err := os.CreateTemp(dir, "."+filepath.Base(path)+".tmp*")
	if err != nil {
		return fmt.Errorf("write %s: %w", path, err)
	}
	defer os.Remove(tmp.Name()) // no-op after a successful rename
	if _, err := tmp.Write(data); err != nil {
		tmp.Close()
		return fmt.Errorf("write %s: %w", path, err)
	}
	if err := tmp.Chmod(perm); err != nil {
		tmp.Close()
		return fmt.Errorf("write %s: %w", path, err)
	}
	if err := tmp.Sync(); err != nil {
		tmp.Close()
		return fmt.Errorf("sync %s: %w", path, err)
	}
	if err := tmp.Close(); err != nil {
		return fmt.Errorf("write %s: %w", path, err)
	}
	if err := os.Rename(tmp.Name(), path); err != nil {
		return fmt.Errorf("rename into %s: %w", path, err)
	}
	d, err := os.Open(dir)
	if err != nil {
		return fmt.Errorf("sync dir %s: %w", dir, err)
	}
	defer d.Close()
	if err := d.Sync(); err != nil {
		return fmt.Errorf("sync dir %s: %w", dir, err)
	}
	return nil
}

// lock takes an exclusive lock on the state dir so a CLI apply and the
// daemon never interleave their changes. It blocks until the lock is free.
func (st stateStore) lock() (unlock func(), err error) {
	if err := os.MkdirAll(st.dir, 0o700); err != nil {
		return nil, fmt.Errorf("create state dir %s: %w", st.dir, err)
	}
	f, err := os.OpenFile(filepath.Join(st.dir, "lock"), os.O_CREATE|os.O_RDWR, 0o600)
	if err != nil {
		return nil, fmt.Errorf("open state lock: %w", err)
	}
	if err := unix.Flock(int(f.Fd()), unix.LOCK_EX); err != nil {
		f.Close()
		return nil, fmt.Errorf("lock state dir %s: %w", st.dir, err)
	}
	return func() { f.Close() }, nil
}
