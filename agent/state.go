package agent

import (
	"github.com/dsr-agent/dsr-agent/tunnel"

	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"time"

	"golang.org/x/sys/unix"

	"github.com/dsr-agent/dsr-agent/internal/atomicfile"
	"github.com/dsr-agent/dsr-agent/sysctl"
)

// stateFile records what dsr-agent owns so remove, re-apply and a restart
// after a crash touch exactly that and nothing else.
const stateFile = "state.json"

// Ownership is what dsr-agent has changed on this host.
type Ownership struct {
	// SavedSysctls maps a sysctl key (slash-joined path) to the value found
	// before dsr-agent first changed it; remove writes it back.
	SavedSysctls map[string]string `json:"saved_sysctls,omitempty"`
	// Addresses dsr-agent added ("<link> <prefix>"). Recorded before the add,
	// so a crash in between leaves an entry for an address that may be
	// missing, never an address nobody owns.
	Addresses []OwnedAddr `json:"addresses,omitempty"`
	// Tunnel is what mode tunnel brought up or added (devices, GUE ports),
	// recorded before the change.
	Tunnel tunnel.Owned `json:"tunnel,omitzero"`

	// LostSysctls are sysctls whose values from before dsr-agent were lost
	// with an unreadable state file: remove cannot restore them and says so.
	LostSysctls []string `json:"lost_sysctls,omitempty"`

	// Recovered, when set, says the state file was unreadable and this
	// state was rebuilt (why, and where the file was moved).
	Recovered string `json:"-"`
	// index mirrors Addresses for O(1) ownership checks (10,000 VIPs).
	index map[OwnedAddr]bool
	// dropped counts addresses removed from index but not yet from
	// Addresses.
	dropped int
}

// OwnedAddr is one address dsr-agent put on an interface.
type OwnedAddr struct {
	Link   string `json:"link"`
	Prefix string `json:"prefix"`
}

func (s *Ownership) reindex() {
	s.index = make(map[OwnedAddr]bool, len(s.Addresses))
	for _, a := range s.Addresses {
		s.index[a] = true
	}
}

func (s *Ownership) owns(link, prefix string) bool {
	if s.index == nil {
		s.reindex()
	}
	return s.index[OwnedAddr{Link: link, Prefix: prefix}]
}

// addAddr records an owned address; it reports whether it was new.
func (s *Ownership) addAddr(link, prefix string) bool {
	if s.owns(link, prefix) {
		return false
	}
	a := OwnedAddr{Link: link, Prefix: prefix}
	s.Addresses = append(s.Addresses, a)
	s.index[a] = true
	return true
}

// dropAddr forgets an owned address in O(1) (deleting 10,000 VIPs must not
// cost O(n²)); Addresses is compacted before it is next read or saved.
func (s *Ownership) dropAddr(link, prefix string) bool {
	if !s.owns(link, prefix) {
		return false
	}
	delete(s.index, OwnedAddr{Link: link, Prefix: prefix})
	s.dropped++
	return true
}

func (s *Ownership) compact() {
	if s.dropped > 0 {
		s.Addresses = slices.DeleteFunc(s.Addresses, func(a OwnedAddr) bool { return !s.index[a] })
		s.dropped = 0
	}
}

// keepAddrs drops every owned address for which keep is false.
func (s *Ownership) keepAddrs(keep func(OwnedAddr) bool) (dropped int) {
	s.compact()
	n := len(s.Addresses)
	s.Addresses = slices.DeleteFunc(s.Addresses, func(a OwnedAddr) bool { return !keep(a) })
	s.reindex()
	return n - len(s.Addresses)
}

// stateStore reads and writes the state file in the state dir.
type stateStore struct {
	dir string
	// lockFile stays open for the Host's lifetime, so a daemon's pass needs
	// no new descriptor (and still works when a flood has used them up).
	lockFile *os.File
}

func (st *stateStore) path() string { return filepath.Join(st.dir, stateFile) }

// errCorruptState marks a state file that exists but cannot be trusted.
var errCorruptState = errors.New("state file unreadable")

