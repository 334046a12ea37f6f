package tpm

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/sha256"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"math/big"
	"sync"

	"github.com/ethereum/go-ethereum/crypto"
	"github.com/google/go-tpm/tpm2"
	"github.com/google/go-tpm/tpm2/transport"

	"github.com/tributary-iot/tributary/streamr"
)

// ErrPCRMismatch reports that the TPM refused to unseal the key because the
// selected PCRs no longer hold the values the key was sealed to.
var ErrPCRMismatch = errors.New("TPM refused to unseal the key: PCR values differ from those it was sealed to")

// Key is a key kept with the TPM's help. Close releases the TPM connection.
type Key interface {
	streamr.Signer
	io.Closer
}

// Open loads the key in cfg.Blob. A secp256k1 key is unsealed into memory
// and the TPM is released at once; a P-256 key stays loaded in the TPM until
// Close. A missing blob gives an error wrapping fs.ErrNotExist.
func Open(ctx context.Context, cfg Config) (Key, error) {
	if err := cfg.validate(); err != nil {
		return nil, err
	}
	b, pub, priv, err := readBlob(cfg.Blob)
	if err != nil {
		return nil, err
	}
	if b.Type != cfg.keyType() {
		return nil, fmt.Errorf("TPM key blob %s holds a %s key, the URI asks for %s", cfg.Blob, b.Type, cfg.keyType())
	}
	c, err := connect(ctx, cfg)
	if err != nil {
		return nil, err
	}
	if b.Type == P256 {
		k, err := c.loadP256(pub, priv)
		if err != nil {
			return nil, fmt.Errorf("TPM %s, key blob %s: %w", cfg.where(), cfg.Blob, err)
		}
		return k, nil
	}
	defer c.Close()
	secret, err := c.unseal(pub, priv, b.PCRs)
	if err != nil {
		return nil, fmt.Errorf("TPM %s, key blob %s: %w", cfg.where(), cfg.Blob, err)
	}
	defer clear(secret)
	k, err := streamr.ParseEVMKey(secret)
	if err != nil {
		return nil, fmt.Errorf("TPM key blob %s: unsealed data: %w", cfg.Blob, err)
	}
	return sealedKey{EVMKey: k, cfg: cfg}, nil
}

// Create generates a new key: a P-256 key inside the TPM, or a random
// secp256k1 key sealed to it. It refuses (fs.ErrExist) to replace a blob.
func Create(ctx context.Context, cfg Config) (Key, error) {
	if err := cfg.validate(); err != nil {
		return nil, err
	}
	if err := checkAbsent(cfg.Blob); err != nil {
		return nil, err
	}
	if cfg.keyType() == P256 {
		return createP256(ctx, cfg)
	}
	k, err := streamr.GenerateEVMKey()
	if err != nil {
		return nil, err
	}
	return sealKey(ctx, cfg, k)
}

// Import seals an existing 32-byte secp256k1 private key to the TPM.
// P-256 keys are generated in the TPM and cannot be imported.
func Import(ctx context.Context, cfg Config, priv []byte) (Key, error) {
	if err := cfg.validate(); err != nil {
		return nil, err
	}
	if cfg.keyType() != Secp256k1 {
		return nil, fmt.Errorf("TPM %s keys are generated inside the TPM and cannot be imported", cfg.keyType())
	}
	if err := checkAbsent(cfg.Blob); err != nil {
		return nil, err
	}
	k, err := streamr.ParseEVMKey(priv)
	if err != nil {
		return nil, err
	}
	return sealKey(ctx, cfg, k)
}

func sealKey(ctx context.Context, cfg Config, k *streamr.EVMKey) (Key, error) {
	c, err := connect(ctx, cfg)
	if err != nil {
		return nil, err
	}
	defer c.Close()
	secret := crypto.FromECDSA(k.PrivateKey())
	defer clear(secret)
	pub, priv, err := c.seal(secret, cfg.PCRs)
	if err != nil {
		return nil, err
	}
	if err := newBlob(Secp256k1, cfg.PCRs, pub, priv).write(cfg.Blob); err != nil {
		return nil, err
	}
	cfg.logger().Info("sealed secp256k1 key to the TPM", "tpm", cfg.where(), "blob", cfg.Blob, "pcrs", cfg.PCRs)
	return sealedKey{EVMKey: k, cfg: cfg}, nil
}

