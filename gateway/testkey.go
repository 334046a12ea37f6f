//go:build !bridgetest

package gateway

import "github.com/tributary-iot/tributary/hw"

// testKey is the identity: release builds have no test hooks. The
// bridgetest build tag swaps in testkey_bridgetest.go.
func testKey(k hw.Key) hw.Key { return k }
