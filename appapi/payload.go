package appapi

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"net/url"
	"strconv"
	"strings"

	"github.com/tributary-iot/tributary/bridge"
	"github.com/tributary-iot/tributary/streamr"
)

// message is an app's publish payload, decoded.
type message struct {
	content   []byte // one JSON object
	timestamp int64  // ms from metadata.timestamp; 0: none
}

// decodePayload reads a publish payload: the JSON object content itself,
// or with withMetadata {"content":{…},"metadata":{"timestamp":…}} as the
// node's payloadMetadata format (other metadata fields are ignored, as
// the node ignores them).
func decodePayload(payload []byte, withMetadata bool) (message, error) {
	if len(bytes.TrimSpace(payload)) == 0 {
		return message{}, errors.New("payload missing")
	}
	if !withMetadata {
		if err := checkObject(payload, "payload"); err != nil {
			return message{}, err
		}
		return message{content: payload}, nil
	}
	var env struct {
		Content  json.RawMessage `json:"content"`
		Metadata json.RawMessage `json:"metadata"`
	}
	if err := checkObject(payload, "payload"); err != nil {
		return message{}, err
	}
	if err := json.Unmarshal(payload, &env); err != nil {
		return message{}, fmt.Errorf("payload is not a JSON object: %w", err)
	}
	if env.Content == nil {
		return message{}, errors.New("payload has no content")
	}
	if err := checkObject(env.Content, "content"); err != nil {
		return message{}, err
	}
	m := message{content: env.Content}
	if env.Metadata == nil || string(env.Metadata) == "null" {
		return m, nil
	}
	if err := checkObject(env.Metadata, "metadata"); err != nil {
		return message{}, err
	}
	var meta struct {
		Timestamp json.RawMessage `json:"timestamp"`
	}
	if err := json.Unmarshal(env.Metadata, &meta); err != nil {
		return message{}, fmt.Errorf("metadata: %w", err)
	}
	if meta.Timestamp != nil && string(meta.Timestamp) != "null" {
		ts, err := jsonTimestamp(meta.Timestamp)
		if err != nil {
			return message{}, fmt.Errorf("metadata.timestamp: %w", err)
		}
		m.timestamp = ts
	}
	return m, nil
}

func checkObject(b []byte, what string) error {
	t := bytes.TrimLeft(b, " \t\r\n")
	if len(t) == 0 || t[0] != '{' || !json.Valid(t) {
		return fmt.Errorf("%s is not a JSON object", what)
	}
	return nil
}

// jsonTimestamp reads a time as a JSON number of ms or a string (ms or
// RFC 3339).
func jsonTimestamp(raw json.RawMessage) (int64, error) {
	var s string
	if json.Unmarshal(raw, &s) != nil {
		s = string(raw)
	}
	return parseTimestamp(s)
}

// parseTimestamp reads a positive time in ms or RFC 3339.
func parseTimestamp(s string) (int64, error) {
	ms, err := bridge.ParseTime(s)
	if err != nil {
		return 0, err
	}
	if ms <= 0 {
		return 0, fmt.Errorf("timestamp %q is not after the epoch", s)
	}
	return ms, nil
}

// errCombination is the node's 422: more than one way to pick the partition.
var errCombination = errors.New(`invalid combination of "partition", "partitionKey" and "partitionKeyField"`)

// target is how a publish picks its stream partition: the node's
// partition | partitionKey | partitionKeyField query parameters.
type target struct {
	partition int    // used when neither key is set
	key       string // hashed onto the partitions
	keySet    bool
	keyField  string // field of the content holding the key
}

// parseTarget reads the partition parameters of a publish query.
func parseTarget(v url.Values) (target, error) {
	var t target
	set := 0
	if s, ok := v["partition"]; ok {
		set++
		n, err := strconv.Atoi(s[0])
		if err != nil || n < 0 || n >= streamr.MaxPartitions {
			return t, fmt.Errorf("partition %q: want an integer from 0 to %d", s[0], streamr.MaxPartitions-1)
		}
		t.partition = n
	}
	if s, ok := v["partitionKey"]; ok {
		set++
		t.key, t.keySet = s[0], true
	}
	if s, ok := v["partitionKeyField"]; ok {
		set++
		if s[0] == "" {
			return t, errors.New("partitionKeyField is empty")
		}
		t.keyField = s[0]
	}
	if set > 1 {
		return t, errCombination
	}
	return t, nil
}

// resolve returns the partition of content among count partitions.
func (t target) resolve(content []byte, count int) (int, error) {
	switch {
	case t.keySet:
		return streamr.PartitionForKey(count, t.key), nil
	case t.keyField != "":
		var obj map[string]json.RawMessage
		if err := json.Unmarshal(content, &obj); err != nil {
			return 0, fmt.Errorf("content: %w", err)
		}
		raw, ok := obj[t.keyField]
		if !ok {
			return 0, fmt.Errorf("content has no field %q for the partition key", t.keyField)
		}
		return bridge.PartitionForJSON(count, raw), nil
	}
	return t.partition, nil
}

// parseStreamID reads a stream ID from a URL path segment (already
// unescaped once by the router; a second escape layer is tolerated).
func parseStreamID(raw string) (streamr.StreamID, error) {
	s := raw
	if strings.Contains(s, "%") {
		u, err := url.PathUnescape(s)
		if err != nil {
			return "", fmt.Errorf("stream ID %q: %w", raw, err)
		}
		s = u
	}
	id, err := streamr.ParseStreamID(s)
	if err != nil {
		return "", fmt.Errorf("stream ID %q: %w", truncate(raw, 200), err)
	}
	return id, nil
}

func truncate(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return s[:n] + "…"
}

// subscribePayload is what a subscriber receives for m: its JSON content,
// or with withMetadata the node's {"content":…,"metadata":{…}}.
func subscribePayload(m *streamr.StreamMessage, withMetadata bool) ([]byte, bool) {
	c := m.Content()
	if c == nil || c.EncryptionType != streamr.EncryptionNone || c.ContentType != streamr.ContentJSON {
		return nil, false
	}
	if !withMetadata {
		return c.Content, true
	}
	b, err := json.Marshal(struct {
		Content  json.RawMessage `json:"content"`
		Metadata payloadMetadata `json:"metadata"`
	}{json.RawMessage(c.Content), payloadMetadata{
		Timestamp: m.ID.Timestamp, SequenceNumber: m.ID.SequenceNumber,
		PublisherID: m.ID.PublisherHex(), MsgChainID: m.ID.MsgChainID,
	}})
	return b, err == nil
}

// payloadMetadata is the node's metadata object.
type payloadMetadata struct {
	Timestamp      int64  `json:"timestamp"`
	SequenceNumber int32  `json:"sequenceNumber"`
	PublisherID    string `json:"publisherId"`
	MsgChainID     string `json:"msgChainId"`
}