// load reads the state file. A state file that cannot be read as dsr-agent's
// (truncated, garbage, `null`, wrong types, a directory, a symlink) is never
// a reason to stop converging: the caller gets an empty state marked
// Recovered and rebuilds ownership from what it can prove (labels, its own
// tables). With moveAside the bad file is renamed state.json.corrupt-<time>
// so the next save does not overwrite the evidence.
func (st *stateStore) load(moveAside bool) (*Ownership, error) {
	s, err := st.read()
	if err == nil || !errors.Is(err, errCorruptState) {
		return s, err
	}
	fresh := &Ownership{SavedSysctls: map[string]string{}, Recovered: err.Error()}
	if moveAside {
		aside := st.path() + ".corrupt-" + time.Now().UTC().Format("20060102T150405.000000000Z")
		if rerr := os.Rename(st.path(), aside); rerr != nil {
			return nil, fmt.Errorf("move unreadable state %s aside: %w (%w)", st.path(), rerr, err)
		}
		fresh.Recovered = fmt.Sprintf("%v; moved to %s", err, aside)
		slog.Error("state file unreadable: moved aside; ownership is rebuilt from dsr-agent's labels and tables, saved sysctl values are lost",
			"state", st.path(), "moved_to", aside, "err", err)
	}
	return fresh, nil
}

func (st *stateStore) read() (*Ownership, error) {
	s := &Ownership{SavedSysctls: map[string]string{}}
	// O_NOFOLLOW: a symlink planted at state.json must not make root read
	// (and later replace) another file.
	f, err := os.OpenFile(st.path(), os.O_RDONLY|unix.O_NOFOLLOW|unix.O_NONBLOCK, 0)
	switch {
	case errors.Is(err, os.ErrNotExist):
		return s, nil
	case errors.Is(err, os.ErrPermission) && !canChange():
		// validate and dry-run as a user: the root-only state dir cannot be
		// read, and ownership only matters to commands that change things.
		return s, nil
	case errors.Is(err, unix.ELOOP):
		return nil, fmt.Errorf("%w: %s is a symlink", errCorruptState, st.path())
	case err != nil:
		return nil, fmt.Errorf("read state %s: %w", st.path(), err)
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return nil, fmt.Errorf("read state %s: %w", st.path(), err)
	}
	if !fi.Mode().IsRegular() {
		return nil, fmt.Errorf("%w: %s is not a regular file (%s)", errCorruptState, st.path(), fi.Mode().Type())
	}
	data, err := io.ReadAll(io.LimitReader(f, maxStateSize+1))
	if err != nil {
		return nil, fmt.Errorf("read state %s: %w", st.path(), err)
	}
	if err := parseState(data, s); err != nil {
		return nil, fmt.Errorf("%w: %s: %w", errCorruptState, st.path(), err)
	}
	return s, nil
}

// maxStateSize is far above 10,000 owned VIPs (~60 bytes each).
const maxStateSize = 16 << 20

// parseState accepts only what dsr-agent writes: one JSON object whose
// entries are well-formed (sysctl paths of its table, numeric values,
// address prefixes).
func parseState(data []byte, s *Ownership) error {
	if len(data) > maxStateSize {
		return fmt.Errorf("larger than %d MiB", maxStateSize>>20)
	}
	trimmed := bytes.TrimSpace(data)
	if len(trimmed) == 0 || trimmed[0] != '{' {
		return errors.New("not a JSON object")
	}
	dec := json.NewDecoder(bytes.NewReader(trimmed))
	dec.DisallowUnknownFields()
	if err := dec.Decode(s); err != nil {
		return err
	}
	if dec.More() {
		return errors.New("trailing data after the JSON object")
	}
	if s.SavedSysctls == nil {
		s.SavedSysctls = map[string]string{}
	}
	for k, v := range s.SavedSysctls {
		p := sysctl.ParseKey(k)
		if sysctl.RuleFor(p, sysctlRules) == nil || len(p) != 5 {
			return fmt.Errorf("saved sysctl %q: not one dsr-agent sets", k)
		}
		if _, err := strconv.Atoi(v); err != nil {
			return fmt.Errorf("saved sysctl %s=%q: not a number", k, v)
		}
	}
	for _, a := range s.Addresses {
		if _, err := netip.ParsePrefix(a.Prefix); err != nil || !validIfName(a.Link) {
			return fmt.Errorf("owned address %q on %q: not an address on an interface", a.Prefix, a.Link)
		}
	}
	return nil
}

