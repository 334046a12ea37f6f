package gateway

import (
	"fmt"
	"net/http"
	"runtime"
	"testing"
	"time"
)

// pprofGateway runs a gateway with the HTTP API on a random loopback port
// and http.debug_pprof set to on in its config file.
func pprofGateway(t *testing.T, on bool) *testGateway {
	t.Helper()
	// newTestGateway's extra follows its [http] table.
	g := newTestGateway(t, fmt.Sprintf("debug_pprof = %v\n[overlay]\nenabled = false\n[websocket]\naddress = \"\"\n", on))
	if g.cfg.HTTP.DebugPprof != on {
		t.Fatalf("http.debug_pprof read as %v, want %v", g.cfg.HTTP.DebugPprof, on)
	}
	g.cfg.HTTP.Address = "127.0.0.1:0"
	g.run(t)
	for deadline := time.Now().Add(10 * time.Second); g.HTTPAddr() == nil; time.Sleep(10 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("HTTP API not listening\n%s", g.logs)
		}
	}
	return g
}

// TestDebugPprof checks that http.debug_pprof serves Go's profiles on the
// HTTP API, and that they are not served by default.
func TestDebugPprof(t *testing.T) {
	for _, tc := range []struct {
		name string
		on   bool
		want int
	}{{"default off", false, http.StatusNotFound}, {"on", true, http.StatusOK}} {
		t.Run(tc.name, func(t *testing.T) {
			t.Cleanup(func() { runtime.SetBlockProfileRate(0); runtime.SetMutexProfileFraction(0) })
			g := pprofGateway(t, tc.on)
			for _, path := range []string{"/debug/pprof/", "/debug/pprof/mutex", "/debug/pprof/trace?seconds=0"} {
				resp, err := http.Get("http://" + g.HTTPAddr().String() + path)
				if err != nil {
					t.Fatal(err)
				}
				_ = resp.Body.Close()
				if resp.StatusCode != tc.want {
					t.Errorf("GET %s: status %d, want %d", path, resp.StatusCode, tc.want)
				}
			}
		})
	}
}
