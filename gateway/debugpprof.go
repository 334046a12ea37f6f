package gateway

import (
	"net/http"
	"net/http/pprof"
	"runtime"
)

// Sampling of the block and mutex profiles while http.debug_pprof is on:
// a blocking event of about a millisecond or longer is always recorded
// (shorter ones in proportion), and one mutex contention in
// mutexProfileFraction. Both cost the commit path a little, which is why
// the profiles are off by default.
const (
	blockProfileRateNs   = 1_000_000
	mutexProfileFraction = 10
)

// addDebugRoutes serves Go's profiles and execution trace under
// /debug/pprof/ (http.debug_pprof), behind the API's guard: e.g.
// curl -o a.trace 'http://127.0.0.1:8080/debug/pprof/trace?seconds=5',
// then go tool trace a.trace.
func addDebugRoutes(routes map[string]http.Handler) {
	runtime.SetBlockProfileRate(blockProfileRateNs)
	runtime.SetMutexProfileFraction(mutexProfileFraction)
	routes["GET /debug/pprof/"] = http.HandlerFunc(pprof.Index)
	routes["GET /debug/pprof/cmdline"] = http.HandlerFunc(pprof.Cmdline)
	routes["GET /debug/pprof/profile"] = http.HandlerFunc(pprof.Profile)
	routes["GET /debug/pprof/symbol"] = http.HandlerFunc(pprof.Symbol)
	routes["GET /debug/pprof/trace"] = http.HandlerFunc(pprof.Trace)
}
