package streamrnet

import (
	"bytes"
	"fmt"
	"testing"
	"time"

	"github.com/tributary-iot/tributary/streamr"
	"github.com/tributary-iot/tributary/streamrnet/jsnet"
)

// TestKeyRequestsOnPublishConnection: a real JS node routes a
// GroupKeyRequest to the proxy clients whose userId is its recipient,
// whatever their direction (issue 18). The client, joined only to
// publish, delivers the request addressed to it and nothing else: not
// one for another user, not the partition's content.
func TestKeyRequestsOnPublishConnection(t *testing.T) {
	ports := jsnet.FreePorts(t, 2)
	net := jsnet.Start(t, [2]int{ports[0], ports[1]}, testPart)
	key, err := streamr.GenerateEVMKey()
	if err != nil {
		t.Fatal(err)
	}
	got := make(chan *streamr.StreamMessage, 100)
	c := newTestClient(t, []string{net.ProxyURL}, key, func(_ string, raw []byte) {
		m, err := streamr.Unmarshal(raw)
		if err != nil {
			t.Errorf("delivered an undecodable message: %v", err)
			return
		}
		got <- m
	})
	c.Join(testPart, Publish)
	runClient(t, c)
	waitJoined(t, c, testPart)

	me := streamr.UserID(key.PublisherID())
	other, _ := streamr.GenerateEVMKey()
	net.Send(map[string]any{"cmd": "publish", "streamPart": testPart, "contents": []string{`{"content":true}`}})
	net.Send(map[string]any{"cmd": "keyRequest", "streamPart": testPart, "recipient": streamr.UserID(other.PublisherID()), "groupKeyId": "k-other"})
	net.Send(map[string]any{"cmd": "keyRequest", "streamPart": testPart, "recipient": me, "groupKeyId": "k-mine"})
	select {
	case m := <-got:
		req, ok := m.Body.(*streamr.GroupKeyRequest)
		if !ok || !bytes.Equal(req.RecipientID, key.PublisherID()) || fmt.Sprint(req.GroupKeyIDs) != "[k-mine]" {
			t.Fatalf("a publishing connection delivered %T %+v, want only the key request for us", m.Body, m.Body)
		}
		if err := streamr.VerifySignature(m); err != nil {
			t.Fatalf("the JS-signed key request does not verify: %v", err)
		}
	case <-time.After(30 * time.Second):
		t.Fatalf("the key request for us never arrived on the publishing connection: %+v", c.Proxies())
	}
	select {
	case m := <-got:
		t.Fatalf("delivered a second message: %T %+v", m.Body, m.Body)
	case <-time.After(time.Second):
	}
}

// A node that sends a publishing client more than the key requests for it
// (content, a request for another user, garbage) has it dropped and
// counted as not_subscribed.
func TestPublishPartitionDeliversOnlyOurKeyRequests(t *testing.T) {
	me := testKey(t)
	var got []*streamr.StreamMessage
	c, err := New(Config{Proxies: []string{"ws://a"}, UserID: me.PublisherID(), Dialer: WebSocketDialer{},
		Deliver: func(_ string, raw []byte) {
			m, err := streamr.Unmarshal(raw)
			if err != nil {
				t.Fatal(err)
			}
			got = append(got, m)
		}})
	if err != nil {
		t.Fatal(err)
	}
	c.Join(testPart, Publish)
	sp, _ := streamr.ParseStreamPartID(testPart)
	request := func(recipient []byte) []byte {
		m := &streamr.StreamMessage{
			ID:   streamr.MessageID{StreamID: sp.Stream, StreamPartition: int32(sp.Partition), Timestamp: time.Now().UnixMilli(), MsgChainID: streamr.NewChainID()},
			Body: &streamr.GroupKeyRequest{RequestID: streamr.NewUUID(), RecipientID: recipient, PublicKey: []byte("pem"), GroupKeyIDs: []string{"k"}},
		}
		if err := streamr.SignMessage(t.Context(), testKey(t), m); err != nil {
			t.Fatal(err)
		}
		b, err := m.Marshal()
		if err != nil {
			t.Fatal(err)
		}
		return b
	}
	content := signedChain(t, testKey(t), testPart, 1, func(int) string { return `{}` })[0]
	for _, raw := range [][]byte{content, request(testKey(t).PublisherID()), {10, 0}, request(me.PublisherID())} {
		c.deliver(c.proxies[0], testPart, raw)
	}
	if len(got) != 1 {
		t.Fatalf("delivered %d messages on a publishing partition, want only the key request for us", len(got))
	}
	if r, ok := got[0].Body.(*streamr.GroupKeyRequest); !ok || !bytes.Equal(r.RecipientID, me.PublisherID()) {
		t.Fatalf("delivered %+v", got[0].Body)
	}
	if st := c.Proxies()[0]; st.Errors != 3 {
		t.Fatalf("counted %d drops, want 3", st.Errors)
	}
}
