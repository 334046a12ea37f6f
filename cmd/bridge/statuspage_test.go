package main

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/chromedp/chromedp"

	"github.com/tributary-iot/tributary/statuspage"
)

// heldReadings are published on a stream nobody carries: the forwarder
// holds them back, so the page shows a backlog beside a live partition.
const heldReadings = 3000

// TestStatusPageBrowser drives the status page in headless Chromium
// against a real gateway with traffic, a backlog and a peer: every number
// the page shows equals /status at the same sequence number, the page
// updates without a reload, the explorer finds the peer, and a screenshot
// is saved (TRIBUTARY_ARTIFACTS, a CI artifact).
func TestStatusPageBrowser(t *testing.T) {
	if testing.Short() {
		t.Skip("runs two real bridges and a browser")
	}
	browser := lookChromium(t)
	a, b := pageFixture(t)
	base := "http://" + a.http

	ctx, cancel := browserContext(t, browser)
	defer cancel()
	if err := chromedp.Do(ctx, chromedp.Navigate(base+"/"), chromedp.WaitVisible(chromedp.CSS(`body[data-seq]`))); err != nil {
		t.Fatalf("open the status page: %v", err)
	}
	first := pageSeq(t, ctx)
	in1 := pageNumber(t, ctx, "readings.in")
	waitPage(t, ctx, "a newer snapshot with more readings, without reload", func() bool {
		return pageSeq(t, ctx) > first+2 && pageNumber(t, ctx, "readings.in") > in1
	})
	comparePageWithStatus(t, ctx, base)

	bID := b.peerID()
	if err := chromedp.Do(ctx,
		chromedp.Evaluate[chromedp.Void](`location.hash = "#explorer"`),
		chromedp.WaitVisible(chromedp.CSS(`#view-explorer`)),
		chromedp.SendKeys(chromedp.CSS(`#search`), bID[len(bID)-10:]),
	); err != nil {
		t.Fatalf("explorer: %v", err)
	}
	waitPage(t, ctx, "the explorer lists the peer, found by its peer ID", func() bool {
		rows, _ := chromedp.Run(ctx, chromedp.Evaluate[[]string](`[...document.querySelectorAll("#nodes tbody tr:not(.dim) td:first-child")].map(td => td.textContent)`))
		return len(rows) == 1 && rows[0] == bID
	})
	saveScreenshot(t, ctx, "status-explorer.png")
	if err := chromedp.Do(ctx, chromedp.Evaluate[chromedp.Void](`location.hash = "#status"`), chromedp.WaitVisible(chromedp.CSS(`#view-status`))); err != nil {
		t.Fatal(err)
	}
	saveScreenshot(t, ctx, "status-page.png")
}

// pageFixture starts bridge A, buffers heldReadings on a stream nobody
// carries, connects bridge B storing A's live stream and publishes on it.
func pageFixture(t *testing.T) (a, b *instance) {
	t.Helper()
	a = newInstance(t, overlayTable("tcp", ""))
	a.start()
	t.Cleanup(a.stop)
	fill(t, a, "held/data", heldReadings)
	b = newInstance(t, overlayTable("tcp", a.bootstrapAddr("tcp"))+fmt.Sprintf("\n[[store]]\nstream = \"%s/live/data\"\n", a.address()))
	b.start()
	t.Cleanup(b.stop)
	live := startLive(t, a)
	t.Cleanup(func() { live.finish() })
	deadline := time.Now().Add(time.Minute)
	for {
		st, _, err := statuspage.Fetch(context.Background(), http.DefaultClient, "http://"+a.http, "")
		if err == nil && st.Forward != nil && st.Forward.BacklogMessages >= heldReadings && livePeers(st) > 0 {
			return a, b
		}
		if time.Now().After(deadline) {
			t.Fatalf("no backlog of %d and a peer on the live stream within a minute: %+v (%v)", heldReadings, st.Forward, err)
		}
		time.Sleep(200 * time.Millisecond)
	}
}

func livePeers(st statuspage.Status) int {
	for _, p := range st.Partitions {
		if strings.HasSuffix(p.Stream, "/live/data") {
			return p.Peers
		}
	}
	return 0
}

// lookChromium finds Debian's chromium; without it the test is skipped,
// unless TRIBUTARY_REQUIRE_TOOLS is set (scripts/test.sh installs it).
func lookChromium(t *testing.T) string {
	t.Helper()
	path, err := exec.LookPath("chromium")
	if err != nil {
		if os.Getenv("TRIBUTARY_REQUIRE_TOOLS") != "" {
			t.Fatalf("chromium not found and TRIBUTARY_REQUIRE_TOOLS is set: %v", err)
		}
		t.Skipf("chromium not installed (apt-get install chromium): %v", err)
	}
	return path
}

func browserContext(t *testing.T, browser string) (context.Context, context.CancelFunc) {
	opts := append(chromedp.DefaultExecAllocatorOptions[:],
		chromedp.ExecPath(browser),
		chromedp.NoSandbox, // CI runs as root
		chromedp.DisableGPU,
		chromedp.WindowSize(1280, 1100),
		chromedp.UserDataDir(t.TempDir()),
	)
	actx, cancelAlloc := chromedp.NewExecAllocator(context.Background(), opts...)
	ctx, cancelBrowser := chromedp.NewContext(actx)
	ctx, cancelTimeout := context.WithTimeout(ctx, 2*time.Minute)
	return ctx, func() { cancelTimeout(); cancelBrowser(); cancelAlloc() }
}

