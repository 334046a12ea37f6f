package main

import (
	"bytes"
	"fmt"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/tributary-iot/tributary/streamr"
)

// Three real gateways (issue 18): A publishes a stream with
// encryption = "always" and lists B as a subscriber, not C. B's MQTT
// consumer gets every reading in plaintext and in order, through an
// in-band rotation, a re-key and a restart of A with a backlog; C gets
// none, and A counts C's refused key requests; A's export holds only
// AES ciphertext. The app interfaces too: B's WebSocket subscriber and
// B's format=object resend show the plaintext, its format=raw resend the
// ciphertext; C's show none and count what they left out.
func TestEncryptedStreamThreeGateways(t *testing.T) {
	if testing.Short() {
		t.Skip("runs three real bridges")
	}
	b, c := newInstance(t, wsOnAnyPort), newInstance(t, wsOnAnyPort)
	addrB, _ := newKey(t, b), newKey(t, c)
	a := newInstance(t, overlayTable("tcp", "")+fmt.Sprintf(`
[encryption]
rotate_every = "1s"
[[rule]]
topic = "secret/#"
stream = "{address}/secret"
encryption = "always"
subscribers = [%q]
`, addrB))
	a.start()
	defer a.stop()
	addrA, boot := a.address(), a.bootstrapAddr("tcp")
	stream := addrA + "/secret"
	// B asks with ML-KEM-1024, C with RSA (both ciphers between real binaries).
	for in, kx := range map[*instance]string{b: "ml-kem", c: "rsa"} {
		in.joinOverlay(boot)
		in.appendConfig(fmt.Sprintf(`[encryption]
key_exchange = %q
rsa_key_bits = 2048
key_request_timeout = "3s"
[[subscribe]]
stream = %q
topic = "got"
`, kx, stream))
		in.start()
		defer in.stop()
	}
	gotB, gotC := subscribeAll(t, b, "got"), subscribeAll(t, c, "got")

	publishN(t, a, "secret/x", 5)
	waitDeliveries(t, gotB, 5, b)
	wsB := wsSubscribe(t, b, stream, "from=0") // history 0…4, then live
	time.Sleep(1100 * time.Millisecond)        // the next reading announces a new key
	publishN(t, a, "secret/x", 5, 5)
	waitDeliveries(t, gotB, 10, b)
	if _, err := a.bridgeCmd("stream", "rekey", "--config", a.config, stream); err != nil {
		t.Fatal(err)
	}
	publishN(t, a, "secret/x", 5, 10)
	waitDeliveries(t, gotB, 15, b)
	if g := gotB.topic("got"); fmt.Sprint(g) != fmt.Sprint(seq(0, 15)) {
		t.Fatalf("B got %v, want 0…14 in order", g)
	}
	checkAppsPlaintext(t, b, stream, wsB, 15)

	waitMetric(t, a, `tributary_e2ee_key_requests_total{result="refused"}`, 1, 20*time.Second)
	waitMetric(t, a, `tributary_e2ee_rotations_total`, 1, time.Second)
	waitMetric(t, a, `tributary_e2ee_rekeys_total`, 1, time.Second)

	waitMetric(t, c, `tributary_delivery_dropped_total{reason="no_group_key"}`, 1, 20*time.Second)
	if n := gotC.total(); n != 0 {
		t.Fatalf("C, not a subscriber, got %d readings: %v", n, gotC)
	}
	checkAppsNothing(t, c, stream, 15)
	c.stop() // from here A's only peer is B: A's forwarder holds what B has not seen

	// A backlog waits in A while B is down, and is sent after A restarts.
	b.stop()
	publishN(t, a, "secret/x", 5, 15)
	a.stop()
	b.start()
	gotB = subscribeAll(t, b, "got")
	a.start()
	publishN(t, a, "secret/x", 1, 20)
	waitDeliveries(t, gotB, 6, b)
	if g := gotB.topic("got"); fmt.Sprint(g) != fmt.Sprint(seq(15, 21)) {
		t.Fatalf("after A's restart B got %v, want 15…20 in order", g)
	}

	msgs := a.export(stream)
	if len(msgs) != 21 {
		t.Fatalf("A's export holds %d messages, want 21", len(msgs))
	}
	keys := map[string]bool{}
	for _, m := range msgs {
		cm := m.Content()
		if cm == nil || cm.EncryptionType != streamr.EncryptionAES || cm.GroupKeyID == nil || bytes.Contains(cm.Content, []byte(`"n"`)) {
			t.Fatalf("exported message %s is not AES ciphertext: %+v", m.ID.Ref(), cm)
		}
		if err := streamr.VerifySignature(m); err != nil {
			t.Fatalf("exported message %s: %v", m.ID.Ref(), err)
		}
		keys[*cm.GroupKeyID] = true
	}
	if len(keys) < 3 {
		t.Fatalf("%d group keys in A's export, want at least 3 (rotation, re-key)", len(keys))
	}

	// The holders of the keys export plaintext (the gateway stopped); C,
	// which stored the ciphertext it received, cannot.
	a.stop()
	b.stop()
	for name, in := range map[string]*instance{"A": a, "B": b} {
		all, stderr, code := in.exportAll(stream, "--decrypt")
		var plain []*streamr.StreamMessage // B keeps the key exchange messages it saw, too
		for _, m := range all {
			if m.Content() != nil {
				plain = append(plain, m)
			}
		}
		if code != 0 || len(plain) != 21 {
			t.Fatalf("%s: export --decrypt: %d messages, exit %d\n%s", name, len(plain), code, stderr)
		}
		for i, m := range plain {
			if cm := m.Content(); cm.EncryptionType != streamr.EncryptionNone || string(cm.Content) != fmt.Sprintf(`{"n":%d}`, i) {
				t.Fatalf("%s: decrypted export %d: %q", name, i, cm.Content)
			}
		}
	}
	if _, stderr, code := c.exportAll(stream, "--decrypt"); code != 0 || !strings.Contains(stderr, "left encrypted") {
		t.Fatalf("C: export --decrypt exit %d, stderr %q: want the messages reported as left encrypted", code, stderr)
	}
}

