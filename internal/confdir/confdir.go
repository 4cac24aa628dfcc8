// Package confdir reads a config file and its drop-in directory
// (config.yaml, then config.d/*.yaml in lexical order: systemd's and
// keepalived's include convention) and merges them into one YAML tree that
// remembers, for every value, the file and line it came from.
//
// The merge rules are the operator's mental model of drop-ins: a mapping
// merges key by key, a list is appended to, a scalar set in a later file
// wins. Anything else (a list in one file and a mapping in another) is an
// error naming both places, because "which one wins" would be a guess.
//
// The package knows YAML, not dsr-agent's schema: agent/ decodes the merged
// tree and asks Origin where a field came from to name it in errors.
package confdir

import (
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
)

// File is one config source: its path (as shown in messages) and its text.
type File struct {
	Path string
	Data []byte
	// DropIn is false for the main file only.
	DropIn bool
}

// Origin is where a value was written.
type Origin struct {
	File string
	Line int
}

func (o Origin) String() string {
	if o.File == "" {
		return ""
	}
	if o.Line == 0 {
		return o.File
	}
	return o.File + ":" + strconv.Itoa(o.Line)
}

// Error is a problem tied to a place in a file.
type Error struct {
	At  Origin
	Msg string
}

func (e *Error) Error() string { return e.At.String() + ": " + e.Msg }

// DropInPattern is what a drop-in's name must match; other files in the
// directory (editor backups, .rpmnew, README) are ignored, as systemd does.
const DropInPattern = "*.yaml"

// Read returns the main file followed by the drop-ins of dir in lexical
// order. A missing dir means no drop-ins; an unreadable one is an error
// (silently running without the host's drop-ins could move its VIPs).
// Each file is read up to limit bytes; a larger one is an error.
func Read(mainPath, dir string, limit int64) ([]File, error) {
	data, err := readCapped(mainPath, limit)
	if err != nil {
		return nil, err
	}
	files := []File{{Path: mainPath, Data: data}}
	if dir == "" {
		return files, nil
	}
	names, err := DropIns(dir)
	if err != nil {
		return nil, err
	}
	for _, name := range names {
		data, err := readCapped(name, limit)
		if err != nil {
			return nil, err
		}
		files = append(files, File{Path: name, Data: data, DropIn: true})
	}
	return files, nil
}

// DropIns lists dir's drop-ins in the order they are applied.
func DropIns(dir string) ([]string, error) {
	entries, err := os.ReadDir(dir)
	if errors.Is(err, os.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("read drop-in directory %s: %w", dir, err)
	}
	var names []string
	for _, e := range entries {
		if ok, _ := filepath.Match(DropInPattern, e.Name()); !ok || strings.HasPrefix(e.Name(), ".") {
			continue
		}
		path := filepath.Join(dir, e.Name())
		fi, err := os.Stat(path)
		if err != nil {
			return nil, fmt.Errorf("drop-in %s: %w", path, err)
		}
		if !fi.Mode().IsRegular() {
			return nil, fmt.Errorf("drop-in %s: not a regular file", path)
		}
		names = append(names, path)
	}
	sort.Strings(names)
	return names, nil
}

func readCapped(path string, limit int64) ([]byte, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("read %s: %w", path, err)
	}
	defer f.Close()
	data, err := io.ReadAll(io.LimitReader(f, limit+1))
	if err != nil {
		return nil, fmt.Errorf("read %s: %w", path, err)
	}
	if int64(len(data)) > limit {
		return nil, fmt.Errorf("%s: larger than %d KiB: expected a config file (a few KiB)", path, limit>>10)
	}
	return data, nil
}
