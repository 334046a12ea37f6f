package bridge

import (
	"bytes"
	"log/slog"
	"strings"
	"testing"
)

func TestComponentLogger(t *testing.T) {
	componentLogger(nil, "storer").Info("discarded") // a nil logger discards, never panics

	var buf bytes.Buffer
	componentLogger(slog.New(slog.NewTextHandler(&buf, nil)).With("orderer", "store"), "order").Info("hello")
	if out := buf.String(); strings.Count(out, "component=") != 1 || !strings.Contains(out, "orderer=store component=order") {
		t.Fatalf("logged %q, want the caller's attributes and component=order once", out)
	}
}
