package overlay

import (
	"testing"

	"google.golang.org/protobuf/encoding/protowire"

	"github.com/tributary-iot/tributary/streamr"
)

func TestMessageID(t *testing.T) {
	pub := newPublisher(t)
	part := pub.part(t, 0)
	base := message(t, pub.key, part, pub.chain, 1000, 0)
	same := encode(t, base)

	resigned := message(t, pub.key, part, pub.chain, 1000, 0) // new content ("sent" time)
	nextSeq := message(t, pub.key, part, pub.chain, 1000, 1)
	otherChain := message(t, pub.key, part, "other-chain", 1000, 0)

	// The same message with its messageId field split in two and repeated:
	// protobuf merges the occurrences, and so must the ID.
	var split []byte
	split = protowire.AppendTag(split, fieldMessageID, protowire.BytesType)
	split = protowire.AppendBytes(split, protowire.AppendString(protowire.AppendTag(nil, fieldStreamID, protowire.BytesType), "wrong/stream"))
	split = append(split, same...)

	tests := []struct {
		name     string
		data     []byte
		wantSame bool
	}{
		{"identical bytes", encode(t, base), true},
		{"repeated messageId field merges", split, true},
		{"same ID, different signature", encode(t, resigned), false},
		{"next sequence number", encode(t, nextSeq), false},
		{"other chain", encode(t, otherChain), false},
		{"undecodable", []byte{0x0a, 0xff}, false},
	}
	want := messageID(same)
	if len(want) != idLen {
		t.Fatalf("ID length %d, want %d", len(want), idLen)
	}
	if got := messageIDOf(base); got != want {
		t.Fatalf("messageIDOf = %x, messageID = %x", got, want)
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			if got := messageID(tc.data); (got == want) != tc.wantSame {
				t.Errorf("ID %x vs %x: same = %v, want %v", got, want, got == want, tc.wantSame)
			}
		})
	}
}

// FuzzMessageID checks that the partial decoder used for pubsub IDs agrees
// with the full decoder on every input the full decoder accepts, and never
// panics on anything else.
func FuzzMessageID(f *testing.F) {
	pub := newPublisher(f)
	f.Add(pub.signed(f, pub.part(f, 1), 1700000000000, 7))
	f.Add([]byte{0x0a, 0x00})
	f.Add([]byte{})
	f.Fuzz(func(t *testing.T, data []byte) {
		id := messageID(data)
		m, err := streamr.Unmarshal(data)
		if err != nil {
			return
		}
		if want := messageIDOf(m); id != want {
			t.Fatalf("messageID = %x, from decoded message %x", id, want)
		}
	})
}

func BenchmarkMessageID(b *testing.B) {
	pub := newPublisher(b)
	data := pub.signed(b, pub.part(b, 0), 1700000000000, 0)
	b.ReportAllocs()
	for b.Loop() {
		_ = messageID(data)
	}
}
