package e2ee

import (
	"context"
	"testing"
	"time"

	"github.com/tributary-iot/tributary/streamr"
)

// FuzzHandleKeyExchange feeds encoded messages of any bytes that decode to
// key exchange messages to a publisher and a subscriber: no panic, no
// hang, and nothing is answered for a requester that may not subscribe.
func FuzzHandleKeyExchange(f *testing.F) {
	ka, kb := genKeyF(f), genKeyF(f)
	aAddr := ka.Address()
	sp, _ := streamr.NewStreamPartID(streamr.StreamID(streamr.UserID(aAddr[:])+"/secret"), 0)
	req := &streamr.StreamMessage{
		ID:   streamr.MessageID{StreamID: sp.Stream, Timestamp: 1, MsgChainID: "c"},
		Body: &streamr.GroupKeyRequest{RequestID: "r", RecipientID: ka.PublisherID(), PublicKey: []byte("x"), GroupKeyIDs: []string{"k"}},
	}
	_ = streamr.SignMessage(context.Background(), kb, req)
	enc, _ := req.Marshal()
	f.Add(enc)
	resp := &streamr.StreamMessage{
		ID:   streamr.MessageID{StreamID: sp.Stream, Timestamp: 1, MsgChainID: "c"},
		Body: &streamr.GroupKeyResponse{RequestID: "r", RecipientID: kb.PublisherID(), GroupKeys: []streamr.EncryptedGroupKey{{ID: "k", Data: make([]byte, 48)}}},
	}
	_ = streamr.SignMessage(context.Background(), ka, resp)
	enc, _ = resp.Marshal()
	f.Add(enc)

	pub := &memSecrets{m: map[string][]byte{}}
	sent := &countTopic{}
	a, err := New(Config{Signer: ka, Secrets: pub, KeyRequestTimeout: time.Millisecond})
	if err != nil {
		f.Fatal(err)
	}
	a.Attach(sp, sent)
	b, _ := New(Config{Signer: kb, Secrets: &memSecrets{m: map[string][]byte{}}, KeyType: streamr.AsymmetricMLKEM})
	b.Attach(sp, sent)
	f.Fuzz(func(t *testing.T, data []byte) {
		m, err := streamr.Unmarshal(data)
		if err != nil {
			return
		}
		a.HandleMessage(context.Background(), m)
		b.HandleMessage(context.Background(), m)
		if sent.n != 0 {
			t.Fatal("a publisher without subscribers answered a key request")
		}
	})
}

func genKeyF(f *testing.F) *streamr.EVMKey {
	k, err := streamr.GenerateEVMKey()
	if err != nil {
		f.Fatal(err)
	}
	return k
}

type memSecrets struct{ m map[string][]byte }

func (s *memSecrets) PutSecret(_ context.Context, name string, v []byte) error {
	s.m[name] = v
	return nil
}

func (s *memSecrets) Secret(name string) ([]byte, bool, error) {
	v, ok := s.m[name]
	return v, ok, nil
}

type countTopic struct{ n int }

func (c *countTopic) Publish(_ context.Context, e [][]byte) (int, error) {
	c.n += len(e)
	return len(e), nil
}
