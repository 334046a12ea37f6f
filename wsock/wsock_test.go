package wsock

import (
	"bytes"
	"context"
	"errors"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"go.uber.org/goleak"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// serve runs handler on each upgraded connection of a 127.0.0.1 server.
func serve(t *testing.T, opts Options, handler func(*Conn)) string {
	t.Helper()
	up := NewUpgrader(opts, nil)
	var (
		mu     sync.Mutex
		closed bool
		wg     sync.WaitGroup // handlers of hijacked connections, which srv.Close does not wait for
	)
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		if closed {
			mu.Unlock()
			return
		}
		wg.Add(1)
		mu.Unlock()
		defer wg.Done()
		c, err := up.Upgrade(w, r, nil)
		if err != nil {
			return
		}
		defer c.Close()
		handler(c)
	}))
	t.Cleanup(func() {
		srv.Close()
		mu.Lock()
		closed = true
		mu.Unlock()
		wg.Wait()
	})
	return "ws" + strings.TrimPrefix(srv.URL, "http")
}

func dial(t *testing.T, url string, opts Options) *Conn {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	c, err := Dial(ctx, url, nil, opts)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = c.Close() })
	return c
}

func echo(c *Conn) {
	for {
		typ, p, err := c.Read()
		if err != nil {
			return
		}
		if c.Write(typ, p) != nil {
			return
		}
	}
}

func TestEcho(t *testing.T) {
	c := dial(t, serve(t, Options{}, echo), Options{})
	tests := []struct {
		typ MessageType
		p   []byte
	}{
		{Text, []byte("ping")},
		{Binary, []byte{0, 1, 2, 0xff}},
		{Text, bytes.Repeat([]byte("x"), 64<<10)},
	}
	for _, tt := range tests {
		if err := c.Write(tt.typ, tt.p); err != nil {
			t.Fatal(err)
		}
		typ, p, err := c.Read()
		if err != nil || typ != tt.typ || !bytes.Equal(p, tt.p) {
			t.Fatalf("echo of %d bytes type %d: got %d bytes type %d, %v", len(tt.p), tt.typ, len(p), typ, err)
		}
	}
}

func TestReadLimit(t *testing.T) {
	got := make(chan error, 1)
	url := serve(t, Options{ReadLimit: 1024}, func(c *Conn) {
		_, _, err := c.Read()
		got <- err
	})
	c := dial(t, url, Options{})
	if err := c.Write(Binary, make([]byte, 1025)); err != nil {
		t.Fatal(err)
	}
	if err := <-got; !errors.Is(err, ErrReadLimit) {
		t.Fatalf("server read of 1025 bytes with limit 1024: %v, want ErrReadLimit", err)
	}
	// The server closes with 1009; the client's read reports it.
	_, _, err := c.Read()
	if code := CloseCode(err); code != CloseMessageTooBig {
		t.Fatalf("client read after the oversized message: %v (code %d), want close %d", err, code, CloseMessageTooBig)
	}
}

func TestCloseWithCode(t *testing.T) {
	url := serve(t, Options{}, func(c *Conn) { _ = c.CloseWith(ClosePolicyViolation, "wrong key") })
	c := dial(t, url, Options{})
	_, _, err := c.Read()
	if CloseCode(err) != ClosePolicyViolation || !strings.Contains(err.Error(), "wrong key") {
		t.Fatalf("read: %v, want close %d with its reason", err, ClosePolicyViolation)
	}
	if IsNormalClose(err) {
		t.Fatal("a policy violation counted as a normal close")
	}
}

// A peer that completes the handshake and then neither reads nor answers
// pings: KeepAlive makes the client's Read fail within interval + timeout.
func TestKeepAliveFindsSilentPeer(t *testing.T) {
	release := make(chan struct{})
	url := serve(t, Options{}, func(*Conn) { <-release })
	defer close(release)
	c := dial(t, url, Options{})
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- c.KeepAlive(ctx, 50*time.Millisecond, 100*time.Millisecond) }()
	start := time.Now()
	_, _, err := c.Read()
	cancel()
	<-done
	var ne net.Error
	if !errors.As(err, &ne) || !ne.Timeout() {
		t.Fatalf("read from a silent peer: %v, want a timeout", err)
	}
	if waited := time.Since(start); waited > 5*time.Second {
		t.Fatalf("silent peer found after %v", waited)
	}
}

