package appapi

import (
	"errors"
	"net/http/httptest"
	"testing"
)

func TestKeysCheckRequest(t *testing.T) {
	keys, err := NewKeys([]string{"k1", "k2"})
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name, url, auth string
		want            error
	}{
		{"bearer", "/x", "Bearer k2", nil},
		{"bearer lower case", "/x", "bearer k1", nil},
		{"query", "/x?apiKey=k1", "", nil},
		{"wrong bearer", "/x", "Bearer k3", ErrWrongKey},
		{"wrong query", "/x?apiKey=k", "", ErrWrongKey},
		{"basic auth", "/x", "Basic azE6", ErrNoKey},
		{"none", "/x", "", ErrNoKey},
		{"empty query", "/x?apiKey=", "", ErrNoKey},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := httptest.NewRequest("GET", tc.url, nil)
			if tc.auth != "" {
				r.Header.Set("Authorization", tc.auth)
			}
			if err := keys.CheckRequest(r); !errors.Is(err, tc.want) {
				t.Fatalf("%v, want %v", err, tc.want)
			}
		})
	}
	if err := (Keys{}).CheckRequest(httptest.NewRequest("GET", "/x", nil)); err != nil {
		t.Errorf("no keys configured: %v, want every app let in", err)
	}
	if _, err := NewKeys([]string{"ok", " "}); err == nil {
		t.Error("a blank key was accepted")
	}
}
