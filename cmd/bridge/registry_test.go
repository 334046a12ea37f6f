package main

import (
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/tributary-iot/tributary/registry/registrytest"
	"github.com/tributary-iot/tributary/streamr"
)

// registryTable is a [registry] table for chain c.
func registryTable(c *registrytest.Chain, ttl, poll, mode string) string {
	return fmt.Sprintf("[registry]\nrpc_url = %q\naddress = %q\ncache_ttl = %q\nevent_poll_interval = %q\non_unreachable = %q\ncall_timeout = \"2s\"\n",
		c.URL, c.Registry.Hex(), ttl, poll, mode)
}

// TestStreamRegistryPermissions runs real gateways against geth --dev with
// the test StreamRegistry. A publishes into a stream owned by geth's
// developer account without a chain to ask (on_unreachable = allow); B (cache_ttl 1h, event
// invalidation, last-known), D (cache_ttl 1s, deny) and L (cache_ttl 1s,
// allow) subscribe and accept A's messages only while the chain lets A
// publish: granted, revoked, public, expired, and with the chain gone.
// L also publishes: its readings wait in storage until it holds Publish.
// The stream and permissions are managed with `bridge stream`.
func TestStreamRegistryPermissions(t *testing.T) {
	if testing.Short() {
		t.Skip("runs geth and four bridges")
	}
	chain := registrytest.Start(t)
	dev := devConfig(t, chain)
	stream := strings.TrimSpace(mustBridge(t, "stream", "create", "/gw", "--description", "registry test", "--config", dev))
	if want := strings.ToLower(streamr.UserID(chain.DevKey.PublisherID())) + "/gw"; stream != want {
		t.Fatalf("bridge stream create printed %q, want %q", stream, want)
	}
	keyed := strings.TrimSpace(mustBridge(t, "stream", "create", "/keyed", "--partitions", "7", "--config", dev))
	rule := func(topic string) string {
		return fmt.Sprintf("[[rule]]\ntopic = %q\nstream = %q\ncontent = \"json\"\n", topic, stream)
	}
	sub := fmt.Sprintf("[[subscribe]]\nstream = %q\ntopic = \"out\"\n", stream)

	// A asks a chain that is not there and allows when it cannot (a
	// misconfigured or hostile peer): it publishes and relays anything.
	blind := &registrytest.Chain{URL: "http://127.0.0.1:1", Registry: chain.Registry}
	a := newInstance(t, overlayTable("tcp", "")+rule("sensors/#")+registryTable(blind, "1s", "0s", "allow"))
	a.start()
	defer a.stop()
	aAddr := a.address()
	boot := a.bootstrapAddr("tcp")
	// B's keyed rule gives no partition count: the stream's metadata does.
	keyedRule := fmt.Sprintf("[[rule]]\ntopic = \"k/#\"\nstream = %q\npartition_key = \"{1}\"\ncontent = \"json\"\n", keyed)
	b := newInstance(t, overlayTable("tcp", boot)+keyedRule+sub+registryTable(chain, "1h", "200ms", "last-known"))
	d := newInstance(t, overlayTable("tcp", boot)+sub+registryTable(chain, "1s", "0s", "deny"))
	l := newInstance(t, overlayTable("tcp", boot)+sub+rule("p/#")+registryTable(chain, "1s", "0s", "allow"))
	for _, in := range []*instance{b, d, l} {
		in.start()
		defer in.stop()
	}
	logs := map[string]*mqttLog{"B": subscribeAll(t, b, "out"), "D": subscribeAll(t, d, "out"), "L": subscribeAll(t, l, "out")}
	grant := func(args ...string) {
		t.Helper()
		mustBridge(t, append(append([]string{"stream"}, args...), "--config", dev)...)
		time.Sleep(2500 * time.Millisecond) // past D's and L's cache_ttl, and B's event poll
	}
	expect := func(what string, n int, want map[string]bool) {
		t.Helper()
		deadline := time.Now().Add(20 * time.Second)
		for name, wanted := range want {
			for wanted && !slices.Contains(logs[name].topic("out"), n) && time.Now().Before(deadline) {
				time.Sleep(50 * time.Millisecond)
			}
		}
		time.Sleep(2 * time.Second) // refusals: give the message time to arrive anyway
		var wrong []string
		for name, wanted := range want {
			if got := slices.Contains(logs[name].topic("out"), n); got != wanted {
				wrong = append(wrong, fmt.Sprintf("on %s: %v, want %v (got %v)", name, got, wanted, logs[name].topic("out")))
			}
		}
		if len(wrong) > 0 {
			t.Fatalf("%s: reading %d delivered %s", what, n, strings.Join(wrong, "; "))
		}
	}
	all := map[string]bool{"B": true, "D": true, "L": true}
	none := map[string]bool{"B": false, "D": false, "L": false}

	publishN(t, b, "k/sensor-1", 1, 0) // keyToArrayIndex(7, "sensor-1") = 3
	if msgs, errs, code := b.exportAll(keyed, "--partition", "3"); code != 0 || len(msgs) != 1 {
		t.Fatalf("partition 3 of %s (7 partitions from the metadata) holds %d messages, want 1; exit %d %s", keyed, len(msgs), code, errs)
	}

	publishN(t, l, "p/x", 1, 1000)
	waitSeries(t, l, `tributary_forward_publish_refused_total{reason="denied"}`)
	publishN(t, a, "sensors/x", 1, 0)
	expect("no permission", 0, none)

	grant("grant", stream, aAddr, "publish")
	grant("grant", stream, l.address(), "publish")
	publishN(t, a, "sensors/x", 1, 1)
	expect("granted", 1, all)
	expect("L's reading held while L lacked Publish", 1000, map[string]bool{"B": true, "D": true})

	grant("revoke", stream, aAddr, "publish")
	publishN(t, a, "sensors/x", 1, 2)
	expect("revoked", 2, none)

	grant("grant-public", stream, "publish")
	publishN(t, a, "sensors/x", 1, 3)
	expect("public Publish", 3, all)
	grant("revoke", stream, "public", "publish")

	expires := time.Now().Add(time.Second).UTC().Format(time.RFC3339)
	grant("grant", stream, aAddr, "publish", "--expires", expires)
	publishN(t, a, "sensors/x", 1, 4)
	expect("expired", 4, none)

	show := mustBridge(t, "stream", "show", stream, "--config", dev)
	for _, want := range []string{stream, `"partitions":1`, "public", strings.ToLower(aAddr), strings.ToLower(l.address())} {
		if !strings.Contains(strings.ToLower(show), want) {
			t.Errorf("bridge stream show lacks %q:\n%s", want, show)
		}
	}

	grant("grant", stream, aAddr, "publish")
	publishN(t, a, "sensors/x", 1, 5)
	expect("granted again", 5, all)
	chain.Stop()
	time.Sleep(2500 * time.Millisecond) // D's and L's answers are stale now
	publishN(t, a, "sensors/x", 1, 6)
	expect("chain unreachable", 6, map[string]bool{"B": true, "D": false, "L": true})
	waitSeries(t, d, `tributary_registry_unreachable_decisions_total{outcome="denied"}`)
	waitSeries(t, l, `tributary_registry_unreachable_decisions_total{outcome="allowed"}`)
}