func createP256(ctx context.Context, cfg Config) (Key, error) {
	c, err := connect(ctx, cfg)
	if err != nil {
		return nil, err
	}
	pub, priv, err := c.createP256()
	if err == nil {
		err = newBlob(P256, nil, pub, priv).write(cfg.Blob)
	}
	if err != nil {
		c.Close()
		return nil, err
	}
	k, err := c.loadP256(pub, priv)
	if err != nil {
		return nil, err
	}
	cfg.logger().Info("created P-256 key in the TPM", "tpm", cfg.where(), "blob", cfg.Blob)
	return k, nil
}

// sealedKey is an unsealed secp256k1 key; the TPM is no longer needed for
// signing, only to seal other secrets (cfg says where it is).
type sealedKey struct {
	*streamr.EVMKey
	cfg Config
}

func (sealedKey) Close() error { return nil }

// conn is an open TPM with the storage root key loaded.
type conn struct {
	tpm   transport.TPMCloser
	srk   tpm2.NamedHandle
	log   *slog.Logger
	where string // the device or address, for errors
}

// connect opens the TPM, flushes transient objects and sessions left by a
// crashed earlier run (without a resource manager they fill the TPM's
// object slots), and derives the storage root key.
func connect(ctx context.Context, cfg Config) (*conn, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	raw, err := dial(cfg)
	if err != nil {
		return nil, err
	}
	c := &conn{tpm: withRetry(raw, cfg.logger()), log: cfg.logger(), where: cfg.where()}
	if err := c.flushAll(); err != nil {
		raw.Close()
		return nil, err
	}
	if err := c.createSRK(); err != nil {
		raw.Close()
		return nil, err
	}
	return c, nil
}

// createSRK derives the storage root key from the owner hierarchy's seed:
// the same key at every start, so objects created under it load again.
func (c *conn) createSRK() error {
	rsp, err := tpm2.CreatePrimary{
		PrimaryHandle: tpm2.TPMRHOwner,
		InPublic:      tpm2.New2B(tpm2.ECCSRKTemplate),
	}.Execute(c.tpm)
	if err != nil {
		return fmt.Errorf("TPM %s: create storage root key: %w", c.where, err)
	}
	c.srk = tpm2.NamedHandle{Handle: rsp.ObjectHandle, Name: rsp.Name}
	return nil
}

// flushAll flushes every transient object and loaded session this
// connection can see.
func (c *conn) flushAll() error {
	for _, ht := range []tpm2.TPMHT{tpm2.TPMHTTransient, tpm2.TPMHTHMACSession, tpm2.TPMHTPolicySession} {
		rsp, err := tpm2.GetCapability{
			Capability:    tpm2.TPMCapHandles,
			Property:      uint32(ht) << 24,
			PropertyCount: 64,
		}.Execute(c.tpm)
		if err != nil {
			return fmt.Errorf("list TPM handles: %w", err)
		}
		handles, err := rsp.CapabilityData.Data.Handles()
		if err != nil {
			return fmt.Errorf("list TPM handles: %w", err)
		}
		for _, h := range handles.Handle {
			if _, err := (tpm2.FlushContext{FlushHandle: h}).Execute(c.tpm); err != nil {
				return fmt.Errorf("flush stale TPM handle 0x%08x: %w", uint32(h), err)
			}
			c.log.Info("flushed stale tpm handle", "handle", fmt.Sprintf("0x%08x", uint32(h)))
		}
	}
	return nil
}

func (c *conn) flush(h tpm2.TPMHandle) {
	if _, err := (tpm2.FlushContext{FlushHandle: h}).Execute(c.tpm); err != nil {
		c.log.Warn("tpm flush failed", "handle", fmt.Sprintf("0x%08x", uint32(h)), "err", err)
	}
}

