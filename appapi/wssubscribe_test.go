package appapi

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/tributary-iot/tributary/storage"
	"github.com/tributary-iot/tributary/streamr"
	"github.com/tributary-iot/tributary/wsock"
)

// A live subscriber follows the whole log: messages other gateways signed,
// which this one received and stored, reach it like its own (the log
// lists them with their bytes; only the forwarder's listing leaves those
// out).
func TestWebSocketFollowsReceivedMessages(t *testing.T) {
	store, err := storage.Open(storage.Options{Dir: t.TempDir(), MinFreeBytes: -1})
	if err != nil {
		t.Fatal(err)
	}
	defer store.Close()
	stream := streamr.StreamID("0x" + strings.Repeat("ab", 20) + "/in")
	receive := func(n int) {
		t.Helper()
		m := &streamr.StreamMessage{
			ID:   streamr.MessageID{StreamID: stream, Timestamp: int64(1000 + n), PublisherID: make([]byte, 20), MsgChainID: "other"},
			Body: &streamr.ContentMessage{Content: fmt.Appendf(nil, `{"n":%d}`, n), ContentType: streamr.ContentJSON},
		}
		enc, err := m.Marshal()
		if err != nil {
			t.Fatal(err)
		}
		if _, err := store.StoreReceived(t.Context(), []streamr.Envelope{{Msg: m, Encoded: enc}}, nil); err != nil {
			t.Fatal(err)
		}
	}
	srv := serveWS(t, store)

	// last=1: the subscriber takes its log position before it sends
	// history, so once 0 arrives, 1 can only come from the live log.
	receive(0)
	u := fmt.Sprintf("ws://%s/streams/%s/subscribe?last=1", srv.ln.Addr(), url.PathEscape(string(stream)))
	c, err := wsock.Dial(t.Context(), u, nil, wsock.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	next := func() string {
		t.Helper()
		if err := c.SetReadDeadline(time.Now().Add(10 * time.Second)); err != nil {
			t.Fatal(err)
		}
		_, b, err := c.Read()
		if err != nil {
			t.Fatalf("subscriber: %v (close code %d)", err, wsock.CloseCode(err))
		}
		return string(b)
	}
	if got := next(); got != `{"n":0}` {
		t.Fatalf("history: got %s, want {\"n\":0}", got)
	}
	receive(1)
	srv.Notify()
	if got := next(); got != `{"n":1}` {
		t.Fatalf("live: got %s, want {\"n\":1}", got)
	}
}

// serveWS serves the WebSocket interface on loopback over log until the
// test ends.
func serveWS(t *testing.T, log Log) *WSServer {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv, err := NewWSServer(ln, WSConfig{Publish: PublishConfig{Publisher: &recordingPublisher{}}, Log: log, PingInterval: -1})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- srv.Serve(ctx) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil && !errors.Is(err, context.Canceled) {
			t.Errorf("serve: %v", err)
		}
	})
	return srv
}
