package gateway

import (
	"strings"
	"testing"
)

// The unauthenticated API must not listen beyond loopback by accident.
func TestHTTPAddressBeyondLoopbackNeedsOptIn(t *testing.T) {
	for _, tc := range []struct {
		address, optIn string
		ok             bool
	}{
		{"127.0.0.1:7171", "false", true},
		{"localhost:7171", "false", true},
		{"[::1]:7171", "false", true},
		{"127.0.0.5:7171", "false", true},
		{"0.0.0.0:7171", "false", false},
		{":7171", "false", false},
		{"192.168.1.10:7171", "false", false},
		{"gateway.local:7171", "false", false},
		{"0.0.0.0:7171", "true", true},
		{"", "false", true}, // disabled
	} {
		path := writeConfig(t, "[http]\naddress = \""+tc.address+"\"\nallow_anonymous = "+tc.optIn+"\n")
		_, err := LoadConfig(path)
		if tc.ok && err != nil {
			t.Errorf("address %q allow_anonymous=%s: %v", tc.address, tc.optIn, err)
		}
		if !tc.ok && (err == nil || !strings.Contains(err.Error(), "http.allow_anonymous")) {
			t.Errorf("address %q allow_anonymous=%s: %v, want a refusal naming http.allow_anonymous", tc.address, tc.optIn, err)
		}
	}
}
