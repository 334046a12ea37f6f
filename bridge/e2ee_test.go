package bridge

import (
	"context"
	"errors"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/tributary-iot/tributary/streamr"
)

func TestRuleEncryption(t *testing.T) {
	const addr = "0x7e5f4552091a69125d5dfcb7b8c2659029395bdf"
	for _, tc := range []struct {
		name    string
		cfg     RuleConfig
		wantErr string
		encrypt bool
		auto    bool
	}{
		{"default is auto", RuleConfig{Topic: "a/#", Stream: "{address}/a"}, "", false, true},
		{"always", RuleConfig{Topic: "a/#", Stream: "{address}/a", Encryption: "always", Subscribers: []string{addr}}, "", true, false},
		{"never", RuleConfig{Topic: "a/#", Stream: "{address}/a", Encryption: "never"}, "", false, false},
		{"unknown", RuleConfig{Topic: "a/#", Stream: "{address}/a", Encryption: "sometimes"}, `encryption "sometimes"`, false, false},
		{"subscribers of a plain rule", RuleConfig{Topic: "a/#", Stream: "{address}/a", Encryption: "never", Subscribers: []string{addr}}, "subscribers", false, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r, err := Compile(tc.cfg, 0)
			if tc.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tc.wantErr) || !strings.Contains(err.Error(), "rule 1") {
					t.Fatalf("Compile error %v, want one naming rule 1 and %q", err, tc.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			m, reason := Map([]*Rule{r}, addr, Input{Topic: "a/b", Payload: []byte(`{}`)})
			if reason != nil || m.Encrypt != tc.encrypt || m.Auto != tc.auto {
				t.Fatalf("Map = %+v, %v; want Encrypt %v, Auto %v", m, reason, tc.encrypt, tc.auto)
			}
		})
	}
}

func TestRuleStreamPattern(t *testing.T) {
	const addr = "0x7e5f4552091a69125d5dfcb7b8c2659029395bdf"
	r, err := Compile(RuleConfig{Topic: "sensors/+/t", Stream: "{address}/sensors/{1}"}, 0)
	if err != nil {
		t.Fatal(err)
	}
	p := r.StreamPattern(addr)
	for stream, want := range map[streamr.StreamID]bool{
		addr + "/sensors/kitchen": true,
		addr + "/sensors/a/b":     false, // a capture is one topic level
		addr + "/sensorsX":        false,
		"0x0000000000000000000000000000000000000000/sensors/kitchen": false,
	} {
		if got := p.MatchString(string(stream)); got != want {
			t.Errorf("%s: match %v, want %v", stream, got, want)
		}
	}
}

// Re-key is served to loopback clients only, and says why it failed.
func TestServeRekey(t *testing.T) {
	rekey := func(_ context.Context, stream string) (string, error) {
		if stream == "bad" {
			return "", errors.New("stream ID \"bad\" is not valid")
		}
		return "k-GroupKey2", nil
	}
	for _, tc := range []struct {
		remote, stream string
		status         int
		body           string
	}{
		{"127.0.0.1:5000", "s", http.StatusOK, `"groupKeyId":"k-GroupKey2"`},
		{"[::1]:5000", "s", http.StatusOK, `"groupKeyId"`},
		{"192.168.1.9:5000", "s", http.StatusForbidden, "loopback only"},
		{"127.0.0.1:5000", "bad", http.StatusBadRequest, "not valid"},
	} {
		r := httptest.NewRequest(http.MethodPost, "/streams/"+tc.stream+"/rekey", nil)
		r.RemoteAddr = tc.remote
		r.SetPathValue("id", tc.stream)
		w := httptest.NewRecorder()
		serveRekey(w, r, rekey)
		if w.Code != tc.status || !strings.Contains(w.Body.String(), tc.body) {
			t.Errorf("%s %s: %d %s, want %d with %q", tc.remote, tc.stream, w.Code, w.Body, tc.status, tc.body)
		}
	}
}
