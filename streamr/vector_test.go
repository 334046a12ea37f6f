package streamr

import (
	"context"
	"encoding/hex"
	"testing"

	"github.com/ethereum/go-ethereum/common"
)

// sdkVectorMessage is the unencrypted test vector of the SDK's
// SignatureValidator.test.ts (spec §2.6).
func sdkVectorMessage(t testing.TB) *StreamMessage {
	t.Helper()
	return &StreamMessage{
		ID: MessageID{
			StreamID:        "streamr.eth/foo/bar",
			StreamPartition: 0,
			Timestamp:       1704972511765,
			SequenceNumber:  0,
			PublisherID:     common.HexToAddress("0x7e5f4552091a69125d5dfcb7b8c2659029395bdf").Bytes(),
			MsgChainID:      "401zi3b84sd64qn31fte",
		},
		PrevMsgRef:    &MessageRef{Timestamp: 1704972444019, SequenceNumber: 0},
		SignatureType: SignatureEVM,
		Body:          &ContentMessage{Content: []byte(`{"foo":"bar"}`), ContentType: ContentJSON},
	}
}

func keyOne(t testing.TB) *EVMKey {
	t.Helper()
	b := make([]byte, 32)
	b[31] = 1
	k, err := ParseEVMKey(b)
	if err != nil {
		t.Fatal(err)
	}
	return k
}

func TestSDKSignatureVector(t *testing.T) {
	const (
		wantPayload = `streamr.eth/foo/bar0170497251176500x7e5f4552091a69125d5dfcb7b8c2659029395bdf401zi3b84sd64qn31fte17049724440190{"foo":"bar"}`
		wantSig     = "e53045adef4e01f7fe11d4b3073c6053688912e4db0ee780c189cd0d128c923457e1f6cbc1e47d9cd57e115afa9eb8524288887777c1056d638b193cae112dda1b"
	)
	m := sdkVectorMessage(t)
	payload, err := m.SignaturePayload()
	if err != nil {
		t.Fatal(err)
	}
	if string(payload) != wantPayload {
		t.Fatalf("payload\n got %s\nwant %s", payload, wantPayload)
	}
	if err := SignMessage(context.Background(), keyOne(t), m); err != nil {
		t.Fatal(err)
	}
	if got := hex.EncodeToString(m.Signature); got != wantSig {
		t.Fatalf("signature\n got %s\nwant %s", got, wantSig)
	}
	if err := VerifySignature(m); err != nil {
		t.Fatalf("verify: %v", err)
	}
}
