package main

import (
	"context"
	"fmt"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/tributary-iot/tributary/registry/registrytest"
)

// A storage gateway answers key requests for the history it holds
// (issue 18): A publishes encrypted, with a rotation and a re-key, and
// lets S and U have its keys; S and U store the stream with
// answer_key_requests and collect the keys. Then A stops. B, new and
// never connected to A, lets S (not U) publish on the stream: its resend
// gets the history from the peers and every reading decrypts, in order,
// once, with keys S signed; U's answers are refused by B's validator and
// counted. C, in neither store's subscribers list, gets no keys, and the
// stores count its refusals.
func TestStoreAnswersKeyRequests(t *testing.T) {
	if testing.Short() {
		t.Skip("runs five real bridges")
	}
	testKeyServer(t, nil)
}

// TestStoreAnswersKeyRequestsRegistry is the same with [registry] on
// geth --dev, permissions granted on chain by the stream's owner instead
// of lists: A Publish; S Subscribe (to get the keys) and Publish (the
// delegation readers check); U and B Subscribe; C nothing.
func TestStoreAnswersKeyRequestsRegistry(t *testing.T) {
	if testing.Short() {
		t.Skip("runs geth and five bridges")
	}
	testKeyServer(t, registrytest.Start(t))
}

func testKeyServer(t *testing.T, chain *registrytest.Chain) {
	s, u, b, c := newInstance(t, overlayTable("tcp", "")), newInstance(t, overlayTable("tcp", "")), newInstance(t, overlayTable("tcp", "")), newInstance(t, overlayTable("tcp", ""))
	a := newInstance(t, overlayTable("tcp", ""))
	addrA, addrS, addrU, addrB, _ := newKey(t, a), newKey(t, s), newKey(t, u), newKey(t, b), newKey(t, c)
	// Without a registry: lists. With one: grants, and the same tables.
	stream := addrA + "/secret"
	ruleSubs := fmt.Sprintf("subscribers = [%q, %q, %q]\n", addrS, addrU, addrB)
	storeSubs := fmt.Sprintf("subscribers = [%q]\n", addrB)
	readerAllow := fmt.Sprintf("[[overlay.publishers]]\nstream = %q\nallow = [%q]\n", stream, addrS)
	registry := ""
	if chain != nil {
		dev := devConfig(t, chain)
		stream = strings.TrimSpace(mustBridge(t, "stream", "create", "/secret", "--config", dev))
		for user, perms := range map[string][]string{addrA: {"publish"}, addrS: {"subscribe", "publish"}, addrU: {"subscribe"}, addrB: {"subscribe"}} {
			for _, p := range perms {
				mustBridge(t, "stream", "grant", stream, user, p, "--config", dev)
			}
		}
		ruleSubs, storeSubs, readerAllow = "", "", ""
		registry = registryTable(chain, "1s", "0s", "deny")
	}
	a.appendConfig(fmt.Sprintf(`[encryption]
rotate_every = "1s"
[[rule]]
topic = "secret/#"
stream = %q
encryption = "always"
%s%s`, stream, ruleSubs, registry))
	a.start()
	defer a.stop()
	for _, in := range []*instance{s, u} {
		in.joinPeers(a.bootstrapAddr("tcp"))
		in.appendConfig(fmt.Sprintf(`[encryption]
rsa_key_bits = 2048
[[store]]
stream = %q
answer_key_requests = true
%s%s`, stream, storeSubs, registry))
		in.start()
		defer in.stop()
	}

	publishN(t, a, "secret/x", 5)
	time.Sleep(1100 * time.Millisecond) // the next reading announces a new key
	publishN(t, a, "secret/x", 5, 5)
	if _, err := a.bridgeCmd("stream", "rekey", "--config", a.config, stream); err != nil {
		t.Fatal(err)
	}
	publishN(t, a, "secret/x", 5, 10)
	for name, in := range map[string]*instance{"S": s, "U": u} {
		waitPlaintext(t, name, in, stream, 15) // stored, and its keys held
	}
	waitMetric(t, s, `tributary_e2ee_key_server_collected_total{result="ok"}`, 2, time.Second) // fetched k1 and k3, k2 in band
	a.stop()

	// Counted before C starts: C asks for the keys as soon as it has history to
	// decrypt, which can be before B's resend below returns. Without a registry
	// S refused U's requests to A already: C's come on top.
	refused := keyRefusals(s, u)
	for _, in := range []*instance{b, c} {
		in.joinPeers(s.bootstrapAddr("tcp"), u.bootstrapAddr("tcp"))
		in.appendConfig(fmt.Sprintf(`[encryption]
key_exchange = "ml-kem"
key_request_timeout = "3s"
[[subscribe]]
stream = %q
topic = "got"
%s%s`, stream, readerAllow, registry))
		in.start()
		defer in.stop()
	}
	objs := contentObjects(t, b, stream)
	var got []string
	for _, o := range objs {
		got = append(got, string(o.Content))
	}
	var want []string
	for i := range 15 {
		want = append(want, fmt.Sprintf(`{"n":%d}`, i))
	}
	if fmt.Sprint(got) != fmt.Sprint(want) {
		t.Fatalf("B's resend while A is offline: %q, want readings 0…14 in plaintext, in order, once", got)
	}
	waitMetric(t, s, `tributary_e2ee_key_requests_total{result="answered"}`, 2, 10*time.Second) // the first and the re-keyed key, to B (the rotated one came in band)
	waitMetric(t, u, `tributary_e2ee_key_requests_total{result="answered"}`, 1, 10*time.Second)
	waitMetric(t, b, fmt.Sprintf(`tributary_overlay_drops_total{reason="publisher",stream_part="%s#0"}`, stream), 1, 10*time.Second) // U's answers

	if objs := contentObjects(t, c, stream); len(objs) != 0 {
		t.Fatalf("C, in no store's subscribers list, decrypted %d readings", len(objs))
	}
	// Both stores hold the keys and list only B: whichever C's request
	// reaches refuses it (one that is sent before C knows of S's subscription
	// goes to U alone, and U need not relay it to S). C's first requests may
	// time out unsent while its overlay forms (a loaded machine): each resend
	// asks again, as a reader's retry would.
	for deadline, retry := time.Now().Add(30*time.Second), time.Now().Add(3*time.Second); keyRefusals(s, u) < refused+1; time.Sleep(100 * time.Millisecond) {
		if time.Now().After(deadline) {
			sent, _ := c.metric(context.Background(), `tributary_e2ee_key_requests_sent_total{result="sent"}`)
			t.Fatalf("no store refused C's key requests: S and U refused %v in all, %v before C started; C sent %v", keyRefusals(s, u), refused, sent)
		}
		if time.Now().After(retry) {
			if objs := contentObjects(t, c, stream); len(objs) != 0 {
				t.Fatalf("C, in no store's subscribers list, decrypted %d readings", len(objs))
			}
			retry = time.Now().Add(3 * time.Second)
		}
	}
	waitMetric(t, c, `tributary_http_resend_undecrypted_total`, 15, time.Second)
}

