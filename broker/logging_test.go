package broker

import "testing"

// TestNewNilLogger: a nil logger discards (docs/conventions.md).
func TestNewNilLogger(t *testing.T) {
	if _, err := New(Config{Listeners: []Listener{{Type: "tcp", Address: "127.0.0.1:0"}}}, &testHandler{}, nil); err != nil {
		t.Fatalf("New with a nil logger: %v", err)
	}
}
