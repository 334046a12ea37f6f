package main

import (
	"encoding/json"
	"fmt"
	"net/http"
	"net/url"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// An HTTP publish answered 200 is durable: the real binary is killed with
// SIGKILL while 4 apps publish over HTTP, and after a restart `bridge
// export` (through the running gateway's HTTP API, with the API key) has
// every acknowledged reading, once each, in one chain order.
func TestHTTPPublishSurvivesKill9(t *testing.T) {
	if testing.Short() {
		t.Skip("runs the real binary")
	}
	const key = "crash-test-key"
	in := newInstance(t, "[api]\nkeys = [\""+key+"\"]\n")
	in.start()
	stream := in.address() + "/apps/crash"
	u := "http://" + in.http + "/streams/" + url.PathEscape(stream) + "/"

	var mu sync.Mutex
	acked := map[int]bool{}
	var next atomic.Int64
	var wg sync.WaitGroup
	stop := make(chan struct{})
	for range 4 {
		wg.Go(func() {
			client := &http.Client{Timeout: 5 * time.Second}
			for {
				select {
				case <-stop:
					return
				default:
				}
				n := int(next.Add(1))
				req, _ := http.NewRequest(http.MethodPost, u, strings.NewReader(fmt.Sprintf(`{"n":%d}`, n)))
				req.Header.Set("Authorization", "Bearer "+key)
				resp, err := client.Do(req)
				if err != nil {
					return // killed
				}
				resp.Body.Close()
				if resp.StatusCode == http.StatusOK {
					mu.Lock()
					acked[n] = true
					mu.Unlock()
				}
			}
		})
	}
	deadline := time.Now().Add(30 * time.Second)
	for {
		mu.Lock()
		n := len(acked)
		mu.Unlock()
		if n >= 300 || time.Now().After(deadline) {
			break
		}
		time.Sleep(10 * time.Millisecond)
	}
	in.kill()
	close(stop)
	wg.Wait()
	if len(acked) == 0 {
		t.Fatalf("no HTTP publish was acknowledged\n%s", in.logs())
	}

	in.start()
	defer in.stop()
	msgs, stderr, code := in.exportAll(stream)
	if code != 0 {
		t.Fatalf("export: exit status %d\n%s", code, stderr)
	}
	seen := map[int]bool{}
	for i, m := range msgs {
		var c struct{ N int }
		if err := json.Unmarshal(m.Content().Content, &c); err != nil {
			t.Fatalf("message %d: %v", i, err)
		}
		if seen[c.N] {
			t.Fatalf("reading %d exported twice", c.N)
		}
		seen[c.N] = true
		if i > 0 && (m.PrevMsgRef == nil || m.PrevMsgRef.Compare(msgs[i-1].ID.Ref()) != 0) {
			t.Fatalf("message %d does not follow message %d in the chain", i, i-1)
		}
	}
	for n := range acked {
		if !seen[n] {
			t.Errorf("reading %d was acknowledged (200) but is not stored", n)
		}
	}
	t.Logf("%d readings acknowledged before kill -9, %d stored", len(acked), len(msgs))
}