// Close flushes the storage root key and closes the TPM.
func (c *conn) Close() error {
	if c.srk.Handle != 0 {
		c.flush(c.srk.Handle)
	}
	return c.tpm.Close()
}

func (c *conn) parent() tpm2.AuthHandle {
	return tpm2.AuthHandle{Handle: c.srk.Handle, Name: c.srk.Name, Auth: tpm2.PasswordAuth(nil)}
}

func (c *conn) load(pub tpm2.TPM2BPublic, priv tpm2.TPM2BPrivate) (tpm2.NamedHandle, error) {
	rsp, err := tpm2.Load{ParentHandle: c.parent(), InPrivate: priv, InPublic: pub}.Execute(c.tpm)
	if err != nil {
		return tpm2.NamedHandle{}, fmt.Errorf("load key into the TPM (was the blob made by another TPM?): %w", err)
	}
	return tpm2.NamedHandle{Handle: rsp.ObjectHandle, Name: rsp.Name}, nil
}

func pcrSelection(pcrs []int) tpm2.TPMLPCRSelection {
	idx := make([]uint, len(pcrs))
	for i, p := range pcrs {
		idx[i] = uint(p)
	}
	return tpm2.TPMLPCRSelection{PCRSelections: []tpm2.TPMSPCRSelection{{
		Hash:      tpm2.TPMAlgSHA256,
		PCRSelect: tpm2.PCClientCompatible.PCRs(idx...),
	}}}
}

// pcrPolicy computes, in a trial session, the policy digest of "the PCRs
// hold their current values".
func (c *conn) pcrPolicy(pcrs []int) ([]byte, error) {
	sess, closeSess, err := tpm2.PolicySession(c.tpm, tpm2.TPMAlgSHA256, 16, tpm2.Trial())
	if err != nil {
		return nil, fmt.Errorf("start trial policy session: %w", err)
	}
	defer closeSess()
	if _, err := (tpm2.PolicyPCR{PolicySession: sess.Handle(), Pcrs: pcrSelection(pcrs)}).Execute(c.tpm); err != nil {
		return nil, fmt.Errorf("trial PolicyPCR: %w", err)
	}
	rsp, err := tpm2.PolicyGetDigest{PolicySession: sess.Handle()}.Execute(c.tpm)
	if err != nil {
		return nil, fmt.Errorf("policy digest: %w", err)
	}
	return rsp.PolicyDigest.Buffer, nil
}

// seal stores secret in a KEYEDHASH object under the SRK that only this TPM
// can load; with pcrs, only while those PCRs hold their current values.
func (c *conn) seal(secret []byte, pcrs []int) (tpm2.TPM2BPublic, tpm2.TPM2BPrivate, error) {
	tmpl := tpm2.TPMTPublic{
		Type:    tpm2.TPMAlgKeyedHash,
		NameAlg: tpm2.TPMAlgSHA256,
		ObjectAttributes: tpm2.TPMAObject{
			FixedTPM:     true,
			FixedParent:  true,
			NoDA:         true,
			UserWithAuth: len(pcrs) == 0, // with PCRs, only the policy authorises
		},
	}
	if len(pcrs) > 0 {
		policy, err := c.pcrPolicy(pcrs)
		if err != nil {
			return tpm2.TPM2BPublic{}, tpm2.TPM2BPrivate{}, err
		}
		tmpl.AuthPolicy = tpm2.TPM2BDigest{Buffer: policy}
	}
	rsp, err := tpm2.Create{
		ParentHandle: c.parent(),
		InSensitive: tpm2.TPM2BSensitiveCreate{Sensitive: &tpm2.TPMSSensitiveCreate{
			Data: tpm2.NewTPMUSensitiveCreate(&tpm2.TPM2BSensitiveData{Buffer: secret}),
		}},
		InPublic: tpm2.New2B(tmpl),
	}.Execute(c.tpm)
	if err != nil {
		return tpm2.TPM2BPublic{}, tpm2.TPM2BPrivate{}, fmt.Errorf("seal key to the TPM: %w", err)
	}
	return rsp.OutPublic, rsp.OutPrivate, nil
}

