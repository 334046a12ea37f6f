package main

import (
	"context"
	"strings"
	"testing"
	"time"

	mqtt "github.com/eclipse/paho.mqtt.golang"
)

// TestUnmappedLocal runs the real binary with [mqtt] unmapped = "local": topics that no rule
// maps, or whose stream ID would be invalid, reach local subscribers and are retained like on
// any broker, counted, and never signed; a mapped topic still goes through the pipeline.
func TestUnmappedLocal(t *testing.T) {
	if testing.Short() {
		t.Skip("real binary")
	}
	in := newInstance(t, `
[mqtt]
unmapped = "local"

[[rule]]
topic = "sensors/#"
stream = "{address}/{topic}"
`)
	in.start()
	defer in.stop()

	sub := connect(t, in.mqtt, "dashboard")
	defer sub.Disconnect(100)
	got := make(chan mqtt.Message, 10)
	for _, f := range []string{"#", "$local/#"} {
		if tok := sub.Subscribe(f, 1, func(_ mqtt.Client, m mqtt.Message) { got <- m }); !tok.WaitTimeout(5*time.Second) || tok.Error() != nil {
			t.Fatalf("subscribe %s: %v", f, tok.Error())
		}
	}
	pub := connect(t, in.mqtt, "switch")
	defer pub.Disconnect(100)
	local := []struct {
		topic  string
		retain bool
	}{
		{"lights/kitchen", true},       // no rule
		{"sensors/living room", false}, // a rule, but a space makes the stream ID invalid
		{"sensors/küche", false},
		{"$local/heartbeat", false},
	}
	for _, m := range local {
		if tok := pub.Publish(m.topic, 1, m.retain, "on"); !tok.WaitTimeout(5*time.Second) || tok.Error() != nil {
			t.Fatalf("publish %s: %v", m.topic, tok.Error())
		}
	}
	if tok := pub.Publish("sensors/t1", 1, false, `{"v":1}`); !tok.WaitTimeout(5*time.Second) || tok.Error() != nil {
		t.Fatalf("publish mapped reading: %v", tok.Error())
	}
	seen := map[string]bool{}
	for range len(local) + 1 {
		select {
		case m := <-got:
			seen[m.Topic()] = true
		case <-time.After(10 * time.Second):
			t.Fatalf("subscriber got only %v", seen)
		}
	}
	for _, m := range local {
		if !seen[m.topic] {
			t.Errorf("local subscriber did not get %q (got %v)", m.topic, seen)
		}
	}

	late := connect(t, in.mqtt, "late")
	defer late.Disconnect(100)
	retained := make(chan mqtt.Message, 1)
	late.Subscribe("lights/#", 1, func(_ mqtt.Client, m mqtt.Message) { retained <- m })
	select {
	case m := <-retained:
		if !m.Retained() || string(m.Payload()) != "on" {
			t.Errorf("late subscriber got %q retained=%v", m.Payload(), m.Retained())
		}
	case <-time.After(10 * time.Second):
		t.Error("unmapped retained message not delivered to a later subscriber")
	}

	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if v, err := in.metric(ctx, "tributary_readings_local_total"); err != nil || v != float64(len(local)) {
		t.Errorf("tributary_readings_local_total = %v (%v), want %d", v, err, len(local))
	}
	deadline := time.Now().Add(10 * time.Second)
	for {
		v, err := in.metric(ctx, "tributary_messages_signed_total")
		if err == nil && v == 1 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("tributary_messages_signed_total = %v (%v), want only the mapped reading", v, err)
		}
		time.Sleep(100 * time.Millisecond)
	}
	time.Sleep(200 * time.Millisecond) // a local reading signed late would show up now
	if v, _ := in.metric(ctx, "tributary_messages_signed_total"); v != 1 {
		t.Errorf("tributary_messages_signed_total = %v: an unmapped reading was signed", v)
	}
}

// TestRefusedReadingLoggedOnce runs the real binary with the default unmapped = "refuse": a
// client retrying refused readings gets one log line for the burst (broker and pipeline used
// to log each refusal once each), with the reason and without the payload.
func TestRefusedReadingLoggedOnce(t *testing.T) {
	if testing.Short() {
		t.Skip("real binary")
	}
	in := newInstance(t, "")
	in.start()
	defer in.stop()
	pub := connect(t, in.mqtt, "retrier")
	defer pub.Disconnect(100)
	for range 100 {
		if tok := pub.Publish("bad topic/x", 1, false, `{"secret":1}`); !tok.WaitTimeout(5*time.Second) || tok.Error() != nil {
			t.Fatalf("publish: %v", tok.Error())
		}
	}
	logs := in.logs()
	if n := strings.Count(logs, "publish rejected"); n != 1 {
		t.Errorf("%d lines for 100 refused readings, want 1:\n%s", n, logs)
	}
	if !strings.Contains(logs, "invalid_stream_id") || strings.Contains(logs, "secret") {
		t.Errorf("the line lacks the reason or carries the payload:\n%s", logs)
	}
}