// waitPlaintext waits until in's format=object resend of stream holds n
// decrypted readings.
func waitPlaintext(t *testing.T, name string, in *instance, stream string, n int) {
	t.Helper()
	for deadline := time.Now().Add(45 * time.Second); ; time.Sleep(200 * time.Millisecond) {
		objs := contentObjects(t, in, stream)
		if len(objs) == n { // a JSON answer leaves out what it cannot decrypt
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s: %d readings in its resend within 45s, want %d decrypted", name, len(objs), n)
		}
	}
}

// joinPeers gives in's overlayTable its bootstrap peers.
func (in *instance) joinPeers(boots ...string) {
	in.t.Helper()
	b, err := os.ReadFile(in.config)
	if err != nil {
		in.t.Fatal(err)
	}
	quoted := make([]string, len(boots))
	for i, boot := range boots {
		quoted[i] = fmt.Sprintf("%q", boot)
	}
	cfg := strings.Replace(string(b), "bootstrap = []\n", fmt.Sprintf("bootstrap = [%s]\n", strings.Join(quoted, ", ")), 1)
	if err := os.WriteFile(in.config, []byte(cfg), 0o600); err != nil {
		in.t.Fatal(err)
	}
}

// keyRefusals is how many key requests the key servers refused in all.
func keyRefusals(servers ...*instance) float64 {
	var n float64
	for _, in := range servers {
		v, _ := in.metric(context.Background(), `tributary_e2ee_key_requests_total{result="refused"}`) // 0 if none yet
		n += v
	}
	return n
}