// save writes atomically: a temp file in the same dir, fsync, rename, fsync
// the dir. A crash leaves the old state or the new one, never a torn file.
func (st *stateStore) save(s *Ownership) error {
	if err := os.MkdirAll(st.dir, 0o700); err != nil {
		return fmt.Errorf("create state dir %s: %w", st.dir, err)
	}
	s.compact()
	data, err := json.MarshalIndent(s, "", "  ")
	if err != nil {
		return err
	}
	return atomicfile.Write(st.path(), append(data, '\n'), 0o600)
}

// clear deletes the state file once dsr-agent owns nothing. The lock file
// stays: deleting a file others may hold flock'ed lets two processes each
// lock "the" lock (one the old inode, one a new file).
func (st *stateStore) clear() error {
	// Temp files of saves interrupted by a crash go too.
	leftovers, _ := filepath.Glob(filepath.Join(st.dir, "."+stateFile+".tmp*"))
	for _, f := range append(leftovers, st.path()) {
		if err := os.Remove(f); err != nil && !errors.Is(err, os.ErrNotExist) {
			return fmt.Errorf("remove %s: %w", f, err)
		}
	}
	return nil
}

// lock takes an exclusive lock on the state dir so a CLI apply and the
// daemon never interleave their changes. It blocks until the lock is free.
// The lock file is opened once (O_NOFOLLOW: a planted symlink must not make
// root create or lock another file) and kept for later passes.
func (st *stateStore) lock() (unlock func(), err error) {
	if st.lockFile == nil {
		if err := os.MkdirAll(st.dir, 0o700); err != nil {
			return nil, fmt.Errorf("create state dir %s: %w", st.dir, err)
		}
		if err := CheckStateDir(st.dir); err != nil {
			return nil, err
		}
		f, err := os.OpenFile(filepath.Join(st.dir, "lock"), os.O_CREATE|os.O_RDWR|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0o600)
		if err != nil {
			return nil, fmt.Errorf("open state lock in %s: %w", st.dir, err)
		}
		st.lockFile = f
	}
	if err := unix.Flock(int(st.lockFile.Fd()), unix.LOCK_EX); err != nil {
		return nil, fmt.Errorf("lock state dir %s: %w", st.dir, err)
	}
	return func() { _ = unix.Flock(int(st.lockFile.Fd()), unix.LOCK_UN) }, nil
}

func (st *stateStore) close() {
	if st.lockFile != nil {
		st.lockFile.Close()
		st.lockFile = nil
	}
}

// handsOffNote tells why an empty VIP list leaves dsr-agent's setup alone.
func handsOffNote(s *Ownership) []string {
	if len(s.Addresses) == 0 && len(s.SavedSysctls) == 0 {
		return nil
	}
	return []string{fmt.Sprintf("vips is empty: dsr-agent changes nothing and keeps what an earlier config made (%d address(es), %d saved sysctl(s)); `dsr-agent remove` tears it down",
		len(s.Addresses), len(s.SavedSysctls))}
}

// noteWhen selects what stateNotes tells.
type noteWhen int

const (
	noteApply  noteWhen = iota // only in the run that found the file unreadable
	noteStatus                 // every time: the state is still incomplete
	noteRemove                 // the sysctls remove could not put back
)

// stateNotes tells the operator about a rebuilt state: why, and which
// sysctls remove cannot put back.
func stateNotes(s *Ownership, when noteWhen) []string {
	var notes []string
	if s.Recovered != "" {
		notes = append(notes, "the state file was unreadable ("+s.Recovered+"): ownership rebuilt from dsr-agent's labels and tables")
	}
	if len(s.LostSysctls) > 0 && (when != noteApply || s.Recovered != "") {
		verb := "remove will leave them as they are"
		if when == noteRemove {
			verb = "left as they are"
		}
		notes = append(notes, fmt.Sprintf("the values found before dsr-agent are lost for %s: %s",
			strings.Join(s.LostSysctls, ", "), verb))
	}
	return notes
}
