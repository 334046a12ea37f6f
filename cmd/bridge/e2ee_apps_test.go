package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"regexp"
	"sync"
	"testing"
	"time"

	"github.com/tributary-iot/tributary/bridge"
	"github.com/tributary-iot/tributary/wsock"
)

// wsOnAnyPort turns the app interfaces' WebSocket listener on.
const wsOnAnyPort = "[websocket]\naddress = \"127.0.0.1:0\"\n"

var wsListeningLog = regexp.MustCompile(`msg="websocket interface listening" .*address=(\S+)`)

// wsAddr is the address the current run's WebSocket interface bound.
func (in *instance) wsAddr() string {
	in.t.Helper()
	all := wsListeningLog.FindAllStringSubmatch(in.logs(), -1)
	if len(all) == 0 {
		in.t.Fatalf("no websocket listener in the log")
	}
	return all[len(all)-1][1]
}

// wsReadings is what an app's WebSocket subscription received: the "n"
// of each {"n":…} message, in arrival order.
type wsReadings struct {
	mu  sync.Mutex
	got []int
	bad []string // messages that are not {"n":…}
}

func (r *wsReadings) all() ([]int, []string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]int(nil), r.got...), append([]string(nil), r.bad...)
}

// wsSubscribe subscribes to stream on in's WebSocket interface with query
// (from=, last=) until the test ends.
func wsSubscribe(t *testing.T, in *instance, stream, query string) *wsReadings {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	u := fmt.Sprintf("ws://%s/streams/%s/subscribe?%s", in.wsAddr(), url.PathEscape(stream), query)
	c, err := wsock.Dial(ctx, u, nil, wsock.Options{})
	if err != nil {
		cancel()
		t.Fatal(err)
	}
	r := &wsReadings{}
	done := make(chan struct{})
	go func() {
		defer close(done)
		for {
			_, data, err := c.Read()
			if err != nil {
				return
			}
			var v struct{ N *int }
			r.mu.Lock()
			if json.Unmarshal(data, &v) != nil || v.N == nil {
				r.bad = append(r.bad, string(data))
			} else {
				r.got = append(r.got, *v.N)
			}
			r.mu.Unlock()
		}
	}()
	t.Cleanup(func() { cancel(); _ = c.Close(); <-done })
	return r
}

// waitWS waits until r holds n readings.
func waitWS(t *testing.T, r *wsReadings, n int) {
	t.Helper()
	for deadline := time.Now().Add(30 * time.Second); ; time.Sleep(20 * time.Millisecond) {
		got, bad := r.all()
		if len(got) >= n || len(bad) > 0 {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("websocket subscriber got %v within 30s, want %d readings", got, n)
		}
	}
}

// resend asks in's HTTP API for all of stream's partition 0 in format.
func resend(t *testing.T, in *instance, stream, format string) []byte {
	t.Helper()
	u := fmt.Sprintf("http://%s/streams/%s/data/partitions/0/from?fromTimestamp=0&format=%s", in.http, url.PathEscape(stream), format)
	client := &http.Client{Timeout: 2 * time.Minute} // a reader without keys waits for each of them
	resp, err := client.Get(u)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil || resp.StatusCode != http.StatusOK {
		t.Fatalf("resend %s: %s %q: %v", format, resp.Status, body, err)
	}
	return body
}

// contentObjects is the format=object resend answer's content messages.
func contentObjects(t *testing.T, in *instance, stream string) []bridge.MessageObject {
	t.Helper()
	var all, out []bridge.MessageObject
	if err := json.Unmarshal(resend(t, in, stream, "object"), &all); err != nil {
		t.Fatal(err)
	}
	for _, o := range all {
		if o.MessageType == 27 { // the SDK's content message; the others are key exchange
			out = append(out, o)
		}
	}
	return out
}
