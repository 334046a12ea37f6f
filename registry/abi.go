package registry

import (
	_ "embed"
	"fmt"
	"math"
	"math/big"
	"strings"
	"time"

	"github.com/ethereum/go-ethereum/accounts/abi"

	"github.com/tributary-iot/tributary/streamr"
)

// abiJSON is the part of StreamRegistryV5's ABI this package uses;
// contracts/StreamRegistryV5.abi.txt has the same functions and events as
// @streamr/network-contracts ships them, and a test keeps the two equal.
//
//go:embed streamregistry.abi.json
var abiJSON string

// parseABI parses abiJSON (a test parses it too, so it does not fail).
func parseABI() (abi.ABI, error) {
	a, err := abi.JSON(strings.NewReader(abiJSON))
	if err != nil {
		return abi.ABI{}, fmt.Errorf("StreamRegistry ABI: %w", err)
	}
	return a, nil
}

// onChainPermission is the contract's Permission struct as the ABI
// decoder fills it (field names match the tuple's components).
type onChainPermission struct {
	CanEdit             bool
	CanDelete           bool
	PublishExpiration   *big.Int
	SubscribeExpiration *big.Int
	CanGrant            bool
}

// Forever is the expiration of a permission granted without one (the
// contract's MAX_UINT256, saturated).
const Forever = uint64(math.MaxUint64)

// Permissions are one user's permissions on a stream as
// getPermissionsForUserId answers: public Publish and Subscribe merged in.
type Permissions struct {
	Edit, Delete, Grant bool
	// PublishUntil and SubscribeUntil are expirations in Unix seconds:
	// 0 never held, Forever without expiry.
	PublishUntil, SubscribeUntil uint64
}

func fromChain(p onChainPermission) Permissions {
	return Permissions{
		Edit: p.CanEdit, Delete: p.CanDelete, Grant: p.CanGrant,
		PublishUntil: saturate(p.PublishExpiration), SubscribeUntil: saturate(p.SubscribeExpiration),
	}
}

func saturate(b *big.Int) uint64 {
	if b == nil || b.Sign() <= 0 {
		return 0
	}
	if !b.IsUint64() {
		return Forever
	}
	return b.Uint64()
}

// Has reports whether p includes perm at time at. Expirations compare as
// the Streamr SDK does: held while the expiration is after at (seconds).
func (p Permissions) Has(perm streamr.Permission, at time.Time) bool {
	switch perm {
	case streamr.PermissionEdit:
		return p.Edit
	case streamr.PermissionDelete:
		return p.Delete
	case streamr.PermissionGrant:
		return p.Grant
	case streamr.PermissionPublish:
		return expiresAfter(p.PublishUntil, at)
	case streamr.PermissionSubscribe:
		return expiresAfter(p.SubscribeUntil, at)
	}
	return false
}

func expiresAfter(until uint64, at time.Time) bool {
	sec := at.Unix()
	return until == Forever || (sec < 0 && until > 0) || (sec >= 0 && until > uint64(sec))
}
