package streamr

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"errors"
	"math/big"
	"strings"
	"testing"

	"github.com/ethereum/go-ethereum/crypto"
)

func TestSignaturePayload(t *testing.T) {
	const header = "streamr.eth/foo/bar7" + "1704972511765" + "3" + "0x7e5f4552091a69125d5dfcb7b8c2659029395bdf" + "chainid"
	gk := "gk-1"
	tests := []struct {
		name string
		prev *MessageRef
		body Body
		want string
	}{
		{"content with previous ref", &MessageRef{1704972511765, 2}, &ContentMessage{Content: []byte(`{"a":1}`)},
			header + "17049725117652" + `{"a":1}`},
		{"present zero previous ref still counts", &MessageRef{0, 0}, &ContentMessage{Content: []byte("x")},
			header + "00" + "x"},
		{"content without previous ref", nil, &ContentMessage{Content: []byte{0xff, 0x00}, ContentType: ContentBinary},
			header + "\xff\x00"},
		{"encryption fields are not signed", nil, &ContentMessage{Content: []byte("ct"), EncryptionType: EncryptionAES, GroupKeyID: &gk},
			header + "ct"},
		{"new group key appended", nil, &ContentMessage{Content: []byte("ct"), NewGroupKey: &EncryptedGroupKey{ID: "next", Data: []byte{1, 2}}},
			header + "ct" + "next\x01\x02"},
		{"group key request", nil, &GroupKeyRequest{
			RequestID: "req", RecipientID: []byte{0xaa}, PublicKey: []byte("PEM"), GroupKeyIDs: []string{"k1", "k2"}, EncryptionType: AsymmetricMLKEM,
		}, header + "req\xaaPEMk1k2"},
		{"group key response", &MessageRef{1, 0}, &GroupKeyResponse{
			RequestID: "req", RecipientID: []byte{0xbb, 0xcc}, GroupKeys: []EncryptedGroupKey{{"k1", []byte{1}}, {"k2", []byte{2, 3}}},
		}, header + "10" + "req\xbb\xcck1\x01k2\x02\x03"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			m := &StreamMessage{
				ID: MessageID{
					StreamID: "streamr.eth/foo/bar", StreamPartition: 7, Timestamp: 1704972511765, SequenceNumber: 3,
					PublisherID: keyOne(t).PublisherID(), MsgChainID: "chainid",
				},
				PrevMsgRef: tt.prev,
				Body:       tt.body,
			}
			got, err := m.SignaturePayload()
			if err != nil {
				t.Fatal(err)
			}
			if string(got) != tt.want {
				t.Fatalf("payload\n got %q\nwant %q", got, tt.want)
			}
		})
	}
	if _, err := (&StreamMessage{}).SignaturePayload(); err == nil {
		t.Error("payload of a message without body: no error")
	}
}

func testSigners(t testing.TB) []Signer {
	t.Helper()
	p, err := GenerateP256Key()
	if err != nil {
		t.Fatal(err)
	}
	e, err := GenerateEVMKey()
	if err != nil {
		t.Fatal(err)
	}
	return []Signer{keyOne(t), e, p}
}

