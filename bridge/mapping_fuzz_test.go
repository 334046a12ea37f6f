package bridge

import (
	"bytes"
	"encoding/json"
	"fmt"
	"reflect"
	"strings"
	"testing"

	"github.com/tributary-iot/tributary/streamr"
)

// fuzzRules cover every way a rule maps: fixed partition, key template,
// JSON key field with a timestamp field, binary content with a timestamp
// property, and the default rule.
var fuzzRules = []RuleConfig{
	{Topic: "fixed/+/p", Stream: "{address}/fixed/{1}", Partition: 7},
	{Topic: "keyed/+/t", Stream: "streamr.eth/keyed", Partitions: 100, PartitionKey: "{1}"},
	{Topic: "field/#", Stream: "{address}/field", Partitions: 7, PartitionKeyField: "device", TimestampField: "ts"},
	{Topic: "bin/+", Stream: "{address}/bin/{1}", Content: "binary", TimestampProperty: "ts"},
	{Topic: "bad/+", Stream: "{1}/bad"},
	{Topic: "#", Stream: "{address}/{topic}"},
}

// FuzzMap maps hostile topics, payloads and user properties (what any MQTT
// client sends) with rules of every kind, the first compiled from the
// fuzzed filter and template as a config file could hold them. A mapped
// reading has a valid stream part within the rule's partitions and, for
// JSON, a payload that is one object; a refused one says why and names its
// topic. Mapping is a pure function.
func FuzzMap(f *testing.F) {
	f.Add("fixed/a1/p", []byte(`{}`), "", "x/+/#", "{address}/x/{1}/{2}")
	f.Add("keyed/foo/t", []byte(`{"a":1}`), "", "", "")
	f.Add("field/x/y", []byte(`{"device":"sensor-1","ts":1700000000000}`), "", "", "")
	f.Add("field/x", []byte(`{"device":12345,"ts":"2023-11-14T22:13:20Z"}`), "", "", "")
	f.Add("field/x", []byte(`{"device":[1,{"b":null}],"ts":-1}`), "", "", "")
	f.Add("bin/cam", []byte{0xff, 0}, "1700000000001", "", "")
	f.Add("bad/0xZZ", []byte(`{}`), "", "", "")
	f.Add("Home/Kitchen/temp", []byte(` {"t":21.5} `), "", "+/+", "streamr.eth/{2}")
	f.Add("a//b/", []byte(`{"t":1}{}`), "", "#", "{address}/{topic}")
	f.Add("", []byte(`null`), "2023-11-14T22:13:20.5+01:00", "", "")
	f.Fuzz(func(t *testing.T, topic string, payload []byte, tsProp, filter, stream string) {
		rules := compileFuzzRules(filter, stream)
		in := Input{Topic: topic, Payload: payload, UserProperties: map[string]string{"ts": tsProp}}
		got, reason := Map(rules, testAddress, in)
		again, reason2 := Map(rules, testAddress, in)
		if !reflect.DeepEqual(got, again) || !reflect.DeepEqual(reason, reason2) {
			t.Fatalf("Map is not deterministic: %+v %v, then %+v %v", got, reason, again, reason2)
		}
		if reason != nil {
			checkRefusal(t, topic, reason)
			return
		}
		checkMapped(t, rules, in, got)
	})
}

// compileFuzzRules puts the rule of the fuzzed filter and template first
// when it compiles.
func compileFuzzRules(filter, stream string) []*Rule {
	var rules []*Rule
	if r, err := Compile(RuleConfig{Topic: filter, Stream: stream}, 0); err == nil {
		rules = append(rules, r)
	}
	for i, c := range fuzzRules {
		r, err := Compile(c, i)
		if err != nil {
			panic(fmt.Sprintf("fuzz rule %d: %v", i, err))
		}
		rules = append(rules, r)
	}
	return rules
}

func checkRefusal(t *testing.T, topic string, reason *Reason) {
	t.Helper()
	switch byte(reason.Code) {
	case 0x90, 0x99: // MQTT 5 "Topic Name invalid", "Payload format invalid"
	default:
		t.Fatalf("refusal %v: code %#x is not one mapping answers with", reason, reason.Code)
	}
	if reason.Label == "" || !strings.Contains(reason.Detail, fmt.Sprintf("%q", topic)) {
		t.Fatalf("refusal %+v does not name its label and topic %q", reason, topic)
	}
}

func checkMapped(t *testing.T, rules []*Rule, in Input, got Mapped) {
	t.Helper()
	id, err := streamr.ParseStreamID(string(got.Part.Stream))
	if err != nil || id != got.Part.Stream {
		t.Fatalf("mapped %q to stream %q, which does not parse back (%v)", in.Topic, got.Part.Stream, err)
	}
	var rule *Rule
	for _, r := range rules {
		if _, ok := r.match(strings.Split(in.Topic, "/")); ok {
			rule = r
			break
		}
	}
	if rule == nil {
		t.Fatalf("mapped %q although no rule matches it", in.Topic)
	}
	if n := max(rule.cfg.Partitions, 1); rule.cfg.Partitions > 0 && (got.Part.Partition < 0 || got.Part.Partition >= n) {
		t.Fatalf("topic %q: partition %d outside the rule's %d", in.Topic, got.Part.Partition, n)
	} else if rule.cfg.Partitions == 0 && got.Part.Partition != rule.cfg.Partition {
		t.Fatalf("topic %q: partition %d, want the rule's fixed %d", in.Topic, got.Part.Partition, rule.cfg.Partition)
	}
	if got.Timestamp < 0 {
		t.Fatalf("topic %q: negative timestamp %d", in.Topic, got.Timestamp)
	}
	if got.ContentType == streamr.ContentJSON {
		trimmed := bytes.TrimSpace(in.Payload)
		if !json.Valid(trimmed) || len(trimmed) == 0 || trimmed[0] != '{' {
			t.Fatalf("topic %q: accepted JSON payload %q that is not one object", in.Topic, in.Payload)
		}
	}
}

// TestMapStrayCloser: a JSON object followed by a stray '}' or ']' is not
// one object (found by FuzzMap: json.Decoder.More is false before them).
func TestMapStrayCloser(t *testing.T) {
	rules := compileFuzzRules("", "")
	for _, topic := range []string{"home/x", "field/x"} {
		for _, body := range []string{`{"device":"a"}}`, `{"device":"a"}]`, `{"device":"a"}}t"{1}:}`} {
			if _, reason := Map(rules, testAddress, Input{Topic: topic, Payload: []byte(body)}); reason == nil || reason.Label != "invalid_json" {
				t.Errorf("topic %s, payload %s: refusal %v, want invalid_json", topic, body, reason)
			}
		}
	}
}
