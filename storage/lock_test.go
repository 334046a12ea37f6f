package storage

import (
	"errors"
	"os"
	"path/filepath"
	"testing"
)

// TestOpenLockedDir checks that Open tells a directory another Store
// holds (ErrLocked: a running gateway) from other failures to open it.
func TestOpenLockedDir(t *testing.T) {
	for _, tc := range []struct {
		name    string
		prepare func(t *testing.T, dir string)
		locked  bool
	}{
		{"held by an open store", func(t *testing.T, dir string) {
			s, err := Open(Options{Dir: dir})
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { _ = s.Close() })
		}, true},
		{"corrupt manifest", func(t *testing.T, dir string) {
			if err := os.WriteFile(filepath.Join(dir, "MANIFEST"), []byte("not a manifest"), 0o600); err != nil {
				t.Fatal(err)
			}
		}, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			tc.prepare(t, dir)
			s, err := Open(Options{Dir: dir})
			if err == nil {
				_ = s.Close()
				t.Fatal("Open succeeded, want an error")
			}
			if errors.Is(err, ErrLocked) != tc.locked {
				t.Fatalf("Open: %v; errors.Is(err, ErrLocked) = %t, want %t", err, !tc.locked, tc.locked)
			}
		})
	}
}