// newKey creates in's gateway key and returns its address.
func newKey(t *testing.T, in *instance) string {
	t.Helper()
	if _, err := in.bridgeCmd("key", "new", "--config", in.config); err != nil {
		t.Fatal(err)
	}
	return in.address()
}

// appendConfig adds tables at the end of in's config file.
func (in *instance) appendConfig(s string) {
	in.t.Helper()
	f, err := os.OpenFile(in.config, os.O_APPEND|os.O_WRONLY, 0)
	if err != nil {
		in.t.Fatal(err)
	}
	defer f.Close()
	if _, err := f.WriteString("\n" + strings.TrimLeft(s, "\n")); err != nil {
		in.t.Fatal(err)
	}
}

// joinOverlay gives the loopback [overlay] table newInstance wrote a
// bootstrap peer.
func (in *instance) joinOverlay(boot string) {
	in.t.Helper()
	b, err := os.ReadFile(in.config)
	if err != nil {
		in.t.Fatal(err)
	}
	cfg := strings.Replace(string(b), "[overlay]\n", fmt.Sprintf("[overlay]\nbootstrap = [%q]\nretry = \"200ms\"\n", boot), 1)
	if err := os.WriteFile(in.config, []byte(cfg), 0o600); err != nil {
		in.t.Fatal(err)
	}
}

// checkAppsPlaintext checks that in's app interfaces show readings 0…n-1
// of stream in plaintext: the WebSocket subscriber ws and a format=object
// resend; a format=raw resend keeps the ciphertext.
func checkAppsPlaintext(t *testing.T, in *instance, stream string, ws *wsReadings, n int) {
	t.Helper()
	waitWS(t, ws, n)
	if got, bad := ws.all(); fmt.Sprint(got) != fmt.Sprint(seq(0, n)) || len(bad) > 0 {
		t.Fatalf("websocket subscriber got %v (and %q), want 0…%d in order", got, bad, n-1)
	}
	objs := contentObjects(t, in, stream)
	if len(objs) != n {
		t.Fatalf("format=object resend: %d content messages, want %d", len(objs), n)
	}
	for i, o := range objs {
		if o.EncryptionType != 0 || string(o.Content) != fmt.Sprintf(`{"n":%d}`, i) {
			t.Fatalf("format=object resend message %d: encryptionType %d, content %s", i, o.EncryptionType, o.Content)
		}
	}
	if raw := resend(t, in, stream, "raw"); len(raw) == 0 || bytes.Contains(raw, []byte(`{"n":`)) {
		t.Fatalf("format=raw resend of %d bytes holds plaintext", len(raw))
	}
}

// checkAppsNothing checks that in, which may not read stream, shows none
// of its n readings through the app interfaces (after waiting for each
// key in vain) and counts them as undecrypted.
func checkAppsNothing(t *testing.T, in *instance, stream string, n int) {
	t.Helper()
	ws := wsSubscribe(t, in, stream, "from=0")
	if objs := contentObjects(t, in, stream); len(objs) != 0 {
		t.Fatalf("format=object resend without the keys: %d content messages, want none: %+v", len(objs), objs[0])
	}
	waitMetric(t, in, `tributary_http_resend_undecrypted_total`, float64(n), time.Second)
	waitMetric(t, in, `tributary_app_undecrypted_total`, float64(n), time.Minute)
	if got, bad := ws.all(); len(got)+len(bad) != 0 {
		t.Fatalf("websocket subscriber without the keys got %v %q", got, bad)
	}
}