// unseal returns the secret of a sealed object; the caller clears it.
func (c *conn) unseal(pub tpm2.TPM2BPublic, priv tpm2.TPM2BPrivate, pcrs []int) ([]byte, error) {
	obj, err := c.load(pub, priv)
	if err != nil {
		return nil, err
	}
	defer c.flush(obj.Handle)
	auth := tpm2.AuthHandle{Handle: obj.Handle, Name: obj.Name, Auth: tpm2.PasswordAuth(nil)}
	if len(pcrs) > 0 {
		sess, closeSess, err := tpm2.PolicySession(c.tpm, tpm2.TPMAlgSHA256, 16)
		if err != nil {
			return nil, fmt.Errorf("start policy session: %w", err)
		}
		defer closeSess()
		if _, err := (tpm2.PolicyPCR{PolicySession: sess.Handle(), Pcrs: pcrSelection(pcrs)}).Execute(c.tpm); err != nil {
			return nil, fmt.Errorf("PolicyPCR: %w", err)
		}
		auth.Auth = sess
	}
	rsp, err := tpm2.Unseal{ItemHandle: auth}.Execute(c.tpm)
	if errors.Is(err, tpm2.TPMRCPolicyFail) {
		return nil, fmt.Errorf("%w (PCRs %v): %w", ErrPCRMismatch, pcrs, err)
	}
	if err != nil {
		return nil, fmt.Errorf("unseal: %w", err)
	}
	return rsp.OutData.Buffer, nil
}

var p256Template = tpm2.TPMTPublic{
	Type:    tpm2.TPMAlgECC,
	NameAlg: tpm2.TPMAlgSHA256,
	ObjectAttributes: tpm2.TPMAObject{
		FixedTPM:            true,
		FixedParent:         true,
		SensitiveDataOrigin: true, // generated by the TPM, never imported
		UserWithAuth:        true,
		NoDA:                true,
		SignEncrypt:         true,
	},
	Parameters: tpm2.NewTPMUPublicParms(tpm2.TPMAlgECC, &tpm2.TPMSECCParms{
		CurveID: tpm2.TPMECCNistP256,
		Scheme: tpm2.TPMTECCScheme{
			Scheme:  tpm2.TPMAlgECDSA,
			Details: tpm2.NewTPMUAsymScheme(tpm2.TPMAlgECDSA, &tpm2.TPMSSigSchemeECDSA{HashAlg: tpm2.TPMAlgSHA256}),
		},
	}),
}

func (c *conn) createP256() (tpm2.TPM2BPublic, tpm2.TPM2BPrivate, error) {
	rsp, err := tpm2.Create{
		ParentHandle: c.parent(),
		InPublic:     tpm2.New2B(p256Template),
	}.Execute(c.tpm)
	if err != nil {
		return tpm2.TPM2BPublic{}, tpm2.TPM2BPrivate{}, fmt.Errorf("create P-256 key in the TPM: %w", err)
	}
	return rsp.OutPublic, rsp.OutPrivate, nil
}

// loadP256 loads the key and keeps the connection for signing; on failure
// it closes the connection.
func (c *conn) loadP256(pub tpm2.TPM2BPublic, priv tpm2.TPM2BPrivate) (_ *P256Key, err error) {
	defer func() {
		if err != nil {
			c.Close()
		}
	}()
	ecPub, err := p256Public(pub)
	if err != nil {
		return nil, err
	}
	id, err := streamr.CompressP256(ecPub)
	if err != nil {
		return nil, err
	}
	obj, err := c.load(pub, priv)
	if err != nil {
		return nil, err
	}
	c.flush(c.srk.Handle) // the loaded key no longer needs its parent
	c.srk = tpm2.NamedHandle{}
	return &P256Key{conn: c, obj: obj, pub: ecPub, id: id}, nil
}

