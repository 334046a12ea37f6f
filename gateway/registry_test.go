package gateway

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/tributary-iot/tributary/streamr"
)

// permFunc is an e2ee.Permissions from a function.
type permFunc func(user []byte) (bool, error)

func (f permFunc) Allowed(_ context.Context, _ string, user []byte, _ streamr.Permission, _ time.Time) (bool, error) {
	return f(user)
}

// TestListedOrChain: group keys go to users a rule lists, and with
// [registry] to those the chain lets subscribe; the chain's error stands
// for users no rule lists.
func TestListedOrChain(t *testing.T) {
	down := errors.New("chain down")
	listed := permFunc(func(u []byte) (bool, error) { return string(u) == "listed", nil })
	chain := permFunc(func(u []byte) (bool, error) {
		if string(u) == "down" {
			return false, down
		}
		return string(u) == "granted", nil
	})
	p := listedOrChain{listed, chain}
	tests := []struct {
		user    string
		want    bool
		wantErr error
	}{
		{"listed", true, nil},
		{"granted", true, nil},
		{"stranger", false, nil},
		{"down", false, down},
	}
	for _, tt := range tests {
		ok, err := p.Allowed(context.Background(), "s", []byte(tt.user), streamr.PermissionSubscribe, time.Now())
		if ok != tt.want || !errors.Is(err, tt.wantErr) {
			t.Errorf("%s: %v, %v; want %v, %v", tt.user, ok, err, tt.want, tt.wantErr)
		}
	}
}
