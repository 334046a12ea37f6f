package main

import (
	"flag"
	"fmt"
	"os"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/chromedp/chromedp"
)

var statusCost = flag.Duration("status-cost", 0, "measure the status page's weight and the gateway's CPU with one page open, over this long per phase (BENCHMARKS.md, issue 19)")

// TestStatusPageCost reports the bytes a first load of the status page
// transfers and the gateway's CPU time, in the same run, without a page
// and with one page open (updated every second over server-sent events),
// on a gateway with a peer, live traffic and a backlog.
func TestStatusPageCost(t *testing.T) {
	if *statusCost == 0 {
		t.Skip("run with -status-cost 30s")
	}
	browser := lookChromium(t)
	a, _ := pageFixture(t)
	idle := cpuOver(t, a, *statusCost)

	ctx, cancel := browserContext(t, browser)
	defer cancel()
	if err := chromedp.Do(ctx, chromedp.Navigate("http://"+a.http+"/"), chromedp.WaitVisible(chromedp.CSS(`body[data-seq]`))); err != nil {
		t.Fatal(err)
	}
	time.Sleep(2 * time.Second) // the first load's requests have finished
	weight, err := chromedp.Run(ctx, chromedp.Evaluate[map[string]float64](`(() => {
		const nav = performance.getEntriesByType("navigation")[0];
		const res = performance.getEntriesByType("resource");
		return {document: nav.transferSize, resources: res.reduce((s, r) => s + r.transferSize, 0), requests: 1 + res.length};
	})()`))
	if err != nil {
		t.Fatal(err)
	}
	open := cpuOver(t, a, *statusCost)
	events, err := chromedp.Run(ctx, chromedp.Evaluate[float64](`Number(document.body.dataset.seq)`))
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("first load: %.0f bytes in %.0f requests (document %.0f, assets and /status %.0f)",
		weight["document"]+weight["resources"], weight["requests"], weight["document"], weight["resources"])
	t.Logf("gateway CPU: %.2f%% of a core without a page, %.2f%% with one page open (ratio %.2f); %.0f snapshots seen",
		100*idle, 100*open, open/idle, events)
}

// cpuOver is the share of one core the bridge process used over d.
func cpuOver(t *testing.T, in *instance, d time.Duration) float64 {
	t.Helper()
	before, start := cpuTicks(t, in), time.Now()
	time.Sleep(d)
	ticks := cpuTicks(t, in) - before
	return float64(ticks) / 100 / time.Since(start).Seconds() // USER_HZ is 100 on Linux
}

// cpuTicks is utime + stime of the process, in clock ticks.
func cpuTicks(t *testing.T, in *instance) int64 {
	t.Helper()
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", in.cmd.Process.Pid))
	if err != nil {
		t.Fatal(err)
	}
	fields := strings.Fields(string(b[strings.LastIndexByte(string(b), ')')+2:]))
	utime, _ := strconv.ParseInt(fields[11], 10, 64)
	stime, _ := strconv.ParseInt(fields[12], 10, 64)
	return utime + stime
}
