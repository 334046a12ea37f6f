package bridge

import (
	"strings"
	"testing"

	"github.com/tributary-iot/tributary/reasoncode"
	"github.com/tributary-iot/tributary/streamr"
)

const testAddress = "0x7e5f4552091a69125d5dfcb7b8c2659029395bdf"

func compileAll(t *testing.T, cfgs ...RuleConfig) []*Rule {
	t.Helper()
	rules := make([]*Rule, len(cfgs))
	for i, c := range cfgs {
		r, err := Compile(c, i)
		if err != nil {
			t.Fatalf("Compile(%+v): %v", c, err)
		}
		rules[i] = r
	}
	return rules
}

func TestMapSuccess(t *testing.T) {
	rules := compileAll(t,
		RuleConfig{Topic: "fixed/+/p", Stream: "{address}/fixed/{1}", Partition: 7},
		RuleConfig{Topic: "keyed/+/t", Stream: "streamr.eth/keyed", Partitions: 100, PartitionKey: "{1}"},
		RuleConfig{Topic: "field/#", Stream: "{address}/field", Partitions: 7, PartitionKeyField: "device", TimestampField: "ts"},
		RuleConfig{Topic: "bin/+", Stream: "{address}/bin/{1}", Content: "binary", TimestampProperty: "ts"},
		RuleConfig{Topic: "#", Stream: "{address}/{topic}"},
	)
	tests := []struct {
		name  string
		in    Input
		want  string // stream part
		ctype streamr.ContentType
		ts    int64
	}{
		{"fixed partition and capture", Input{Topic: "fixed/a1/p", Payload: []byte(`{}`)}, testAddress + "/fixed/a1#7", streamr.ContentJSON, 0},
		{"key template hashed like the SDK", Input{Topic: "keyed/foo/t", Payload: []byte(`{}`)}, "streamr.eth/keyed#72", streamr.ContentJSON, 0},
		{"JSON string field hashed", Input{Topic: "field/x/y", Payload: []byte(`{"device":"sensor-1","ts":1700000000000}`)}, testAddress + "/field#3", streamr.ContentJSON, 1700000000000},
		{"JSON number field", Input{Topic: "field/x", Payload: []byte(`{"device":12345,"ts":"2023-11-14T22:13:20Z"}`)}, testAddress + "/field#4", streamr.ContentJSON, 1700000000000},
		{"binary with user property time", Input{Topic: "bin/cam", Payload: []byte{0xff, 0}, UserProperties: map[string]string{"ts": "1700000000001"}}, testAddress + "/bin/cam#0", streamr.ContentBinary, 1700000000001},
		{"default rule keeps path case", Input{Topic: "Home/Kitchen/temp", Payload: []byte(`{"t":21.5}`)}, testAddress + "/Home/Kitchen/temp#0", streamr.ContentJSON, 0},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got, reason := Map(rules, testAddress, tc.in)
			if reason != nil {
				t.Fatalf("refused: %v", reason)
			}
			if got.Part.String() != tc.want || got.ContentType != tc.ctype || got.Timestamp != tc.ts {
				t.Fatalf("got %s type %d ts %d, want %s type %d ts %d", got.Part, got.ContentType, got.Timestamp, tc.want, tc.ctype, tc.ts)
			}
		})
	}
}

func TestMapRejections(t *testing.T) {
	rules := compileAll(t,
		RuleConfig{Topic: "field/+", Stream: "{address}/f", Partitions: 3, PartitionKeyField: "id", TimestampField: "ts"},
		RuleConfig{Topic: "bad/+", Stream: "{1}/bad"},
		RuleConfig{Topic: "data/+", Stream: "{address}/data/{1}"},
	)
	tests := []struct {
		name  string
		topic string
		body  string
		code  reasoncode.Code
		label string
	}{
		{"no rule", "other/x", `{}`, reasoncode.TopicNameInvalid, "no_rule"},
		{"invalid stream id", "bad/x", `{}`, reasoncode.TopicNameInvalid, "invalid_stream_id"},
		{"capture with forbidden char", "data/a b", `{}`, reasoncode.TopicNameInvalid, "invalid_stream_id"},
		{"not JSON", "data/x", `hello`, reasoncode.PayloadFormatInvalid, "invalid_json"},
		{"JSON array", "data/x", `[1,2]`, reasoncode.PayloadFormatInvalid, "invalid_json"},
		{"JSON null", "data/x", `null`, reasoncode.PayloadFormatInvalid, "invalid_json"},
		{"trailing data", "data/x", `{} {}`, reasoncode.PayloadFormatInvalid, "invalid_json"},
		{"missing key field", "field/x", `{"ts":1}`, reasoncode.PayloadFormatInvalid, "missing_partition_key"},
		{"bad timestamp", "field/x", `{"id":"a","ts":"yesterday"}`, reasoncode.PayloadFormatInvalid, "invalid_timestamp"},
		{"negative timestamp", "field/x", `{"id":"a","ts":-5}`, reasoncode.PayloadFormatInvalid, "invalid_timestamp"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			_, reason := Map(rules, testAddress, Input{Topic: tc.topic, Payload: []byte(tc.body)})
			if reason == nil {
				t.Fatal("accepted")
			}
			if reason.Code != tc.code || reason.Label != tc.label {
				t.Fatalf("got %s (0x%02x), want %s (0x%02x)", reason.Label, byte(reason.Code), tc.label, byte(tc.code))
			}
			if !strings.Contains(reason.Detail, tc.topic) {
				t.Errorf("detail %q does not name the topic", reason.Detail)
			}
		})
	}
}