// A peer that answers pings (by reading) keeps the connection up past many
// deadlines. Pongs are handled inside Read, so a reader runs throughout,
// as in every user of KeepAlive.
func TestKeepAliveKeepsLivePeer(t *testing.T) {
	url := serve(t, Options{}, echo)
	c := dial(t, url, Options{})
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- c.KeepAlive(ctx, 50*time.Millisecond, 500*time.Millisecond) }()
	type read struct {
		p   []byte
		err error
	}
	reads := make(chan read, 1)
	go func() {
		_, p, err := c.Read()
		reads <- read{p, err}
	}()
	time.Sleep(1500 * time.Millisecond) // three deadlines' worth without data
	if err := c.Write(Text, []byte("still here")); err != nil {
		t.Fatal(err)
	}
	r := <-reads
	cancel()
	<-done
	if r.err != nil || string(r.p) != "still here" {
		t.Fatalf("read after idle keepalive: %q, %v", r.p, r.err)
	}
}

// A peer that never reads: Write fails within the write timeout instead of
// blocking once the socket buffers are full.
func TestWriteTimeout(t *testing.T) {
	release := make(chan struct{})
	url := serve(t, Options{}, func(*Conn) { <-release })
	defer close(release)
	c := dial(t, url, Options{WriteTimeout: 200 * time.Millisecond})
	chunk := make([]byte, 256<<10)
	deadline := time.Now().Add(20 * time.Second)
	for time.Now().Before(deadline) {
		if err := c.Write(Binary, chunk); err != nil {
			var ne net.Error
			if !errors.As(err, &ne) || !ne.Timeout() {
				t.Fatalf("write to a peer that never reads: %v, want a timeout", err)
			}
			return
		}
	}
	t.Fatal("writes to a peer that never reads never failed")
}

func TestDialRefusedNamesStatus(t *testing.T) {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		http.Error(w, "no", http.StatusUnauthorized)
	}))
	defer srv.Close()
	_, err := Dial(context.Background(), "ws"+strings.TrimPrefix(srv.URL, "http"), nil, Options{})
	if err == nil || !strings.Contains(err.Error(), "401") {
		t.Fatalf("Dial to a server answering 401: %v, want the status named", err)
	}
}

// Stream reads one byte stream across message boundaries, and its write
// deadline holds (gorilla resets the socket's own deadline on every frame).
func TestStream(t *testing.T) {
	got := make(chan []byte, 1)
	url := serve(t, Options{}, func(c *Conn) {
		b, _ := io.ReadAll(io.LimitReader(NewStream(c), 10))
		got <- b
	})
	c := dial(t, url, Options{})
	for _, part := range []string{"abc", "defg", "hij"} {
		if err := c.Write(Binary, []byte(part)); err != nil {
			t.Fatal(err)
		}
	}
	if b := <-got; string(b) != "abcdefghij" {
		t.Fatalf("stream read %q", b)
	}

	release := make(chan struct{})
	defer close(release)
	s := NewStream(dial(t, serve(t, Options{}, func(*Conn) { <-release }), Options{}))
	if err := s.SetWriteDeadline(time.Now().Add(200 * time.Millisecond)); err != nil {
		t.Fatal(err)
	}
	chunk := make([]byte, 256<<10)
	for start := time.Now(); time.Since(start) < 20*time.Second; {
		if _, err := s.Write(chunk); err != nil {
			return // the deadline held
		}
	}
	t.Fatal("stream writes to a peer that never reads ignored the write deadline")
}

func TestStreamRefusesText(t *testing.T) {
	got := make(chan error, 1)
	url := serve(t, Options{}, func(c *Conn) {
		_, err := NewStream(c).Read(make([]byte, 8))
		got <- err
	})
	c := dial(t, url, Options{})
	if err := c.Write(Text, []byte("mqtt?")); err != nil {
		t.Fatal(err)
	}
	if err := <-got; err == nil || !strings.Contains(err.Error(), "text message") {
		t.Fatalf("stream read of a text message: %v", err)
	}
}
