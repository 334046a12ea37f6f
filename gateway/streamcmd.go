package gateway

import (
	"context"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math/big"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/tributary-iot/tributary/hw"
	"github.com/tributary-iot/tributary/registry"
	"github.com/tributary-iot/tributary/streamr"
)

// StreamManager runs the `bridge stream` commands: reads from and
// transactions to the [registry] StreamRegistry, signed by the gateway
// key (or the key URI given).
type StreamManager struct {
	cfg    *Config
	client *registry.Client
	key    hw.Key
	signer registry.TxSigner // nil: the key cannot sign transactions (read-only commands still work)
}

// PublicUser names the public permission holder in grant and revoke.
const PublicUser = "public"

// OpenStreamManager dials [registry] rpc_url and opens the key.
func OpenStreamManager(ctx context.Context, cfg *Config, log *slog.Logger) (*StreamManager, error) {
	if !cfg.Registry.Enabled() {
		return nil, errors.New("bridge stream needs [registry] rpc_url in the config (an Ethereum JSON-RPC URL)")
	}
	rcfg := cfg.Registry.clientConfig(log, nil)
	rcfg.CacheTTL = time.Nanosecond // every read asks the chain
	client, err := registry.Dial(ctx, rcfg)
	if err != nil {
		return nil, err
	}
	key, err := openKey(ctx, cfg, log)
	if err != nil {
		client.Close()
		return nil, err
	}
	m := &StreamManager{cfg: cfg, client: client, key: key}
	m.signer, _ = key.(registry.TxSigner)
	if len(key.PublisherID()) != 20 {
		m.signer = nil
	}
	return m, nil
}

// Close releases the key and the RPC connection.
func (m *StreamManager) Close() error {
	m.client.Close()
	return m.key.Close()
}

// Address is the gateway key's publisher ID.
func (m *StreamManager) Address() string { return streamr.UserID(m.key.PublisherID()) }

func (m *StreamManager) transact(ctx context.Context, method string, args ...any) error {
	if m.signer == nil {
		return fmt.Errorf("key %s: %w", m.cfg.KeyURI(), registry.ErrNotSecp256k1)
	}
	ctx, cancel := context.WithTimeout(ctx, time.Duration(m.cfg.Registry.ReceiptTimeout))
	defer cancel()
	_, err := m.client.Transact(ctx, m.signer, method, args...)
	return err
}

// Create creates the stream <gateway address><path> with the metadata
// {"partitions": N, "description": …} and returns its ID.
func (m *StreamManager) Create(ctx context.Context, path, description string, partitions int) (string, error) {
	own := strings.ToLower(m.Address())
	if strings.HasPrefix(strings.ToLower(path), own+"/") {
		path = path[len(own):]
	}
	if !strings.HasPrefix(path, "/") {
		return "", fmt.Errorf("stream path %q: must start with / (the stream becomes %s/…)", path, own)
	}
	id := own + path
	if _, err := streamr.ParseStreamID(id); err != nil {
		return "", err
	}
	if partitions < 1 || partitions > streamr.MaxPartitions {
		return "", fmt.Errorf("--partitions %d: want 1 to %d", partitions, streamr.MaxPartitions)
	}
	meta := map[string]any{"partitions": partitions}
	if description != "" {
		meta["description"] = description
	}
	text, err := json.Marshal(meta)
	if err != nil {
		return "", err
	}
	if err := m.transact(ctx, "createStream", path, string(text)); err != nil {
		return "", fmt.Errorf("create %s: %w", id, err)
	}
	return id, nil
}

// Grant gives user (hex address, 33-byte P-256 ID, or "public") the
// permission; expires, if not zero, bounds Publish or Subscribe.
func (m *StreamManager) Grant(ctx context.Context, stream, user string, p streamr.Permission, expires time.Time) error {
	u, err := parseUser(user)
	if err != nil {
		return err
	}
	if !expires.IsZero() {
		if p != streamr.PermissionPublish && p != streamr.PermissionSubscribe {
			return fmt.Errorf("--expires: only publish and subscribe expire, not %s", p)
		}
		return m.setExpiration(ctx, stream, u, p, expires)
	}
	if u == nil && p != streamr.PermissionPublish && p != streamr.PermissionSubscribe {
		return fmt.Errorf("public permissions are publish and subscribe only, not %s", p)
	}
	if err := m.permissionTx(ctx, stream, u, p, "grantPublicPermission", "grantPermission", "grantPermissionForUserId"); err != nil {
		return fmt.Errorf("grant %s to %s on %s: %w", p, user, stream, err)
	}
	return nil
}

