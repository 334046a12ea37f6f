package appapi

import (
	"errors"
	"fmt"
	"net/url"
	"strings"

	"github.com/tributary-iot/tributary/bridge"
	"github.com/tributary-iot/tributary/streamr"
)

// NodeTopics reads MQTT publishes as the Streamr node's MQTT plugin does:
// the topic is a stream ID (with Domain in front when set; a leading "/"
// is the gateway's own address, like the SDK's toStreamID), optionally
// followed by "?partition=N", "?partitionKey=K" or "?partitionKeyField=F";
// the payload is the JSON object content, or with Metadata
// {"content":…,"metadata":{"timestamp":…}}.
type NodeTopics struct {
	Domain     string // the node's streamIdDomain
	Address    string // the gateway's "0x…" address, for topics starting with "/"
	Metadata   bool   // the node's payloadMetadata
	Partitions int    // partition count that partitionKey hashes onto; 0: DefaultPartitions
}

// ErrNotNodeTopic says a topic names no stream ID: the mapping rules take
// the reading instead.
var ErrNotNodeTopic = errors.New("not a Streamr node topic")

// Direct maps one MQTT publish of client onto the reading the node would
// publish. It fails with ErrNotNodeTopic when the topic is no stream ID,
// and with another error (naming the problem) when the payload or query
// is bad.
func (n NodeTopics) Direct(client, topic string, payload []byte) (bridge.Direct, error) {
	base, query, _ := strings.Cut(topic, "?")
	id, err := n.streamID(base)
	if err != nil {
		return bridge.Direct{}, ErrNotNodeTopic
	}
	v, err := url.ParseQuery(query)
	if err != nil {
		return bridge.Direct{}, fmt.Errorf("topic %q: query: %w", truncate(topic, 200), err)
	}
	t, err := parseTarget(v)
	if err != nil {
		return bridge.Direct{}, fmt.Errorf("topic %q: %w", truncate(topic, 200), err)
	}
	m, err := decodePayload(payload, n.Metadata)
	if err != nil {
		return bridge.Direct{}, fmt.Errorf("topic %q: %w", truncate(topic, 200), err)
	}
	count := n.Partitions
	if count == 0 {
		count = DefaultPartitions
	}
	part := streamr.StreamPartID{Stream: id}
	if part.Partition, err = t.resolve(m.content, count); err != nil {
		return bridge.Direct{}, fmt.Errorf("topic %q: %w", truncate(topic, 200), err)
	}
	return directFor(client, part, m), nil
}

// streamID is the stream a topic (without its query) names.
func (n NodeTopics) streamID(base string) (streamr.StreamID, error) {
	if n.Domain != "" {
		base = n.Domain + "/" + base
	} else if strings.HasPrefix(base, "/") {
		base = n.Address + base
	}
	if !strings.Contains(base, "/") || strings.ContainsAny(base, "+#") {
		return "", ErrNotNodeTopic
	}
	return streamr.ParseStreamID(base)
}
