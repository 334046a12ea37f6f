package main

import (
	"bytes"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// stream is govulncheck's JSON for one called module vulnerability, one called stdlib vulnerability and
// one that is only imported.
const stream = `{"config":{"protocol_version":"v1.0.0","scanner_name":"govulncheck"}}
{"progress":{"message":"Scanning your code"}}
{"osv":{"id":"GO-2026-6865","summary":"Panic on two-block frames"}}
{"osv":{"id":"GO-2026-6809","summary":"Distrust compromised intermediate certificates"}}
{"osv":{"id":"GO-2026-0001","summary":"imported only"}}
{"finding":{"osv":"GO-2026-6865","fixed_version":"v1.20.2","trace":[{"module":"github.com/klauspost/compress","version":"v1.20.1","package":"github.com/klauspost/compress/zstd","function":"DecodeAll","receiver":"*Decoder"},{"module":"example.com/m","package":"example.com/m","function":"main"}]}}
{"finding":{"osv":"GO-2026-6865","fixed_version":"v1.20.2","trace":[{"module":"github.com/klauspost/compress","version":"v1.20.1","package":"github.com/klauspost/compress/zstd","function":"Reset"}]}}
{"finding":{"osv":"GO-2026-6809","fixed_version":"v1.26.10","trace":[{"module":"stdlib","version":"v1.26.8","package":"crypto/x509","function":"Verify"}]}}
{"finding":{"osv":"GO-2026-0001","trace":[{"module":"example.com/dep","version":"v1.0.0","package":"example.com/dep/p"}]}}
`

func TestGate(t *testing.T) {
	tests := []struct {
		name, accepted, stream string
		wantErr                string // "" for a pass
	}{
		{"nothing accepted", "", stream, "GO-2026-6809, GO-2026-6865"},
		{"the stdlib one accepted", "GO-2026-6809 stdlib needs a newer Go\n", stream, "1 vulnerability finding(s) fail the gate: GO-2026-6865"},
		{"both accepted", "# why\nGO-2026-6809 stdlib needs a newer Go\nGO-2026-6865 github.com/klauspost/compress no fix yet\n", stream, ""},
		{"an accepted one no longer found", "GO-2026-6809 stdlib needs a newer Go\nGO-2026-6865 github.com/klauspost/compress x\nGO-2020-0001 example.com/old fixed long ago\n", stream, "GO-2020-0001 example.com/old (accepted but no longer found"},
		{"accepted without a reason", "GO-2026-6809 stdlib\n", stream, `want "ID module reason..."`},
		{"no govulncheck output", "", "", "no govulncheck output"},
		{"a clean scan", "", `{"config":{}}` + "\n", ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			file := filepath.Join(t.TempDir(), "accepted.txt")
			if err := os.WriteFile(file, []byte(tt.accepted), 0o644); err != nil {
				t.Fatal(err)
			}
			var out bytes.Buffer
			err := run(strings.NewReader(tt.stream), &out, file)
			switch {
			case tt.wantErr == "" && err != nil:
				t.Fatalf("unexpected error %v; output:\n%s", err, &out)
			case tt.wantErr != "" && (err == nil || !strings.Contains(err.Error(), tt.wantErr)):
				t.Fatalf("error %v, want one containing %q; output:\n%s", err, tt.wantErr, &out)
			}
			if strings.Contains(out.String(), "GO-2026-0001") {
				t.Errorf("an imported-only vulnerability was reported:\n%s", &out)
			}
		})
	}
}
