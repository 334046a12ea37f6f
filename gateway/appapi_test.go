package gateway

import (
	"encoding/json"
	"fmt"
	"net/url"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/tributary-iot/tributary/bridge"
	"github.com/tributary-iot/tributary/streamr"
)

// lookTool finds an external tool; without it the test is skipped, unless
// TRIBUTARY_REQUIRE_TOOLS is set (scripts/test.sh installs them): then it
// fails.
func lookTool(t testing.TB, names ...string) string {
	t.Helper()
	for _, name := range names {
		if path, err := exec.LookPath(name); err == nil {
			return path
		}
	}
	if os.Getenv("TRIBUTARY_REQUIRE_TOOLS") != "" {
		t.Fatalf("%v not found and TRIBUTARY_REQUIRE_TOOLS is set", names)
	}
	t.Skipf("%v not installed", names)
	return ""
}

// appGateway runs a gateway with the HTTP API and the WebSocket interface
// on random loopback ports, the overlay off, and extra config appended.
func appGateway(t testing.TB, extra string) *testGateway {
	t.Helper()
	g := newTestGateway(t, strings.Replace("[overlay]\nenabled = false\n"+extra, "[http]\naddress = \"\"\n", "", 1))
	g.cfg.HTTP.Address = "127.0.0.1:0"
	g.run(t)
	deadline := time.Now().Add(10 * time.Second)
	for g.HTTPAddr() == nil || (g.cfg.WebSocket.Address != "" && g.WebSocketAddr() == nil) {
		if time.Now().After(deadline) {
			t.Fatalf("HTTP or WebSocket interface not listening\n%s", g.logs)
		}
		time.Sleep(10 * time.Millisecond)
	}
	return g
}

// curl runs curl with args and returns the status and the body.
func curl(t *testing.T, args ...string) (int, string) {
	t.Helper()
	bin := lookTool(t, "curl")
	out, err := exec.Command(bin, append([]string{"-sS", "--max-time", "20", "-w", "\n%{http_code}"}, args...)...).Output()
	if err != nil {
		t.Fatalf("curl %v: %v", args, err)
	}
	s := string(out)
	i := strings.LastIndexByte(s, '\n')
	code, err := strconv.Atoi(s[i+1:])
	if err != nil {
		t.Fatalf("curl %v: status %q", args, s[i+1:])
	}
	return code, s[:i]
}

const testAPIKey = "test-key-1"

// The HTTP plugin's request sequence answered as a Streamr node answers
// it, by curl against a running gateway: publish, then read back as JSON.
func TestHTTPPublishAndJSONResend(t *testing.T) {
	g := appGateway(t, "[api]\nkeys = [\""+testAPIKey+"\"]\n[websocket]\naddress = \"\"\n")
	base := "http://" + g.HTTPAddr().String()
	stream := "0x" + strings.Repeat("ab", 20) + "/sensors/kitchen"
	pub := base + "/streams/" + url.PathEscape(stream) + "/"
	auth := "Authorization: Bearer " + testAPIKey

	for i := range 3 {
		u := pub
		if i == 1 {
			u = strings.TrimSuffix(pub, "/") // the node's route matches without the slash too
		}
		code, body := curl(t, "-H", auth, "-H", "Content-Type: application/json", "-d", fmt.Sprintf(`{"celsius":%d}`, 20+i),
			u+"?timestamp="+strconv.Itoa(1_700_000_000_000+i))
		if code != 200 || body != "OK" {
			t.Fatalf("publish %d: %d %q", i, code, body)
		}
	}
	code, body := curl(t, "-H", auth, base+"/streams/"+url.PathEscape(stream)+"/data/partitions/0/last?count=2")
	if code != 200 {
		t.Fatalf("resend: %d %s", code, body)
	}
	var msgs []bridge.MessageObject
	if err := json.Unmarshal([]byte(body), &msgs); err != nil {
		t.Fatalf("resend answer %q: %v", body, err)
	}
	if len(msgs) != 2 || string(msgs[0].Content) != `{"celsius":21}` || string(msgs[1].Content) != `{"celsius":22}` {
		t.Fatalf("last 2 = %s", body)
	}
	publisher := g.Identity().Publisher
	for _, m := range msgs {
		if m.StreamID != stream || m.PublisherID != publisher || m.MessageType != 27 || m.MsgChainID == "" || len(m.Signature) != 130 {
			t.Fatalf("message %+v: want stream %s, publisher %s, type 27, a chain and a 65-byte signature", m, stream, publisher)
		}
	}
	if msgs[1].Timestamp != 1_700_000_000_002 {
		t.Errorf("timestamp %d, want the query's 1700000000002", msgs[1].Timestamp)
	}

	code, body = curl(t, "-H", auth, base+"/streams")
	var parts []bridge.StoredPart
	if err := json.Unmarshal([]byte(body), &parts); code != 200 || err != nil {
		t.Fatalf("/streams: %d %s %v", code, body, err)
	}
	want := bridge.StoredPart{StreamPart: stream + "#0", StreamID: stream, Count: 3, FirstTimestamp: 1_700_000_000_000, LastTimestamp: 1_700_000_000_002}
	if len(parts) != 1 || parts[0] != want {
		t.Fatalf("/streams = %+v, want [%+v]", parts, want)
	}
}

