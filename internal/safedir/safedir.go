// Package safedir checks that a directory whose files root trusts cannot be
// changed by another user, as sshd's StrictModes and systemd's safe path
// resolution do.
package safedir

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"syscall"
)

// ErrUnsafe marks a directory that another user could change.
var ErrUnsafe = errors.New("unsafe directory")

// Check refuses a directory that is, or lies under, a directory a user other
// than root (or the caller) can change. Every component, symlinks included,
// must be owned by root or the caller; a directory writable by group or
// others is allowed only if it is sticky (like /tmp) and not the state dir
// itself, since in a sticky directory only an entry's owner can rename or
// delete it, and the next component's owner is checked in turn. Components
// that do not exist yet are fine: dsr-agent creates them as root, mode 0700.
func Check(dir string) error {
	abs, err := filepath.Abs(dir)
	if err != nil {
		return fmt.Errorf("%w: %s: %w", ErrUnsafe, dir, err)
	}
	me := uint32(os.Geteuid())
	cur := "/"
	if err := trusted(cur, me, false); err != nil {
		return fmt.Errorf("%w: %s: %w", ErrUnsafe, dir, err)
	}
	rest := splitPath(abs)
	for hops := 0; len(rest) > 0; {
		next := filepath.Join(cur, rest[0])
		rest = rest[1:]
		fi, err := os.Lstat(next)
		if errors.Is(err, fs.ErrNotExist) {
			return nil
		}
		if err != nil {
			return fmt.Errorf("%w: %s: %w", ErrUnsafe, dir, err)
		}
		if fi.Mode()&fs.ModeSymlink != 0 {
			if hops++; hops > 40 {
				return fmt.Errorf("%w: %s: too many symlinks", ErrUnsafe, dir)
			}
			if err := trusted(next, me, false); err != nil {
				return fmt.Errorf("%w: %s: %w", ErrUnsafe, dir, err)
			}
			target, err := os.Readlink(next)
			if err != nil {
				return fmt.Errorf("%w: %s: %w", ErrUnsafe, dir, err)
			}
			if filepath.IsAbs(target) {
				cur = "/"
			}
			rest = append(splitPath(target), rest...)
			continue
		}
		if err := trusted(next, me, len(rest) == 0); err != nil {
			return fmt.Errorf("%w: %s: %w", ErrUnsafe, dir, err)
		}
		if !fi.IsDir() {
			return fmt.Errorf("%w: %s: %s is not a directory", ErrUnsafe, dir, next)
		}
		cur = next
	}
	return nil
}

func splitPath(p string) []string {
	var out []string
	for _, c := range strings.Split(p, "/") {
		if c != "" && c != "." {
			out = append(out, c)
		}
	}
	return out
}

// trusted checks one path component (not following it).
func trusted(path string, me uint32, last bool) error {
	fi, err := os.Lstat(path)
	if err != nil {
		return err
	}
	st, ok := fi.Sys().(*syscall.Stat_t)
	if !ok {
		return fmt.Errorf("%s: no owner information", path)
	}
	if st.Uid != 0 && st.Uid != me {
		return fmt.Errorf("%s is owned by uid %d: expected root", path, st.Uid)
	}
	if fi.Mode()&fs.ModeSymlink != 0 {
		return nil // a symlink's own mode bits mean nothing
	}
	if fi.Mode().Perm()&0o022 != 0 {
		if last {
			return fmt.Errorf("%s is writable by group or others (mode %04o): expected 0700", path, fi.Mode().Perm())
		}
		if fi.Mode()&fs.ModeSticky == 0 {
			return fmt.Errorf("%s is writable by group or others (mode %04o) and not sticky: another user could replace what lies below it", path, fi.Mode().Perm())
		}
	}
	return nil
}
