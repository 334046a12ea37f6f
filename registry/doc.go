// Package registry reads and writes stream permissions on the Streamr
// StreamRegistry contract (StreamRegistryV5's ABI, on Polygon by default)
// over Ethereum JSON-RPC. It is the one package that imports go-ethereum's
// RPC side (ethclient, rpc, accounts/abi).
//
// Client.Allowed answers "may this user publish (subscribe, …) on this
// stream at this time" from a cache of getPermissionsForUserId answers:
// entries live for a TTL, unknown streams are cached too (negative
// caching), concurrent look-ups of one key share one eth_call, and the
// contract's PermissionUpdated* events, polled with eth_getLogs, drop the
// entries they change before the TTL ends. When the chain cannot be asked,
// Config.OnUnreachable decides.
//
// Client.Transact sends the management transactions of `bridge stream`
// (createStream, grantPermission, …) signed by a secp256k1 key, with chain
// ID, nonce and fees from the RPC, and waits for the receipt.
package registry
