package storage

import (
	"testing"
)

func TestCursorsPersist(t *testing.T) {
	dir := t.TempDir()
	s, err := Open(Options{Dir: dir, MinFreeBytes: -1})
	if err != nil {
		t.Fatal(err)
	}
	if pos, err := s.Cursor("forward/low"); err != nil || pos != 0 {
		t.Fatalf("unset cursor: %d, %v; want 0, nil", pos, err)
	}
	if err := s.SetCursors(t.Context(), map[string]uint64{"forward/low": 41, "forward/part/x#0": 7}); err != nil {
		t.Fatal(err)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	s, err = Open(Options{Dir: dir, MinFreeBytes: -1})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	for name, want := range map[string]uint64{"forward/low": 41, "forward/part/x#0": 7} {
		if pos, err := s.Cursor(name); err != nil || pos != want {
			t.Errorf("cursor %s after reopen: %d, %v; want %d", name, pos, err, want)
		}
	}
}
