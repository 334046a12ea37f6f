package gateway

import (
	"context"
	"fmt"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/chromedp/chromedp"
)

// A web page served by the test, in headless Chromium, subscribes over
// the WebSocket interface (from another loopback origin) and shows the
// readings curl publishes, live; the screenshot is kept
// ($TRIBUTARY_ARTIFACTS, a CI artifact).
func TestWebSocketBrowserPage(t *testing.T) {
	if testing.Short() {
		t.Skip("starts Chromium")
	}
	browser := lookTool(t, "chromium", "chromium-browser", "google-chrome")
	a := newWSApp(t, "payload_metadata = true\n")
	page := httptest.NewServer(http.FileServer(http.Dir("testdata/apps")))
	defer page.Close()

	opts := append(chromedp.DefaultExecAllocatorOptions[:],
		chromedp.ExecPath(browser),
		chromedp.NoSandbox, // CI runs as root
		chromedp.DisableGPU,
		chromedp.WindowSize(900, 600),
		chromedp.UserDataDir(t.TempDir()),
	)
	actx, cancelAlloc := chromedp.NewExecAllocator(context.Background(), opts...)
	defer cancelAlloc()
	ctx, cancelBrowser := chromedp.NewContext(actx)
	defer cancelBrowser()
	ctx, cancel := context.WithTimeout(ctx, 90*time.Second)
	defer cancel()

	u := page.URL + "/live.html?ws=" + url.QueryEscape(a.wsURL("subscribe", ""))
	if err := chromedp.Do(ctx, chromedp.Navigate(u), chromedp.WaitVisible(chromedp.CSS(`body[data-open="yes"]`))); err != nil {
		t.Fatalf("page did not open its WebSocket: %v", err)
	}
	pub := "http://" + a.HTTPAddr().String() + "/streams/" + url.PathEscape(a.stream) + "/"
	for i := range 5 {
		if code, body := curl(t, "-H", "Authorization: Bearer "+testAPIKey, "-d", fmt.Sprintf(`{"celsius":%d.5}`, 20+i), pub); code != 200 {
			t.Fatalf("publish: %d %s", code, body)
		}
	}
	if err := chromedp.Do(ctx, chromedp.WaitVisible(chromedp.CSS(`#readings li:nth-child(5)`))); err != nil {
		t.Fatalf("page did not show 5 readings: %v", err)
	}
	items, err := chromedp.Run(ctx, chromedp.Text(chromedp.CSS(`#readings`)))
	if err != nil {
		t.Fatal(err)
	}
	png, err := chromedp.Run(ctx, chromedp.FullScreenshot(100)) // quality 100: a PNG
	if err != nil {
		t.Fatal(err)
	}
	for i := range 5 {
		if want := fmt.Sprintf(`{"celsius":%d.5}`, 20+i); !strings.Contains(items, want) {
			t.Errorf("page shows %q, missing %s", items, want)
		}
	}
	if dir := os.Getenv("TRIBUTARY_ARTIFACTS"); dir != "" {
		path := filepath.Join(dir, "websocket-live-readings.png")
		if err := os.WriteFile(path, png, 0o644); err != nil {
			t.Errorf("screenshot: %v", err)
		}
		t.Logf("screenshot %s (%d bytes)", path, len(png))
	}
}