// devConfig writes a config whose key is geth's funded developer key and
// whose [registry] is chain's.
func devConfig(t *testing.T, c *registrytest.Chain) string {
	t.Helper()
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, "key"), []byte(registrytest.DevKeyHex+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(dir, "dev.toml")
	cfg := fmt.Sprintf("state_dir = %q\n%s", dir, registryTable(c, "5m", "5s", "deny"))
	if err := os.WriteFile(path, []byte(cfg), 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}

func mustBridge(t *testing.T, args ...string) string {
	t.Helper()
	out, errs, code := runBridge(args...)
	if code != 0 {
		t.Fatalf("bridge %s: exit status %d\n%s%s", strings.Join(args, " "), code, out, errs)
	}
	return out
}

// waitSeries waits until the /metrics line of series (name{labels}) is positive.
func waitSeries(t *testing.T, in *instance, series string) {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for time.Now().Before(deadline) {
		if resp, err := http.Get("http://" + in.http + "/metrics"); err == nil {
			body, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			for _, line := range strings.Split(string(body), "\n") {
				if v, ok := strings.CutPrefix(line, series+" "); ok && v != "0" {
					return
				}
			}
		}
		time.Sleep(100 * time.Millisecond)
	}
	t.Fatalf("%s not positive within 20s\n%s", series, in.logs())
}
