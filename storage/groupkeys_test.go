package storage

import (
	"context"
	"testing"
)

// Secrets survive a reopen, and ScanSecrets lists a prefix in name order.
func TestSecretsDurable(t *testing.T) {
	dir := t.TempDir()
	s, err := Open(Options{Dir: dir})
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	for name, v := range map[string]string{"parts/b": "", "parts/a": "", "gk/00/k1": "key"} {
		if err := s.PutSecret(ctx, name, []byte(v)); err != nil {
			t.Fatal(err)
		}
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	if s, err = Open(Options{Dir: dir}); err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	if v, ok, err := s.Secret("gk/00/k1"); err != nil || !ok || string(v) != "key" {
		t.Fatalf("Secret = %q, %v, %v", v, ok, err)
	}
	if _, ok, err := s.Secret("gk/00/k2"); err != nil || ok {
		t.Fatalf("a missing secret: %v, %v", ok, err)
	}
	var names []string
	if err := s.ScanSecrets("parts/", func(name string, _ []byte) error { names = append(names, name); return nil }); err != nil {
		t.Fatal(err)
	}
	if len(names) != 2 || names[0] != "parts/a" || names[1] != "parts/b" {
		t.Fatalf("ScanSecrets = %v", names)
	}
}
