package appapi

import (
	"net/url"
	"testing"
)

// FuzzDecodePayload: any publish payload decodes or is refused with an
// error, never a panic; what decodes has an object as content.
func FuzzDecodePayload(f *testing.F) {
	for _, s := range []string{`{"a":1}`, `{"content":{"a":1},"metadata":{"timestamp":5}}`, `[1]`, `{"content":[]}`,
		`{"content":{},"metadata":{"timestamp":"2024-01-01T00:00:00Z"}}`, `{"content":{},"metadata":1}`, ``, `null`} {
		f.Add([]byte(s), true)
		f.Add([]byte(s), false)
	}
	f.Fuzz(func(t *testing.T, payload []byte, metadata bool) {
		m, err := decodePayload(payload, metadata)
		if err != nil {
			return
		}
		if checkObject(m.content, "content") != nil || m.timestamp < 0 {
			t.Fatalf("decoded %q to content %q, timestamp %d", payload, m.content, m.timestamp)
		}
	})
}

// FuzzParseTarget: any publish query and content resolve to a partition
// within the count, or fail.
func FuzzParseTarget(f *testing.F) {
	for _, q := range []string{"partition=3", "partitionKey=k", "partitionKeyField=f", "partition=1&partitionKey=x", "partition=-1", "partition=%zz"} {
		f.Add(q, []byte(`{"f":"v"}`), 7)
	}
	f.Fuzz(func(t *testing.T, query string, content []byte, count int) {
		v, err := url.ParseQuery(query)
		if err != nil {
			return
		}
		tg, err := parseTarget(v)
		if err != nil || count < 1 || count > 100 {
			return
		}
		p, err := tg.resolve(content, count)
		if err == nil && (p < 0 || p >= 100 || (tg.keySet || tg.keyField != "") && p >= count) {
			t.Fatalf("query %q: partition %d of %d", query, p, count)
		}
	})
}

// FuzzParseWSPath: any request path is a publish or subscribe of a valid
// stream ID, or refused.
func FuzzParseWSPath(f *testing.F) {
	for _, p := range []string{"/streams/0x1234567890123456789012345678901234567890%2Fa/subscribe", "/streams/x.eth/a/b/publish", "/streams//publish", "/x"} {
		f.Add(p)
	}
	f.Fuzz(func(t *testing.T, path string) {
		u, err := url.Parse(path)
		if err != nil {
			return
		}
		action, id, err := parseWSPath(u)
		if err == nil && (action != "publish" && action != "subscribe" || id == "") {
			t.Fatalf("%q: action %q id %q", path, action, id)
		}
	})
}

// FuzzNodeTopic: any MQTT topic and payload map onto a stream partition,
// fall to the rules, or are refused.
func FuzzNodeTopic(f *testing.F) {
	n := NodeTopics{Address: "0x1234567890123456789012345678901234567890", Metadata: true, Partitions: 5}
	for _, s := range []string{"/a?partition=2", "x.eth/a?partitionKey=k", "a/b", "0x1234567890123456789012345678901234567890/a?partitionKeyField=f"} {
		f.Add(s, []byte(`{"content":{"f":1}}`))
	}
	f.Fuzz(func(t *testing.T, topic string, payload []byte) {
		d, err := n.Direct("client", topic, payload)
		if err == nil && (d.Part.Partition < 0 || d.Part.Partition >= 100 || d.Part.Stream == "") {
			t.Fatalf("%q: %+v", topic, d.Part)
		}
	})
}

// FuzzParsePartitions: any partitions= list is distinct partitions 0-99, or refused.
func FuzzParsePartitions(f *testing.F) {
	for _, s := range []string{"0", "0,2,5", "1,1", "100", "-1", ""} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		ps, err := parsePartitions(s)
		if err != nil {
			return
		}
		seen := map[int]bool{}
		for _, p := range ps {
			if p < 0 || p >= 100 || seen[p] {
				t.Fatalf("%q: %v", s, ps)
			}
			seen[p] = true
		}
	})
}

// FuzzParseKeyFile: keys come out trimmed and non-empty.
func FuzzParseKeyFile(f *testing.F) {
	f.Add([]byte("a\n# c\n\n b \r\n"))
	f.Fuzz(func(t *testing.T, data []byte) {
		for _, k := range ParseKeyFile(data) {
			if k == "" || k[0] == '#' {
				t.Fatalf("key %q from %q", k, data)
			}
		}
		if _, err := NewKeys(ParseKeyFile(data)); err != nil {
			t.Fatal(err)
		}
	})
}
