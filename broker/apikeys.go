package broker

import (
	"crypto/sha256"
	"crypto/subtle"

	"github.com/mochi-mqtt/server/v2/packets"
)

// apiKeys are the Streamr node's API keys as MQTT passwords; none: no check.
type apiKeys [][sha256.Size]byte

func newAPIKeys(keys []string) apiKeys {
	var k apiKeys
	for _, key := range keys {
		k = append(k, sha256.Sum256([]byte(key)))
	}
	return k
}

// check returns the CONNACK code for a CONNECT's password, comparing it in
// constant time with every key. MQTT 3.1.1 gets the node's return codes:
// 4 for a wrong key (mochi would send 5 for 0x86), 5 for none.
func (k apiKeys) check(v5, present bool, password []byte) packets.Code {
	if len(k) == 0 {
		return packets.CodeSuccess
	}
	if !present || len(password) == 0 {
		if !v5 {
			return packets.Err3NotAuthorized
		}
		return packets.ErrNotAuthorized
	}
	h := sha256.Sum256(password)
	match := 0
	for i := range k {
		match |= subtle.ConstantTimeCompare(h[:], k[i][:])
	}
	if match == 0 && !v5 {
		return packets.ErrMalformedUsernameOrPassword // 0x04, 3.1.1's "bad user name or password"
	}
	if match == 0 {
		return packets.ErrBadUsernameOrPassword
	}
	return packets.CodeSuccess
}