func pageSeq(t *testing.T, ctx context.Context) uint64 {
	t.Helper()
	seq, err := chromedp.Run(ctx, chromedp.Evaluate[string](`document.body.dataset.seq || "0"`))
	if err != nil {
		t.Fatal(err)
	}
	n, _ := strconv.ParseUint(seq, 10, 64)
	return n
}

func pageNumber(t *testing.T, ctx context.Context, key string) float64 {
	t.Helper()
	v, err := chromedp.Run(ctx, chromedp.Evaluate[string](fmt.Sprintf(`document.querySelector('[data-k=%q]').dataset.v`, key)))
	if err != nil {
		t.Fatal(err)
	}
	n, _ := strconv.ParseFloat(v, 64)
	return n
}

func waitPage(t *testing.T, ctx context.Context, what string, ok func() bool) {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for !ok() {
		if time.Now().After(deadline) {
			saveScreenshot(t, ctx, "status-page-failed.png")
			t.Fatalf("status page: no %s within 30 s", what)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// shown is one value the page shows: its /status path, the raw value it
// was drawn from, its text and format.
type shown struct {
	Seq    string
	Values []struct{ K, V, Text, F string }
}

// comparePageWithStatus reads every value the page shows and the /status
// document until both are of the same snapshot, then compares them.
func comparePageWithStatus(t *testing.T, ctx context.Context, base string) {
	t.Helper()
	const js = `({Seq: document.body.dataset.seq, Values: [...document.querySelectorAll("[data-k]")].map(
		n => ({K: n.dataset.k, V: n.dataset.v ?? "", Text: n.textContent, F: n.dataset.f || "text"}))})`
	for attempt := 0; attempt < 20; attempt++ {
		page, err := chromedp.Run(ctx, chromedp.Evaluate[shown](js))
		if err != nil {
			t.Fatal(err)
		}
		resp, err := http.Get(base + "/status")
		if err != nil {
			t.Fatal(err)
		}
		var doc map[string]any
		err = json.NewDecoder(resp.Body).Decode(&doc)
		resp.Body.Close()
		if err != nil {
			t.Fatal(err)
		}
		if fmt.Sprint(doc["seq"]) != page.Seq {
			continue // a new snapshot came between the two reads
		}
		checkShown(t, doc, page)
		return
	}
	t.Fatal("the page and /status never showed the same snapshot in 20 tries")
}

func checkShown(t *testing.T, doc map[string]any, page shown) {
	t.Helper()
	numbers := 0
	for _, v := range page.Values {
		want, ok := lookup(doc, v.K)
		if !ok {
			t.Errorf("the page shows %s, which /status does not have", v.K)
			continue
		}
		if got, w := v.V, jsString(want); got != w {
			t.Errorf("%s: the page shows %q, /status has %q", v.K, got, w)
		}
		if v.F == "int" {
			numbers++
			if v.Text != jsString(want) {
				t.Errorf("%s: the page's text %q, /status %v", v.K, v.Text, want)
			}
		}
	}
	if numbers < 10 {
		t.Errorf("the page shows only %d counts; want the gateway's and each partition's", numbers)
	}
	for _, want := range []string{"mqtt.clients", "readings.in", "forward.backlog_messages", "overlay.connected_peers", "partitions.0.peers"} {
		found := false
		for _, v := range page.Values {
			found = found || v.K == want
		}
		if !found {
			t.Errorf("the page does not show %s", want)
		}
	}
}

// lookup follows a dotted path (partitions.0.peers) through a JSON document.
func lookup(doc any, path string) (any, bool) {
	cur := doc
	for _, k := range strings.Split(path, ".") {
		switch c := cur.(type) {
		case map[string]any:
			v, ok := c[k]
			if !ok {
				return nil, false
			}
			cur = v
		case []any:
			i, err := strconv.Atoi(k)
			if err != nil || i >= len(c) {
				return nil, false
			}
			cur = c[i]
		default:
			return nil, false
		}
	}
	return cur, true
}

// jsString is String(v) in JavaScript for a JSON value.
func jsString(v any) string {
	switch x := v.(type) {
	case nil:
		return ""
	case float64:
		return strconv.FormatFloat(x, 'f', -1, 64)
	case bool:
		return strconv.FormatBool(x)
	case string:
		return x
	}
	return fmt.Sprint(v)
}

// saveScreenshot writes a full-page screenshot into TRIBUTARY_ARTIFACTS
// (scripts/test.sh names it), else into the test's temporary directory.
func saveScreenshot(t *testing.T, ctx context.Context, name string) {
	t.Helper()
	dir := os.Getenv("TRIBUTARY_ARTIFACTS")
	if dir == "" {
		dir = t.TempDir()
	}
	png, err := chromedp.Run(ctx, chromedp.FullScreenshot(100))
	if err != nil {
		t.Errorf("screenshot: %v", err)
		return
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(dir, name)
	if err := os.WriteFile(path, png, 0o644); err != nil {
		t.Fatal(err)
	}
	t.Logf("screenshot %s (%d bytes)", path, len(png))
}
