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
// AES ciphertext.
func TestEncryptedStreamThreeGateways(t *testing.T) {
	if testing.Short() {
		t.Skip("runs three real bridges")
	}
	b, c := newInstance(t, ""), newInstance(t, "")
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
	for _, in := range []*instance{b, c} {
		in.appendConfig(fmt.Sprintf(`bootstrap = [%q]
retry = "200ms"
[encryption]
rsa_key_bits = 2048
key_request_timeout = "3s"
[[subscribe]]
stream = %q
topic = "got"
`, boot, stream))
		in.start()
		defer in.stop()
	}
	gotB, gotC := subscribeAll(t, b, "got"), subscribeAll(t, c, "got")

	publishN(t, a, "secret/x", 5)
	waitDeliveries(t, gotB, 5, b)
	time.Sleep(1100 * time.Millisecond) // the next reading announces a new key
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

	waitMetric(t, a, `tributary_e2ee_key_requests_total{result="refused"}`, 1, 20*time.Second)
	waitMetric(t, a, `tributary_e2ee_rotations_total`, 1, time.Second)
	waitMetric(t, a, `tributary_e2ee_rekeys_total`, 1, time.Second)

	// A backlog waits in A while B is down, and is sent after A restarts.
	b.stop()
	publishN(t, a, "secret/x", 5, 15)
	a.stop()
	b.start()
	gotB = subscribeAll(t, b, "got")
	from := len(b.logs())
	a.start()
	// Reading 20 goes out once B is A's neighbour again: it tells B of the
	// backlog before it, which B then fetches by resend.
	waitLogAfter(t, b, from, "stream partition overlay formed")
	publishN(t, a, "secret/x", 1, 20)
	waitDeliveries(t, gotB, 6, b)
	if g := gotB.topic("got"); fmt.Sprint(g) != fmt.Sprint(seq(15, 21)) {
		t.Fatalf("after A's restart B got %v, want 15…20 in order", g)
	}

	waitMetric(t, c, `tributary_delivery_dropped_total{reason="no_group_key"}`, 1, 20*time.Second)
	if n := gotC.total(); n != 0 {
		t.Fatalf("C, not a subscriber, got %d readings: %v", n, gotC)
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
}

// newKey creates in's gateway key and returns its address.
func newKey(t *testing.T, in *instance) string {
	t.Helper()
	if _, err := in.bridgeCmd("key", "new", "--config", in.config); err != nil {
		t.Fatal(err)
	}
	return in.address()
}

// appendConfig adds lines at the end of in's config file (where, after
// newInstance, the [overlay] table is open).
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

// waitLogAfter waits until in logs text after byte offset from.
func waitLogAfter(t *testing.T, in *instance, from int, text string) {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for !strings.Contains(in.logs()[from:], text) {
		if time.Now().After(deadline) {
			t.Fatalf("no %q in the log within 20s", text)
		}
		time.Sleep(50 * time.Millisecond)
	}
}
