package gateway

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/tributary-iot/tributary/wsock"
)

// python finds a Python 3 that has the websockets package (Debian's
// python3-websockets goes with /usr/bin/python3).
func python(t *testing.T) string {
	t.Helper()
	for _, p := range []string{"/usr/bin/python3", "python3"} {
		if path, err := exec.LookPath(p); err == nil && exec.Command(path, "-c", "import websockets").Run() == nil {
			return path
		}
	}
	lookTool(t, "python3-with-websockets")
	return ""
}

// wsApp is a gateway serving apps, with what its tests address.
type wsApp struct {
	*testGateway
	stream string
}

func newWSApp(t testing.TB, extra string) *wsApp {
	return newWSAppPings(t, "1s", extra)
}

// newWSAppPings is newWSApp with another ping interval.
func newWSAppPings(t testing.TB, pingInterval, extra string) *wsApp {
	g := appGateway(t, "[api]\nkeys = [\""+testAPIKey+"\"]\n[websocket]\naddress = \"127.0.0.1:0\"\nping_interval = \""+pingInterval+"\"\ndisconnect_timeout = \"1s\"\n"+extra)
	return &wsApp{testGateway: g, stream: "0x" + strings.Repeat("ef", 20) + "/ws/test"}
}

func (a *wsApp) wsURL(action, query string) string {
	u := fmt.Sprintf("ws://%s/streams/%s/%s?apiKey=%s", a.WebSocketAddr(), url.PathEscape(a.stream), action, testAPIKey)
	if query != "" {
		u += "&" + query
	}
	return u
}

// startSubscriber runs `wsclient.py subscribe` and returns once it is
// connected; the channel yields its messages, then closes.
func startSubscriber(t *testing.T, py, u string, n int) <-chan string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	cmd := exec.CommandContext(ctx, py, "testdata/apps/wsclient.py", "subscribe", u, fmt.Sprint(n))
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	var stderr strings.Builder
	cmd.Stderr = &stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	lines := bufio.NewScanner(out)
	if !lines.Scan() || lines.Text() != "connected" {
		cancel()
		_ = cmd.Wait()
		t.Fatalf("subscriber did not connect: %q %s", lines.Text(), stderr.String())
	}
	msgs := make(chan string, n)
	go func() {
		defer close(msgs)
		for lines.Scan() {
			msgs <- lines.Text()
		}
	}()
	t.Cleanup(func() {
		cancel()
		_ = cmd.Wait()
	})
	return msgs
}

func collect(t *testing.T, msgs <-chan string, n int) []string {
	t.Helper()
	var got []string
	timeout := time.After(30 * time.Second)
	for len(got) < n {
		select {
		case m, ok := <-msgs:
			if !ok {
				t.Fatalf("subscriber ended after %d of %d messages: %q", len(got), n, got)
			}
			got = append(got, m)
		case <-timeout:
			t.Fatalf("got %d of %d messages: %q", len(got), n, got)
		}
	}
	return got
}

// pyPublish sends lines over a /publish connection and waits for the pong.
func pyPublish(t *testing.T, py, u string, lines ...string) string {
	t.Helper()
	cmd := exec.Command(py, "testdata/apps/wsclient.py", "publish", u)
	cmd.Stdin = strings.NewReader(strings.Join(lines, "\n") + "\n")
	out, err := cmd.CombinedOutput()
	if err != nil || !strings.HasSuffix(string(out), "pong\n") {
		t.Fatalf("publish: %v: %s", err, out)
	}
	return strings.TrimSuffix(string(out), "pong\n")
}

func readings(from, n int) []string {
	var out []string
	for i := from; i < from+n; i++ {
		out = append(out, fmt.Sprintf(`{"n":%d}`, i))
	}
	return out
}

