package appapi

import (
	"crypto/sha256"
	"crypto/subtle"
	"errors"
	"fmt"
	"net/http"
	"strings"
)

// Keys are the API keys an app must present, like the Streamr node's
// apiAuthentication.keys. The zero Keys (none configured) lets every app
// in, as the node does without apiAuthentication.
type Keys struct {
	hashes [][sha256.Size]byte
}

// NewKeys returns the key set; an empty key is an error (it would let in
// an app that sends none).
func NewKeys(keys []string) (Keys, error) {
	var k Keys
	for i, key := range keys {
		if strings.TrimSpace(key) == "" {
			return Keys{}, fmt.Errorf("api key %d is empty", i+1)
		}
		k.hashes = append(k.hashes, sha256.Sum256([]byte(key)))
	}
	return k, nil
}

// ParseKeyFile reads keys one per line; blank lines and lines starting
// with '#' are skipped.
func ParseKeyFile(data []byte) []string {
	var keys []string
	for _, line := range strings.Split(string(data), "\n") {
		line = strings.TrimSpace(line)
		if line != "" && !strings.HasPrefix(line, "#") {
			keys = append(keys, line)
		}
	}
	return keys
}

// Enabled reports whether keys are required.
func (k Keys) Enabled() bool { return len(k.hashes) > 0 }

// Errors of Check, which the interfaces answer as the node does.
var (
	ErrNoKey    = errors.New("API key required")  // 401 (MQTT: CONNACK 5)
	ErrWrongKey = errors.New("API key not valid") // 403 (MQTT: CONNACK 4)
)

// Check reports whether key lets an app in; present is whether the app
// sent one at all. It compares in constant time against every key.
func (k Keys) Check(key string, present bool) error {
	if !k.Enabled() {
		return nil
	}
	if !present || key == "" {
		return ErrNoKey
	}
	h := sha256.Sum256([]byte(key))
	match := 0
	for i := range k.hashes {
		match |= subtle.ConstantTimeCompare(h[:], k.hashes[i][:])
	}
	if match == 0 {
		return ErrWrongKey
	}
	return nil
}

// CheckRequest checks the request's "Authorization: Bearer <key>" header
// (the HTTP plugin's) or, failing that, its apiKey query parameter (the
// WebSocket plugin's).
func (k Keys) CheckRequest(r *http.Request) error {
	if h := r.Header.Get("Authorization"); h != "" {
		scheme, key, ok := strings.Cut(h, " ")
		if !ok || !strings.EqualFold(scheme, "Bearer") {
			return ErrNoKey
		}
		return k.Check(strings.TrimSpace(key), true)
	}
	key, present := r.URL.Query()["apiKey"]
	if !present {
		return k.Check("", false)
	}
	return k.Check(key[0], true)
}

// status is the HTTP status of a Check error.
func status(err error) int {
	if errors.Is(err, ErrWrongKey) {
		return http.StatusForbidden
	}
	return http.StatusUnauthorized
}
