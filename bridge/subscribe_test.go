package bridge

import (
	"strings"
	"testing"

	"github.com/tributary-iot/tributary/streamr"
)

func TestSubscriptionTopic(t *testing.T) {
	const stream = "0x1111111111111111111111111111111111111111/sensors"
	const publisher = "0x2222222222222222222222222222222222222222"
	m := &streamr.StreamMessage{ID: streamr.MessageID{StreamID: stream, StreamPartition: 3}}
	for _, tc := range []struct {
		template, want, err string
	}{
		{template: "", want: stream},
		{template: "{stream}", want: stream},
		{template: "plain/topic", want: "plain/topic"},
		{template: "in/{stream}/{partition}/from/{publisher}/x", want: "in/" + stream + "/3/from/" + publisher + "/x"},
		{template: "{partition}{partition}", want: "33"},
		{template: "p{publisher}", want: "p" + publisher},
		{template: "a/+/b", err: "wildcards"},
		{template: "a/#", err: "wildcards"},
		{template: "{stream", err: "unclosed"},
		{template: "{streams}", err: "unknown placeholder {streams}"},
	} {
		s, err := CompileSubscription(SubscribeConfig{Stream: stream, Topic: tc.template}, 0)
		if tc.err != "" {
			if err == nil || !strings.Contains(err.Error(), tc.err) {
				t.Errorf("topic %q: error %v, want one saying %q", tc.template, err, tc.err)
			}
			continue
		}
		if err != nil {
			t.Fatalf("topic %q: %v", tc.template, err)
		}
		if got := s.mqttTopic(m, publisher); got != tc.want {
			t.Errorf("topic %q: got %q, want %q", tc.template, got, tc.want)
		}
	}
}