// Python apps publish and subscribe over the node's WebSocket plugin API;
// a refused reading gets an error message and the connection goes on.
func TestWebSocketPython(t *testing.T) {
	py := python(t)
	a := newWSApp(t, "")
	msgs := startSubscriber(t, py, a.wsURL("subscribe", ""), 5)
	errs := pyPublish(t, py, a.wsURL("publish", ""), append(readings(0, 3), "not json", "[1]", `{"n":3}`, `{"n":4}`)...)
	if strings.Count(errs, `"error"`) != 2 || !strings.Contains(errs, "not a JSON object") {
		t.Errorf("publisher got %q, want two errors naming the bad payloads", errs)
	}
	if got := collect(t, msgs, 5); strings.Join(got, " ") != strings.Join(readings(0, 5), " ") {
		t.Fatalf("subscriber got %q, want %q", got, readings(0, 5))
	}
	// partition=N on publish, partitions= on subscribe.
	p2 := startSubscriber(t, py, a.wsURL("subscribe", "partitions=1,2"), 2)
	pyPublish(t, py, a.wsURL("publish", "partition=2"), `{"p":2}`)
	pyPublish(t, py, a.wsURL("publish", "partition=0"), `{"p":0}`)
	pyPublish(t, py, a.wsURL("publish", "partition=1"), `{"p":1}`)
	if got := collect(t, p2, 2); got[0] != `{"p":2}` || got[1] != `{"p":1}` {
		t.Fatalf("partitions=1,2 subscriber got %q, want partition 2's then 1's reading", got)
	}
	for _, tc := range []struct{ url, want string }{
		{strings.Replace(a.wsURL("subscribe", ""), "apiKey="+testAPIKey, "apiKey=wrong", 1), "403"},
		{strings.Replace(a.wsURL("subscribe", ""), "?apiKey="+testAPIKey, "", 1), "401"},
		{strings.Replace(a.wsURL("subscribe", ""), "/subscribe", "/listen", 1), "400"},
		{a.wsURL("subscribe", "partitions=0,200"), "400"},
		{a.wsURL("publish", "partition=1&partitionKey=x"), "400"},
	} {
		out, err := exec.Command(py, "testdata/apps/wsclient.py", "status", tc.url).CombinedOutput()
		if err != nil || strings.TrimSpace(string(out)) != tc.want {
			t.Errorf("%s: %v %s, want %s", tc.url, err, out, tc.want)
		}
	}
}

// A subscriber disconnects, readings flow, it reconnects with from= and
// gets every reading once, in order: the stored ones, then live ones, with
// no gap or duplicate at the switch. payload_metadata gives it positions.
func TestWebSocketResumeFrom(t *testing.T) {
	py := python(t)
	a := newWSApp(t, "payload_metadata = true\n")
	pub := a.wsURL("publish", "")
	env := func(lines []string) []string {
		out := make([]string, len(lines))
		for i, l := range lines {
			out[i] = `{"content":` + l + `}`
		}
		return out
	}
	first := startSubscriber(t, py, a.wsURL("subscribe", ""), 3)
	pyPublish(t, py, pub, env(readings(0, 3))...)
	got := collect(t, first, 3)
	var meta struct {
		Content  json.RawMessage
		Metadata struct{ Timestamp int64 }
	}
	if err := json.Unmarshal([]byte(got[2]), &meta); err != nil || meta.Metadata.Timestamp == 0 {
		t.Fatalf("message %q: %v, want content and metadata", got[2], err)
	}
	// Offline: 3..9 are stored. Resume after the last one seen.
	pyPublish(t, py, pub, env(readings(3, 7))...)
	resumed := startSubscriber(t, py, a.wsURL("subscribe", fmt.Sprintf("from=%d", meta.Metadata.Timestamp+1)), 10)
	pyPublish(t, py, pub, env(readings(10, 3))...)
	var contents []string
	for _, m := range collect(t, resumed, 10) {
		if err := json.Unmarshal([]byte(m), &meta); err != nil {
			t.Fatal(err)
		}
		contents = append(contents, string(meta.Content))
	}
	// Readings 0-2 were published within one millisecond at most: those
	// at the last seen timestamp are not resent, the rest are.
	want := readings(3, 10)
	if strings.Join(contents, " ") != strings.Join(want, " ") {
		t.Fatalf("resumed subscriber got %q, want %q", contents, want)
	}
	// last=N: the newest N stored, then live.
	newest := startSubscriber(t, py, a.wsURL("subscribe", "last=2"), 3)
	pyPublish(t, py, pub, env(readings(13, 1))...)
	contents = contents[:0]
	for _, m := range collect(t, newest, 3) {
		if err := json.Unmarshal([]byte(m), &meta); err != nil {
			t.Fatal(err)
		}
		contents = append(contents, string(meta.Content))
	}
	if want := readings(11, 3); strings.Join(contents, " ") != strings.Join(want, " ") {
		t.Fatalf("last=2 subscriber got %q, want %q", contents, want)
	}
}

// Node's ws package, as a Streamr node app would use it: a subscription
// and a publisher on two connections, application pings answered.
func TestWebSocketNode(t *testing.T) {
	node := lookTool(t, "node")
	dir := "testdata/apps/wsnode"
	if _, err := os.Stat(filepath.Join(dir, "node_modules", "ws")); err != nil {
		if os.Getenv("TRIBUTARY_REQUIRE_TOOLS") != "" {
			t.Fatalf("%s: run npm ci there (scripts/test.sh does): %v", dir, err)
		}
		t.Skipf("%s: npm ci not run", dir)
	}
	a := newWSApp(t, "")
	out, err := exec.Command(node, filepath.Join(dir, "wsapp.js"), a.wsURL("subscribe", ""), a.wsURL("publish", "partitionKeyField=from"), "20").CombinedOutput()
	if err != nil {
		t.Fatalf("node: %v\n%s", err, out)
	}
	var got []struct{ Seq int }
	if err := json.Unmarshal(out, &got); err != nil {
		t.Fatalf("node printed %q: %v", out, err)
	}
	for i, m := range got {
		if m.Seq != i {
			t.Fatalf("message %d has seq %d: %s", i, m.Seq, out)
		}
	}
}