func TestCompileErrors(t *testing.T) {
	tests := []struct {
		name string
		cfg  RuleConfig
		want string
	}{
		{"empty topic", RuleConfig{Stream: "{address}/x"}, "empty topic filter"},
		{"hash not last", RuleConfig{Topic: "a/#/b", Stream: "{address}/x"}, "'#' must be the last level"},
		{"mixed wildcard", RuleConfig{Topic: "a/b+", Stream: "{address}/x"}, "mixes a wildcard"},
		{"unknown placeholder", RuleConfig{Topic: "a/+", Stream: "{owner}/x"}, "unknown placeholder {owner}"},
		{"capture out of range", RuleConfig{Topic: "a/+", Stream: "{address}/{2}"}, "has 1 wildcard"},
		{"unclosed brace", RuleConfig{Topic: "a", Stream: "{address/x"}, "unclosed"},
		{"bad content", RuleConfig{Topic: "a", Stream: "{address}/x", Content: "xml"}, `content "xml"`},
		{"partition range", RuleConfig{Topic: "a", Stream: "{address}/x", Partition: 100}, "partition 100"},
		{"key without count", RuleConfig{Topic: "a", Stream: "{address}/x", PartitionKey: "k"}, "partition count"},
		{"key and field", RuleConfig{Topic: "a", Stream: "{address}/x", Partitions: 2, PartitionKey: "k", PartitionKeyField: "f"}, "exclusive"},
		{"fixed and key", RuleConfig{Topic: "a", Stream: "{address}/x", Partitions: 2, Partition: 1, PartitionKey: "k"}, "cannot be combined"},
		{"field on binary", RuleConfig{Topic: "a", Stream: "{address}/x", Partitions: 2, PartitionKeyField: "f", Content: "binary"}, "needs content"},
		{"timestamp field on binary", RuleConfig{Topic: "a", Stream: "{address}/x", Content: "binary", TimestampField: "ts"}, "needs content"},
		{"stream owner never valid", RuleConfig{Topic: "sensors/+", Stream: "sensors/{1}"}, `owner "sensors"`},
		{"stream path never valid", RuleConfig{Topic: "a/+", Stream: "{address}/a b/{1}"}, `path part "a b/"`},
		{"literal stream without path", RuleConfig{Topic: "a", Stream: "streamr.eth"}, "no '/'"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			_, err := Compile(tc.cfg, 2)
			if err == nil {
				t.Fatal("compiled")
			}
			if !strings.Contains(err.Error(), tc.want) || !strings.Contains(err.Error(), "rule 3") {
				t.Fatalf("error %q does not contain %q and the rule number", err, tc.want)
			}
		})
	}
}

func TestFilterMatch(t *testing.T) {
	tests := []struct {
		filter, topic string
		ok            bool
		captures      []string
	}{
		{"a/+/c", "a/b/c", true, []string{"b"}},
		{"a/+/c", "a/b/d", false, nil},
		{"a/#", "a/b/c", true, []string{"b/c"}},
		{"a/#", "a", true, []string{""}},
		{"#", "$SYS/x", false, nil},
		{"+/x", "$SYS/x", false, nil},
		{"a/b", "a/b/c", false, nil},
		{"a/b/c", "a/b", false, nil},
		{"+", "a", true, []string{"a"}},
		{"a/+/#", "a/b/c/d", true, []string{"b", "c/d"}},
		{"+/#", "x/y", true, []string{"x", "y"}},
		{"#", "a//b", true, []string{"a//b"}},
		{"a/#", "a/", true, []string{""}},
	}
	for _, tc := range tests {
		r, err := Compile(RuleConfig{Topic: tc.filter, Stream: "{address}/x"}, 0)
		if err != nil {
			t.Fatal(err)
		}
		got, ok := r.match(strings.Split(tc.topic, "/"))
		if ok != tc.ok || strings.Join(got, "|") != strings.Join(tc.captures, "|") {
			t.Errorf("%q ~ %q: got %v %q, want %v %q", tc.filter, tc.topic, ok, got, tc.ok, tc.captures)
		}
	}
}

// TestMapAllocations: Map runs for every PUBLISH; it allocates the topic's
// levels, the stream ID and, for a keyed rule, the partition key — not
// the captures or copies of the topic (7 or more before).
func TestMapAllocations(t *testing.T) {
	const address = "0x1111111111111111111111111111111111111111"
	payload := []byte(`{"t":21.5}`)
	for _, tc := range []struct {
		rule RuleConfig
		want float64
	}{
		{RuleConfig{Topic: "#", Stream: "{address}/{topic}"}, 2},
		{RuleConfig{Topic: "site/+/+/#", Stream: "{address}/{1}/{2}", PartitionKey: "{3}", Partitions: 4}, 3},
	} {
		r, err := Compile(tc.rule, 0)
		if err != nil {
			t.Fatal(err)
		}
		in := Input{Topic: "site/a/b/c/d", Payload: payload}
		if _, reason := Map([]*Rule{r}, address, in); reason != nil {
			t.Fatalf("rule %q: %v", tc.rule.Topic, reason)
		}
		if n := testing.AllocsPerRun(100, func() { Map([]*Rule{r}, address, in) }); n > tc.want {
			t.Errorf("rule %q: %.0f allocations per reading, want at most %.0f", tc.rule.Topic, n, tc.want)
		}
	}
}

// Templates whose placeholders could still form a valid stream ID are
// left to each reading.
func TestCompileAcceptsPossibleStreamIDs(t *testing.T) {
	for _, stream := range []string{"{1}/x", "{topic}", "{address}/{topic}", "streamr.eth/a/{1}", "{1}.eth/x", "0x" + strings.Repeat("ab", 20) + "/{1}"} {
		if _, err := Compile(RuleConfig{Topic: "a/+", Stream: stream}, 0); err != nil {
			t.Errorf("stream %q refused: %v", stream, err)
		}
	}
}
