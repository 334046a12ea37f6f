package streamr

import (
	"context"
	"testing"

	"github.com/ethereum/go-ethereum/crypto"
)

// benchContent is a ~200-byte JSON reading, typical of a sensor message.
var benchContent = []byte(`{"deviceId":"greenhouse-3/sensor-17","temperature":21.53,"humidity":48.2,"co2":612,"battery":3.71,"rssi":-67,"firmware":"1.4.2","ts":1704972511765,"status":"ok","location":{"lat":60.1699,"lon":24.9384}}`)

func benchMessage(b *testing.B, seq int) *StreamMessage {
	return &StreamMessage{
		ID: MessageID{
			StreamID: "0x7e5f4552091a69125d5dfcb7b8c2659029395bdf/greenhouse/sensors", StreamPartition: 17,
			Timestamp: 1_704_972_511_765, SequenceNumber: int32(seq), MsgChainID: "401zi3b84sd64qn31fte",
		},
		PrevMsgRef: &MessageRef{Timestamp: 1_704_972_511_764, SequenceNumber: 3},
		Body:       &ContentMessage{Content: benchContent, ContentType: ContentJSON},
	}
}

// BenchmarkBareCryptoSign is the physical limit: one secp256k1 signature of
// a precomputed 32-byte digest, nothing else.
func BenchmarkBareCryptoSign(b *testing.B) {
	k := keyOne(b)
	digest := EVMHash(benchContent)
	b.ReportAllocs()
	for b.Loop() {
		if _, err := crypto.Sign(digest, k.PrivateKey()); err != nil {
			b.Fatal(err)
		}
	}
}

func benchSignEncode(b *testing.B, s Signer) {
	ctx := context.Background()
	b.ReportAllocs()
	i := 0
	for b.Loop() {
		m := benchMessage(b, i)
		i++
		if err := SignMessage(ctx, s, m); err != nil {
			b.Fatal(err)
		}
		if _, err := m.Marshal(); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkSignEncodeEVM is the bridge's per-reading cost: build the
// message, signature payload, EIP-191 hash, secp256k1 signature, protobuf.
func BenchmarkSignEncodeEVM(b *testing.B) { benchSignEncode(b, keyOne(b)) }

func BenchmarkSignEncodeP256(b *testing.B) {
	k, err := GenerateP256Key()
	if err != nil {
		b.Fatal(err)
	}
	benchSignEncode(b, k)
}

func benchDecodeVerify(b *testing.B, s Signer) {
	m := benchMessage(b, 0)
	if err := SignMessage(context.Background(), s, m); err != nil {
		b.Fatal(err)
	}
	enc, err := m.Marshal()
	if err != nil {
		b.Fatal(err)
	}
	b.ReportAllocs()
	for b.Loop() {
		got, err := Unmarshal(enc)
		if err != nil {
			b.Fatal(err)
		}
		if err := VerifySignature(got); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkDecodeVerifyEVM(b *testing.B) { benchDecodeVerify(b, keyOne(b)) }

func BenchmarkDecodeVerifyP256(b *testing.B) {
	k, err := GenerateP256Key()
	if err != nil {
		b.Fatal(err)
	}
	benchDecodeVerify(b, k)
}

// BenchmarkUnmarshal compares Unmarshal with the proto.Unmarshal decoder
// it replaced (referenceUnmarshal), on a signed ~200-byte reading.
func BenchmarkUnmarshal(b *testing.B) {
	enc := signedBenchMessage(b)
	for _, d := range []struct {
		name   string
		decode func([]byte) (*StreamMessage, error)
	}{{"protowire", Unmarshal}, {"proto.Unmarshal", referenceUnmarshal}} {
		b.Run(d.name, func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				if _, err := d.decode(enc); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

// BenchmarkUnmarshalHeader compares UnmarshalHeader with the
// proto.Unmarshal decoder it replaced.
func BenchmarkUnmarshalHeader(b *testing.B) {
	enc := signedBenchMessage(b)
	for _, d := range []struct {
		name   string
		decode func([]byte) (MessageID, []byte, error)
	}{{"protowire", UnmarshalHeader}, {"proto.Unmarshal", referenceUnmarshalHeader}} {
		b.Run(d.name, func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				if _, _, err := d.decode(enc); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

func signedBenchMessage(b *testing.B) []byte {
	m := benchMessage(b, 0)
	if err := SignMessage(context.Background(), keyOne(b), m); err != nil {
		b.Fatal(err)
	}
	enc, err := m.Marshal()
	if err != nil {
		b.Fatal(err)
	}
	return enc
}

// BenchmarkMarshal is the encode side on the publishing gateway's path:
// one allocation, the encoding itself.
func BenchmarkMarshal(b *testing.B) {
	m := benchMessage(b, 0)
	if err := SignMessage(context.Background(), keyOne(b), m); err != nil {
		b.Fatal(err)
	}
	b.ReportAllocs()
	for b.Loop() {
		if _, err := m.Marshal(); err != nil {
			b.Fatal(err)
		}
	}
}