func p256Public(pub tpm2.TPM2BPublic) (*ecdsa.PublicKey, error) {
	area, err := pub.Contents()
	if err != nil {
		return nil, fmt.Errorf("TPM key public area: %w", err)
	}
	point, err := area.Unique.ECC()
	if err != nil {
		return nil, fmt.Errorf("TPM key is not an ECC key: %w", err)
	}
	raw := make([]byte, 65)
	raw[0] = 4
	if len(point.X.Buffer) > 32 || len(point.Y.Buffer) > 32 {
		return nil, errors.New("TPM key point coordinates longer than 32 bytes: not P-256")
	}
	new(big.Int).SetBytes(point.X.Buffer).FillBytes(raw[1:33])
	new(big.Int).SetBytes(point.Y.Buffer).FillBytes(raw[33:])
	k, err := ecdsa.ParseUncompressedPublicKey(elliptic.P256(), raw)
	if err != nil {
		return nil, fmt.Errorf("TPM key public point: %w", err)
	}
	return k, nil
}

// P256Key is a P-256 key held in the TPM. It signs ECDSA_SECP256R1
// messages with TPM2_Sign; calls are serialised on the one TPM connection.
type P256Key struct {
	mu     sync.Mutex
	conn   *conn
	obj    tpm2.NamedHandle
	pub    *ecdsa.PublicKey
	id     []byte
	closed bool
}

// SignatureType implements streamr.Signer.
func (k *P256Key) SignatureType() streamr.SignatureType { return streamr.SignatureSecp256r1 }

// PublisherID implements streamr.Signer: the compressed public key.
func (k *P256Key) PublisherID() []byte { return k.id }

// PublicKey returns the key's public half.
func (k *P256Key) PublicKey() *ecdsa.PublicKey { return k.pub }

// Sign implements streamr.Signer: SHA-256 of payload, signed in the TPM,
// returned as the 64-byte r‖s.
func (k *P256Key) Sign(ctx context.Context, payload []byte) ([]byte, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	digest := sha256.Sum256(payload)
	k.mu.Lock()
	defer k.mu.Unlock()
	if k.closed {
		return nil, fmt.Errorf("TPM P-256 sign: %w", fs.ErrClosed)
	}
	rsp, err := tpm2.Sign{
		KeyHandle: tpm2.AuthHandle{Handle: k.obj.Handle, Name: k.obj.Name, Auth: tpm2.PasswordAuth(nil)},
		Digest:    tpm2.TPM2BDigest{Buffer: digest[:]},
		InScheme: tpm2.TPMTSigScheme{
			Scheme:  tpm2.TPMAlgECDSA,
			Details: tpm2.NewTPMUSigScheme(tpm2.TPMAlgECDSA, &tpm2.TPMSSchemeHash{HashAlg: tpm2.TPMAlgSHA256}),
		},
		Validation: tpm2.TPMTTKHashCheck{Tag: tpm2.TPMSTHashCheck, Hierarchy: tpm2.TPMRHNull},
	}.Execute(k.conn.tpm)
	if err != nil {
		return nil, fmt.Errorf("TPM P-256 sign: %w", err)
	}
	sig, err := rsp.Signature.Signature.ECDSA()
	if err != nil {
		return nil, fmt.Errorf("TPM P-256 sign: %w", err)
	}
	r, s := sig.SignatureR.Buffer, sig.SignatureS.Buffer
	if len(r) > 32 || len(s) > 32 {
		return nil, fmt.Errorf("TPM P-256 sign: r or s longer than 32 bytes (%d, %d)", len(r), len(s))
	}
	return streamr.P256Signature(new(big.Int).SetBytes(r), new(big.Int).SetBytes(s)), nil
}

// Close flushes the key from the TPM and closes the connection. A second
// Close returns an error wrapping fs.ErrClosed.
func (k *P256Key) Close() error {
	k.mu.Lock()
	defer k.mu.Unlock()
	if k.closed {
		return fmt.Errorf("TPM P-256 key: %w", fs.ErrClosed)
	}
	k.closed = true
	k.conn.flush(k.obj.Handle)
	return k.conn.Close()
}
