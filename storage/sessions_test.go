package storage

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"testing"
)

// Session records are written in one synced transaction, deleted by a nil value, scanned by
// prefix in key order, kept across a reopen, and refused once the store is closed.
func TestSessionRecords(t *testing.T) {
	dir := t.TempDir()
	s, err := Open(Options{Dir: dir})
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	writes := map[string][]byte{"c/a": []byte("client"), "s/b": []byte("sub")}
	for i := range 3 {
		writes[fmt.Sprintf("q/a\x00%016x", i)] = []byte{byte(i)}
	}
	if err := s.CommitSessions(ctx, writes); err != nil {
		t.Fatal(err)
	}
	if err := s.CommitSessions(ctx, map[string][]byte{"q/a\x00" + fmt.Sprintf("%016x", 1): nil}); err != nil {
		t.Fatal(err)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	if err := s.CommitSessions(ctx, writes); !errors.Is(err, ErrClosed) {
		t.Fatalf("commit after close: %v, want ErrClosed", err)
	}

	s = running(t, Options{Dir: dir})
	var keys []string
	var vals []byte
	err = s.ScanSessions("q/", func(k string, v []byte) error {
		keys = append(keys, k)
		vals = append(vals, v...)
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	want := []string{"q/a\x00" + fmt.Sprintf("%016x", 0), "q/a\x00" + fmt.Sprintf("%016x", 2)}
	if !slices.Equal(keys, want) || !slices.Equal(vals, []byte{0, 2}) {
		t.Fatalf("scan q/ = %q %v, want %q [0 2]", keys, vals, want)
	}
	stop := errors.New("stop")
	if err := s.ScanSessions("", func(string, []byte) error { return stop }); !errors.Is(err, stop) {
		t.Fatalf("scan error %v, want the callback's", err)
	}
}
