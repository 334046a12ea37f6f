//go:build bridgetest

package gateway

import (
	"context"
	"fmt"
	"os"
	"time"

	"github.com/tributary-iot/tributary/hw"
)

// signDelayEnv slows every signature of a binary built with -tags
// bridgetest, so a test can make a graceful stop run out of time. Release
// builds do not contain this file: no setting a user can reach slows the
// signer.
const signDelayEnv = "TRIBUTARY_TEST_SIGN_DELAY"

func testKey(k hw.Key) hw.Key {
	d, err := time.ParseDuration(os.Getenv(signDelayEnv))
	if err != nil || d <= 0 {
		return k
	}
	fmt.Fprintf(os.Stderr, "bridgetest build: every signature takes %s more (%s)\n", d, signDelayEnv)
	return slowKey{Key: k, delay: d}
}

// slowKey is a key whose signatures take delay longer, like a busy
// secure element.
type slowKey struct {
	hw.Key
	delay time.Duration
}

func (k slowKey) Sign(ctx context.Context, payload []byte) ([]byte, error) {
	t := time.NewTimer(k.delay)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return nil, fmt.Errorf("slow test key: %w", ctx.Err())
	case <-t.C:
	}
	return k.Key.Sign(ctx, payload)
}

// Unwrap lets hw.OpenDataKey find the wrapped key's Sealer.
func (k slowKey) Unwrap() hw.Key { return k.Key }