func TestSignVerify(t *testing.T) {
	ctx := context.Background()
	other, err := GenerateEVMKey()
	if err != nil {
		t.Fatal(err)
	}
	otherP256, err := GenerateP256Key()
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name    string
		only    SignatureType // 0: both types
		damage  func(*StreamMessage)
		wantErr string
		badSig  bool // errors.Is(err, ErrBadSignature)
	}{
		{name: "valid", damage: func(*StreamMessage) {}},
		{name: "tampered content", damage: func(m *StreamMessage) { m.Content().Content[0] ^= 1 }, badSig: true},
		{name: "tampered sequence number", damage: func(m *StreamMessage) { m.ID.SequenceNumber++ }, badSig: true},
		{name: "tampered previous ref", damage: func(m *StreamMessage) { m.PrevMsgRef.Timestamp-- }, badSig: true},
		{name: "wrong EVM publisher", only: SignatureEVM, damage: func(m *StreamMessage) { m.ID.PublisherID = other.PublisherID() }, badSig: true},
		{name: "wrong P-256 publisher", only: SignatureSecp256r1, damage: func(m *StreamMessage) { m.ID.PublisherID = otherP256.PublisherID() }, badSig: true},
		{name: "EVM signature too short", only: SignatureEVM, damage: func(m *StreamMessage) { m.Signature = m.Signature[:64] }, wantErr: "64 bytes, want 65"},
		{name: "EVM signature too long", only: SignatureEVM, damage: func(m *StreamMessage) { m.Signature = append(m.Signature, 0) }, wantErr: "66 bytes, want 65"},
		{name: "EVM publisher not 20 bytes", only: SignatureEVM, damage: func(m *StreamMessage) { m.ID.PublisherID = m.ID.PublisherID[:19] }, wantErr: "20-byte address"},
		{name: "EVM v = 0/1", only: SignatureEVM, damage: func(m *StreamMessage) { m.Signature[64] -= 27 }, wantErr: "want 27 or 28"},
		{name: "EVM r zeroed", only: SignatureEVM, damage: func(m *StreamMessage) { clear(m.Signature[:32]) }, wantErr: "recover EVM signer"},
		{name: "P-256 signature DER-sized", only: SignatureSecp256r1, damage: func(m *StreamMessage) { m.Signature = append(m.Signature, 0, 0, 0, 0, 0, 0, 0, 0) }, wantErr: "72 bytes, want 64"},
		{name: "P-256 signature flipped", only: SignatureSecp256r1, damage: func(m *StreamMessage) { m.Signature[40] ^= 1 }, badSig: true},
		{name: "P-256 publisher wrong length", only: SignatureSecp256r1, damage: func(m *StreamMessage) { m.ID.PublisherID = m.ID.PublisherID[:32] }, wantErr: "33 (compressed) or 65"},
		{name: "P-256 publisher not on curve", only: SignatureSecp256r1, damage: func(m *StreamMessage) {
			m.ID.PublisherID = append([]byte{2}, bytes.Repeat([]byte{0xff}, 32)...) // x ≥ p
		}, wantErr: "not a compressed P-256 point"},
		{name: "legacy type", damage: func(m *StreamMessage) { m.SignatureType = SignatureLegacy }, wantErr: "ECDSA_SECP256K1_LEGACY is not accepted"},
		{name: "ERC-1271 type", damage: func(m *StreamMessage) { m.SignatureType = SignatureERC1271 }, wantErr: "ERC_1271 is not accepted: it needs an on-chain"},
		{name: "ML-DSA type", damage: func(m *StreamMessage) { m.SignatureType = SignatureMLDSA87 }, wantErr: "ML_DSA_87 is not accepted"},
		{name: "unknown type", damage: func(m *StreamMessage) { m.SignatureType = 9 }, wantErr: "SignatureType(9) is unknown"},
		{name: "swapped type", damage: func(m *StreamMessage) { m.SignatureType = 5 - m.SignatureType }, wantErr: "bytes"},
	}
	for _, s := range testSigners(t) {
		for _, tt := range tests {
			if tt.only != 0 && tt.only != s.SignatureType() {
				continue
			}
			t.Run(s.SignatureType().String()+"/"+tt.name, func(t *testing.T) {
				m := testMessage(t)
				if err := SignMessage(ctx, s, m); err != nil {
					t.Fatal(err)
				}
				if m.SignatureType != s.SignatureType() || !bytes.Equal(m.ID.PublisherID, s.PublisherID()) {
					t.Fatalf("SignMessage did not set type and publisher: %v %x", m.SignatureType, m.ID.PublisherID)
				}
				tt.damage(m)
				err := VerifySignature(m)
				switch {
				case tt.wantErr == "" && !tt.badSig:
					if err != nil {
						t.Fatalf("VerifySignature: %v", err)
					}
				case tt.badSig:
					if !errors.Is(err, ErrBadSignature) {
						t.Fatalf("VerifySignature = %v, want ErrBadSignature", err)
					}
				default:
					if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
						t.Fatalf("VerifySignature = %v, want error containing %q", err, tt.wantErr)
					}
				}
			})
		}
	}
}

func TestEVMSignatureLowSAndV(t *testing.T) {
	k := keyOne(t)
	for i := range 20 {
		sig, err := k.Sign(context.Background(), []byte{byte(i)})
		if err != nil {
			t.Fatal(err)
		}
		if v := sig[64]; v != 27 && v != 28 {
			t.Fatalf("v = %d", v)
		}
		if s := new(big.Int).SetBytes(sig[32:64]); s.Cmp(halfN()) > 0 {
			t.Fatalf("high-S signature %x", sig)
		}
	}
}

