package atomicfile

import (
	"os"
	"path/filepath"
	"testing"
)

// TestWrite replaces a file's content and mode and leaves no temp file
// beside it.
func TestWrite(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "state.json")
	if err := os.WriteFile(path, []byte("old"), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := Write(path, []byte("new\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	b, err := os.ReadFile(path)
	if err != nil || string(b) != "new\n" {
		t.Fatalf("content %q, %v; want %q", b, err, "new\n")
	}
	if fi, err := os.Stat(path); err != nil || fi.Mode().Perm() != 0o600 {
		t.Fatalf("mode %v, %v; want 0600", fi.Mode(), err)
	}
	entries, err := os.ReadDir(dir)
	if err != nil || len(entries) != 1 {
		t.Fatalf("directory holds %v, %v; want state.json only", entries, err)
	}
	if err := Write(filepath.Join(dir, "nosuch", "f"), nil, 0o600); err == nil {
		t.Fatal("Write into a missing directory succeeded")
	}
	if err := SyncDir(filepath.Join(dir, "nosuch")); err == nil {
		t.Fatal("SyncDir of a missing directory succeeded")
	}
}
