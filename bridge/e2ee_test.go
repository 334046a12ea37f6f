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

// keysAfter is a Decrypter whose keys are held from the arrival-th
// message on; it counts the waits for a key.
type keysAfter struct {
	arrival, seen, waits int
}

func (k *keysAfter) Decrypt(_ context.Context, m *streamr.StreamMessage) (*streamr.StreamMessage, bool, error) {
	k.seen++
	if k.seen < k.arrival {
		return nil, false, nil
	}
	out := *m
	out.Body = &streamr.ContentMessage{Content: []byte(`{}`)}
	return &out, true, nil
}

func (k *keysAfter) DecryptWait(ctx context.Context, m *streamr.StreamMessage) (*streamr.StreamMessage, error) {
	out, ok, err := k.Decrypt(ctx, m)
	if !ok && err == nil {
		k.waits++
		err = errors.New("key timeout")
	}
	return out, err
}

// A Plaintext waits once per missing key, then decrypts only when the key
// has arrived meanwhile; plain messages pass, and without a Decrypter
// nothing encrypted does.
func TestPlaintextWaitsOncePerKey(t *testing.T) {
	gk := "gk1"
	enc := &streamr.StreamMessage{Body: &streamr.ContentMessage{Content: []byte("ct"), EncryptionType: streamr.EncryptionAES, GroupKeyID: &gk}}
	plain := &streamr.StreamMessage{Body: &streamr.ContentMessage{Content: []byte(`{"n":1}`)}}
	for _, tc := range []struct {
		name      string
		keys      *keysAfter
		msgs      int
		decrypted int
		waits     int
	}{
		{"key held", &keysAfter{arrival: 1}, 5, 5, 0},
		{"key never comes", &keysAfter{arrival: 1 << 30}, 5, 0, 1},
		{"key comes later", &keysAfter{arrival: 3}, 5, 3, 1},
		{"no key exchange", nil, 5, 0, 0},
	} {
		t.Run(tc.name, func(t *testing.T) {
			p := NewPlaintext(nil)
			if tc.keys != nil {
				p = NewPlaintext(tc.keys)
			}
			decrypted := 0
			for range tc.msgs {
				out, err := p.Decrypt(context.Background(), enc)
				switch {
				case err == nil && out.Content().EncryptionType == streamr.EncryptionNone:
					decrypted++
				case !errors.Is(err, ErrUndecrypted):
					t.Fatalf("error %v, want ErrUndecrypted", err)
				}
			}
			if out, err := p.Decrypt(context.Background(), plain); err != nil || out != plain {
				t.Fatalf("plain message: %v, %v", out, err)
			}
			waits := 0
			if tc.keys != nil {
				waits = tc.keys.waits
			}
			if decrypted != tc.decrypted || waits != tc.waits {
				t.Fatalf("decrypted %d, waited %d times; want %d, %d", decrypted, waits, tc.decrypted, tc.waits)
			}
		})
	}
}