func halfN() *big.Int { return new(big.Int).Rsh(crypto.S256().Params().N, 1) }

// EVMSignatureFromRS must normalise a hardware token's raw (r, s), which may
// have a high S, and find the recovery ID.
func TestEVMSignatureFromRS(t *testing.T) {
	k := keyOne(t)
	for i := range 16 {
		digest := EVMHash([]byte{byte(i), 'x'})
		want, err := crypto.Sign(digest, k.PrivateKey())
		if err != nil {
			t.Fatal(err)
		}
		want[64] += 27
		r, s := want[:32], new(big.Int).SetBytes(want[32:64])
		highS := new(big.Int).Sub(crypto.S256().Params().N, s).Bytes()
		for _, sIn := range [][]byte{want[32:64], highS} {
			got, err := EVMSignatureFromRS(digest, r, sIn, k.Address())
			if err != nil {
				t.Fatal(err)
			}
			if !bytes.Equal(got, want) {
				t.Fatalf("EVMSignatureFromRS\n got %x\nwant %x", got, want)
			}
		}
	}
	digest := EVMHash([]byte("x"))
	sig, err := crypto.Sign(digest, k.PrivateKey())
	if err != nil {
		t.Fatal(err)
	}
	other, err := GenerateEVMKey()
	if err != nil {
		t.Fatal(err)
	}
	if _, err := EVMSignatureFromRS(digest, sig[:32], sig[32:64], other.Address()); err == nil || !strings.Contains(err.Error(), "no recovery id") {
		t.Errorf("wrong address: err = %v", err)
	}
	if _, err := EVMSignatureFromRS(digest, make([]byte, 33), sig[32:64], k.Address()); err == nil {
		t.Error("33-byte r accepted")
	}
}

func TestP256Keys(t *testing.T) {
	k, err := GenerateP256Key()
	if err != nil {
		t.Fatal(err)
	}
	id := k.PublisherID()
	if len(id) != 33 || (id[0] != 2 && id[0] != 3) {
		t.Fatalf("publisher ID %x is not a compressed point", id)
	}
	pub, err := ParseP256PublicKey(id)
	if err != nil {
		t.Fatal(err)
	}
	if !pub.Equal(&k.PrivateKey().PublicKey) {
		t.Fatal("compressed key does not parse back to the same key")
	}
	raw, err := k.PrivateKey().PublicKey.Bytes()
	if err != nil {
		t.Fatal(err)
	}
	if pub, err := ParseP256PublicKey(raw); err != nil || !pub.Equal(&k.PrivateKey().PublicKey) {
		t.Fatalf("uncompressed key: %v", err)
	}
	k1, err := ecdsa.GenerateKey(elliptic.P384(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := NewP256Key(k1); err == nil {
		t.Error("NewP256Key accepted a P-384 key")
	}
}

func TestParseEVMKey(t *testing.T) {
	if _, err := ParseEVMKey(make([]byte, 31)); err == nil {
		t.Error("31-byte key accepted")
	}
	if _, err := ParseEVMKey(make([]byte, 32)); err == nil {
		t.Error("zero key accepted")
	}
	if got := UserID(keyOne(t).PublisherID()); got != "0x7e5f4552091a69125d5dfcb7b8c2659029395bdf" {
		t.Errorf("address of key 1 = %s", got)
	}
}

// testMessage is a content message with a previous ref, unsigned.
func testMessage(t testing.TB) *StreamMessage {
	t.Helper()
	return &StreamMessage{
		ID: MessageID{
			StreamID: mustStreamID(t, "streamr.eth/tributary/test"), StreamPartition: 3,
			Timestamp: 1_700_000_000_123, SequenceNumber: 2, MsgChainID: "abcdefghij0123456789",
		},
		PrevMsgRef: &MessageRef{Timestamp: 1_700_000_000_123, SequenceNumber: 1},
		Body:       &ContentMessage{Content: []byte(`{"temperature":21.5,"unit":"°C"}`), ContentType: ContentJSON},
	}
}