// metric reads one sample of the gateway's /metrics.
func metric(t *testing.T, g *testGateway, sample string) float64 {
	t.Helper()
	_, body := curl(t, "-H", "Authorization: Bearer "+testAPIKey, "http://"+g.HTTPAddr().String()+"/metrics")
	for line := range strings.Lines(body) {
		if v, ok := strings.CutPrefix(line, sample+" "); ok {
			var f float64
			fmt.Sscan(v, &f)
			return f
		}
	}
	return 0
}

func waitMetric(t *testing.T, g *testGateway, sample string, want float64) {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for metric(t, g, sample) != want {
		if time.Now().After(deadline) {
			t.Fatalf("%s = %v, want %v", sample, metric(t, g, sample), want)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// A subscriber that never reads while readings flow is disconnected once
// a write outlasts write_timeout (counted), holding at most a page of
// messages meanwhile; one that answers no pings is found dead. Neither
// holds up publishers or other subscribers.
func TestWebSocketSlowAndDeadSubscribers(t *testing.T) {
	a := newWSApp(t, "write_timeout = \"1s\"\n")
	ctx := context.Background()
	// Dead: the client never reads, so it never answers the server's pings.
	dead, err := wsock.Dial(ctx, a.wsURL("subscribe", ""), nil, wsock.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer dead.Close()
	waitMetric(t, a.testGateway, `tributary_app_subscribers_dropped_total{reason="dead"}`, 1)

	slowApp := newWSAppPings(t, "1h", "write_timeout = \"1s\"\n")
	slow, err := wsock.Dial(ctx, slowApp.wsURL("subscribe", ""), nil, wsock.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer slow.Close()
	live, err := wsock.Dial(ctx, slowApp.wsURL("subscribe", ""), nil, wsock.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer live.Close()
	const n = 400 // 26 MB: more than loopback's socket buffers hold
	got := make(chan error, 1)
	go func() {
		for i := range n {
			if _, _, err := live.Read(); err != nil {
				got <- fmt.Errorf("the reading subscriber got %d of %d messages: %w", i, n, err)
				return
			}
		}
		got <- nil
	}()
	pub := "http://" + slowApp.HTTPAddr().String() + "/streams/" + url.PathEscape(slowApp.stream) + "/"
	body := `{"pad":"` + strings.Repeat("x", 64<<10) + `"}`
	for i := range n {
		req, _ := http.NewRequest(http.MethodPost, pub, strings.NewReader(body))
		req.Header.Set("Authorization", "Bearer "+testAPIKey)
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		_, _ = io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		if resp.StatusCode != 200 {
			t.Fatalf("publish %d: %s", i, resp.Status)
		}
	}
	waitMetric(t, slowApp.testGateway, `tributary_app_subscribers_dropped_total{reason="slow"}`, 1)
	select {
	case err := <-got:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(30 * time.Second):
		t.Fatal("the reading subscriber stalled with the other")
	}
}

// Beyond websocket.max_connections a handshake gets 503, counted; a
// closed connection frees its place.
func TestWebSocketMaxConnections(t *testing.T) {
	a := newWSApp(t, "max_connections = 2\n")
	ctx := context.Background()
	var open []*wsock.Conn
	for range 2 {
		c, err := wsock.Dial(ctx, a.wsURL("subscribe", ""), nil, wsock.Options{})
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		open = append(open, c)
	}
	if _, err := wsock.Dial(ctx, a.wsURL("subscribe", ""), nil, wsock.Options{}); err == nil || !strings.Contains(err.Error(), "503") {
		t.Fatalf("third connection: %v, want 503", err)
	}
	if got := metric(t, a.testGateway, `tributary_app_refused_total{interface="websocket",reason="max_connections"}`); got != 1 {
		t.Errorf("refusals counted: %v, want 1", got)
	}
	_ = open[0].CloseWith(wsock.CloseNormal, "")
	deadline := time.Now().Add(10 * time.Second)
	for {
		c, err := wsock.Dial(ctx, a.wsURL("subscribe", ""), nil, wsock.Options{})
		if err == nil {
			c.Close()
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("no place after a close: %v", err)
		}
		time.Sleep(50 * time.Millisecond)
	}
}