func (m *StreamManager) setExpiration(ctx context.Context, stream string, u []byte, p streamr.Permission, expires time.Time) error {
	exp := big.NewInt(expires.Unix())
	var err error
	if len(u) == 33 {
		err = m.transact(ctx, "setExpirationTimeForUserId", stream, u, uint8(p), exp)
	} else {
		err = m.transact(ctx, "setExpirationTime", stream, registry.AddressOf(u), uint8(p), exp)
	}
	if err != nil {
		return fmt.Errorf("grant %s until %s on %s: %w", p, expires.UTC().Format(time.RFC3339), stream, err)
	}
	return nil
}

// Revoke takes the permission from user ("public" for the public one).
func (m *StreamManager) Revoke(ctx context.Context, stream, user string, p streamr.Permission) error {
	u, err := parseUser(user)
	if err != nil {
		return err
	}
	if err := m.permissionTx(ctx, stream, u, p, "revokePublicPermission", "revokePermission", "revokePermissionForUserId"); err != nil {
		return fmt.Errorf("revoke %s from %s on %s: %w", p, user, stream, err)
	}
	return nil
}

// permissionTx sends the variant of a grant or revoke that fits the user:
// public (nil), an address, or another user ID (a P-256 key).
func (m *StreamManager) permissionTx(ctx context.Context, stream string, u []byte, p streamr.Permission, public, byAddress, byUserID string) error {
	switch {
	case u == nil:
		return m.transact(ctx, public, stream, uint8(p))
	case len(u) == 20:
		return m.transact(ctx, byAddress, stream, registry.AddressOf(u), uint8(p))
	}
	return m.transact(ctx, byUserID, stream, u, uint8(p))
}

// Show writes the stream's metadata and a permissions table: the public
// permissions and every user its PermissionUpdated* events since
// fromBlock name (the contract lists no users itself).
func (m *StreamManager) Show(ctx context.Context, stream string, fromBlock uint64, w io.Writer) error {
	meta, err := m.client.Metadata(ctx, stream)
	if err != nil {
		if errors.Is(err, registry.ErrStreamNotFound) {
			return fmt.Errorf("%s: %w", stream, err)
		}
		return fmt.Errorf("%s: metadata: %w", stream, err)
	}
	users, err := m.client.Users(ctx, stream, fromBlock)
	if err != nil {
		return fmt.Errorf("%s: users: %w", stream, err)
	}
	fmt.Fprintf(w, "stream    %s\nmetadata  %s\n\n", stream, meta)
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "USER\tEDIT\tDELETE\tPUBLISH\tSUBSCRIBE\tGRANT")
	now := time.Now()
	rows := [][]byte{make([]byte, 20)}
	for _, u := range users {
		if !isZero(u) {
			rows = append(rows, u)
		}
	}
	for _, u := range rows {
		p, err := m.client.Permissions(ctx, stream, u)
		if err != nil {
			return fmt.Errorf("%s: permissions of %s: %w", stream, streamr.UserID(u), err)
		}
		name := streamr.UserID(u)
		if isZero(u) {
			name = PublicUser
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\n", name, yes(p.Edit), yes(p.Delete),
			until(p.PublishUntil, now), until(p.SubscribeUntil, now), yes(p.Grant))
	}
	return tw.Flush()
}

func yes(b bool) string {
	if b {
		return "yes"
	}
	return "-"
}

// until shows an expiration: yes (none), until <time>, expired <time>, or -.
func until(sec uint64, now time.Time) string {
	switch {
	case sec == 0:
		return "-"
	case sec == registry.Forever:
		return "yes"
	case sec > uint64(max(now.Unix(), 0)):
		return "until " + time.Unix(int64(min(sec, 1<<62)), 0).UTC().Format(time.RFC3339)
	}
	return "expired " + time.Unix(int64(min(sec, 1<<62)), 0).UTC().Format(time.RFC3339)
}

// parseUser reads a user ID: "public" (nil), a 0x address or a 33-byte
// compressed P-256 key in hex.
func parseUser(s string) ([]byte, error) {
	if s == PublicUser {
		return nil, nil
	}
	b, err := hex.DecodeString(strings.TrimPrefix(strings.TrimPrefix(s, "0x"), "0X"))
	if err != nil || (len(b) != 20 && len(b) != 33) {
		return nil, fmt.Errorf("user %q: want a 0x address (20 bytes), a compressed P-256 key (33 bytes) in hex, or %q", s, PublicUser)
	}
	return b, nil
}

func isZero(b []byte) bool {
	for _, c := range b {
		if c != 0 {
			return false
		}
	}
	return true
}