// Bad requests get the node's status codes and a JSON error naming the
// problem, and nothing already stored is lost.
func TestHTTPPublishRefusals(t *testing.T) {
	g := appGateway(t, "[api]\nkeys = [\""+testAPIKey+"\"]\nmax_message_size = \"1 KiB\"\npartitions = 4\n[websocket]\naddress = \"\"\n")
	base := "http://" + g.HTTPAddr().String()
	stream := url.PathEscape("0x" + strings.Repeat("cd", 20) + "/s")
	auth := "Authorization: Bearer " + testAPIKey
	big := `{"x":"` + strings.Repeat("a", 2000) + `"}`
	for _, tc := range []struct {
		name   string
		args   []string
		status int
		errHas string
	}{
		{"no key", []string{"-d", `{"a":1}`, base + "/streams/" + stream + "/"}, 401, "API key required"},
		{"wrong key", []string{"-H", "Authorization: Bearer nope", "-d", `{"a":1}`, base + "/streams/" + stream + "/"}, 403, "not valid"},
		{"not JSON", []string{"-H", auth, "-d", `hello`, base + "/streams/" + stream + "/"}, 400, "not a JSON object"},
		{"array", []string{"-H", auth, "-d", `[1,2]`, base + "/streams/" + stream + "/"}, 400, "not a JSON object"},
		{"empty", []string{"-H", auth, "-X", "POST", base + "/streams/" + stream + "/"}, 400, "payload missing"},
		{"too large", []string{"-H", auth, "-d", big, base + "/streams/" + stream + "/"}, 413, "api.max_message_size"},
		{"bad stream", []string{"-H", auth, "-d", `{"a":1}`, base + "/streams/not%20a%20stream/"}, 400, "stream ID"},
		{"partition and key", []string{"-H", auth, "-d", `{"a":1}`, base + "/streams/" + stream + "/?partition=1&partitionKey=k"}, 422, "invalid combination"},
		{"partition range", []string{"-H", auth, "-d", `{"a":1}`, base + "/streams/" + stream + "/?partition=100"}, 400, "partition"},
		{"bad timestamp", []string{"-H", auth, "-d", `{"a":1}`, base + "/streams/" + stream + "/?timestamp=soon"}, 400, "timestamp"},
		{"resend without key", []string{base + "/streams/" + stream + "/data/partitions/0/last?count=1"}, 401, "API key"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			code, body := curl(t, tc.args...)
			var e struct{ Error string }
			if code != tc.status || json.Unmarshal([]byte(body), &e) != nil || !strings.Contains(e.Error, tc.errHas) {
				t.Fatalf("%d %s, want %d with an error naming %q", code, body, tc.status, tc.errHas)
			}
		})
	}
	// partitionKey hashes like the SDK onto api.partitions.
	code, body := curl(t, "-H", auth, "-d", `{"a":1}`, base+"/streams/"+stream+"/?partitionKey=kitchen")
	if code != 200 {
		t.Fatalf("keyed publish: %d %s", code, body)
	}
	p := streamr.PartitionForKey(4, "kitchen")
	// A publish is answered once the reading is durable; it is signed
	// just after, and only signed messages are served.
	for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(20 * time.Millisecond) {
		code, body = curl(t, "-H", auth, fmt.Sprintf("%s/streams/%s/data/partitions/%d/last?count=5", base, stream, p))
		if code == 200 && strings.Contains(body, `"content":{"a":1}`) {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("partition %d: %d %s", p, code, body)
		}
	}
	if code, _ := curl(t, base+"/healthz"); code != 200 {
		t.Errorf("/healthz needs no key: %d", code)
	}
}
