package overlay

import (
	"testing"

	pb "github.com/libp2p/go-libp2p-pubsub/pb"
)

func TestGossipIDCoversContent(t *testing.T) {
	pub := newPublisher(t)
	m := message(t, pub.key, pub.part(t, 0), pub.chain, 1000, 0)
	genuine := encode(t, m)
	m.Content().Content = []byte(`{"temp":-40}`) // same message ID and signature
	forged := encode(t, m)
	id := gossipID(&pb.Message{Data: genuine})
	if len(id) != gossipIDLen {
		t.Fatalf("ID length %d, want %d", len(id), gossipIDLen)
	}
	if gossipID(&pb.Message{Data: append([]byte(nil), genuine...)}) != id {
		t.Error("identical bytes got different IDs")
	}
	if gossipID(&pb.Message{Data: forged}) == id {
		t.Error("altered content kept the genuine message's ID")
	}
}

func BenchmarkGossipID(b *testing.B) {
	pub := newPublisher(b)
	m := &pb.Message{Data: pub.signed(b, pub.part(b, 0), 1700000000000, 0)}
	b.ReportAllocs()
	for b.Loop() {
		_ = gossipID(m)
	}
}
