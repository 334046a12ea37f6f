package bridge

import (
	"bytes"
	"cmp"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"strconv"
	"strings"

	"github.com/tributary-iot/tributary/reasoncode"
	"github.com/tributary-iot/tributary/streamr"
)

// RuleConfig maps MQTT topics onto a Streamr stream. It is the
// configuration form; Compile checks it and returns a Rule.
type RuleConfig struct {
	Topic             string   // MQTT topic filter; "+" and "#" capture {1}, {2}, …
	Stream            string   // stream ID template: {address}, {topic}, {1}, {2}, …
	Partition         int      // fixed partition, used when no key is set
	Partitions        int      // partition count for key hashing (1-100)
	PartitionKey      string   // template hashed like the SDK's partitionKey, e.g. "{1}"
	PartitionKeyField string   // JSON field whose value is the partition key
	Content           string   // "json" (an object, like the Streamr node) or "binary"
	TimestampField    string   // JSON field holding the reading's time (ms or RFC 3339)
	TimestampProperty string   // MQTT 5 user property holding the reading's time
	Encryption        string   // "never", "always" or "auto" (default: encrypt iff the stream is not public)
	Subscribers       []string // user IDs given this rule's group keys when there is no registry
}

// Rule is a compiled RuleConfig.
type Rule struct {
	cfg    RuleConfig
	filter []string
	stream template
	key    template
	binary bool
	// encryption is the rule's policy; Map says whether a reading is to
	// be encrypted, "auto" through a Publicity (none: never).
	encryption string
}

// Reason explains why a reading was refused. Its Code maps onto an MQTT 5
// reason code; the text goes to logs and the metric label.
type Reason struct {
	Code   reasoncode.Code
	Label  string // short metric label, e.g. "no_rule"
	Detail string
}

func (r *Reason) Error() string { return r.Label + ": " + r.Detail }

// Unmapped reports whether the reading was refused only because its topic
// has no Streamr stream: no rule matches, or the stream ID it forms is
// invalid (spaces, non-ASCII, a leading '$', …).
func (r *Reason) Unmapped() bool { return r.Label == "no_rule" || r.Label == "invalid_stream_id" }

func reject(code reasoncode.Code, label, format string, args ...any) *Reason {
	return &Reason{Code: code, Label: label, Detail: fmt.Sprintf(format, args...)}
}

// Compile validates a rule; index (0-based) names it in errors.
func Compile(cfg RuleConfig, index int) (*Rule, error) {
	where := fmt.Sprintf("rule %d (topic %q)", index+1, cfg.Topic)
	filter, err := parseFilter(cfg.Topic)
	if err != nil {
		return nil, fmt.Errorf("%s: topic: %w", where, err)
	}
	r := &Rule{cfg: cfg, filter: filter}
	captures := countWildcards(filter)
	if r.stream, err = parseTemplate(cfg.Stream, captures); err != nil {
		return nil, fmt.Errorf("%s: stream: %w", where, err)
	}
	if err := r.stream.checkStreamID(); err != nil {
		return nil, fmt.Errorf("%s: stream %q can never be a valid stream ID: %w", where, cfg.Stream, err)
	}
	if r.key, err = parseTemplate(cfg.PartitionKey, captures); err != nil {
		return nil, fmt.Errorf("%s: partition_key: %w", where, err)
	}
	switch cfg.Content {
	case "", "json":
	case "binary":
		r.binary = true
	default:
		return nil, fmt.Errorf("%s: content %q: want \"json\" or \"binary\"", where, cfg.Content)
	}
	switch cfg.Encryption {
	case "", "auto", "never", "always":
		r.encryption = cmp.Or(cfg.Encryption, "auto")
	default:
		return nil, fmt.Errorf("%s: encryption %q: want \"never\", \"always\" or \"auto\"", where, cfg.Encryption)
	}
	if len(cfg.Subscribers) > 0 && r.encryption == "never" {
		return nil, fmt.Errorf("%s: subscribers: the rule never encrypts; set encryption = \"always\"", where)
	}
	if err := checkPartitioning(cfg, r.binary); err != nil {
		return nil, fmt.Errorf("%s: %w", where, err)
	}
	if r.binary && cfg.TimestampField != "" {
		return nil, fmt.Errorf("%s: timestamp_field needs content = \"json\"", where)
	}
	return r, nil
}

func checkPartitioning(cfg RuleConfig, binary bool) error {
	if cfg.Partition < 0 || cfg.Partition >= streamr.MaxPartitions {
		return fmt.Errorf("partition %d: must be 0 to %d", cfg.Partition, streamr.MaxPartitions-1)
	}
	keyed := cfg.PartitionKey != "" || cfg.PartitionKeyField != ""
	if cfg.PartitionKey != "" && cfg.PartitionKeyField != "" {
		return errors.New("partition_key and partition_key_field are exclusive")
	}
	if keyed && cfg.Partition != 0 {
		return errors.New("partition cannot be combined with partition_key or partition_key_field")
	}
	if keyed && (cfg.Partitions < 1 || cfg.Partitions > streamr.MaxPartitions) {
		return fmt.Errorf("partitions %d: a keyed rule needs the stream's partition count, 1 to %d", cfg.Partitions, streamr.MaxPartitions)
	}
	if binary && cfg.PartitionKeyField != "" {
		return errors.New("partition_key_field needs content = \"json\"")
	}
	return nil
}

// Mapped is what a rule makes of one MQTT message.
type Mapped struct {
	Part        streamr.StreamPartID
	ContentType streamr.ContentType
	Timestamp   int64 // ms from the payload or a user property; 0 = none
	Encrypt     bool  // the rule's encryption is "always" (or "auto", decided by the caller)
	Auto        bool  // the rule's encryption is "auto"
}

// Input is the part of an MQTT PUBLISH that mapping reads.
type Input struct {
	Topic          string
	Payload        []byte
	UserProperties map[string]string
}

// Map applies the first matching rule. address is the gateway's "0x…"
// publisher ID. A nil Reason means success.
func Map(rules []*Rule, address string, in Input) (Mapped, *Reason) {
	levels := strings.Split(in.Topic, "/")
	var buf [4]string // captures of most rules, without an allocation
	for _, r := range rules {
		if captures, ok := r.matchTopic(in.Topic, levels, buf[:0]); ok {
			return r.apply(address, in, captures)
		}
	}
	return Mapped{}, reject(reasoncode.TopicNameInvalid, "no_rule", "topic %q matches no rule", in.Topic)
}

func (r *Rule) apply(address string, in Input, captures []string) (Mapped, *Reason) {
	vars := templateVars{address: address, topic: in.Topic, captures: captures}
	rawID := r.stream.expand(vars)
	id, err := streamr.ParseStreamID(rawID)
	if err != nil {
		return Mapped{}, reject(reasoncode.TopicNameInvalid, "invalid_stream_id", "topic %q: %v", in.Topic, err)
	}
	out := Mapped{ContentType: streamr.ContentJSON, Encrypt: r.encryption == "always", Auto: r.encryption == "auto"}
	var obj map[string]json.RawMessage
	if r.binary {
		out.ContentType = streamr.ContentBinary
	} else if obj, err = r.checkJSON(in.Payload); err != nil {
		return Mapped{}, reject(reasoncode.PayloadFormatInvalid, "invalid_json", "topic %q: %v", in.Topic, err)
	}
	partition, reason := r.partition(vars, obj, in.Topic)
	if reason != nil {
		return Mapped{}, reason
	}
	out.Part = streamr.StreamPartID{Stream: id, Partition: partition}
	if out.Timestamp, reason = r.timestamp(in, obj); reason != nil {
		return Mapped{}, reason
	}
	return out, nil
}

func (r *Rule) partition(vars templateVars, obj map[string]json.RawMessage, topic string) (int, *Reason) {
	switch {
	case r.cfg.PartitionKey != "":
		return streamr.PartitionForKey(r.cfg.Partitions, r.key.expand(vars)), nil
	case r.cfg.PartitionKeyField != "":
		raw, ok := obj[r.cfg.PartitionKeyField]
		if !ok {
			return 0, reject(reasoncode.PayloadFormatInvalid, "missing_partition_key", "topic %q: payload has no field %q for the partition key", topic, r.cfg.PartitionKeyField)
		}
		return PartitionForJSON(r.cfg.Partitions, raw), nil
	}
	return r.cfg.Partition, nil
}

// PartitionForJSON hashes a JSON value like the SDK hashes the JS value:
// numbers numerically, strings by their text, anything else by its JSON.
func PartitionForJSON(count int, raw json.RawMessage) int {
	var s string
	if json.Unmarshal(raw, &s) == nil {
		return streamr.PartitionForKey(count, s)
	}
	if n, err := strconv.ParseInt(string(raw), 10, 64); err == nil {
		return streamr.PartitionForNumber(count, n)
	}
	return streamr.PartitionForKey(count, string(raw))
}

func (r *Rule) timestamp(in Input, obj map[string]json.RawMessage) (int64, *Reason) {
	if f := r.cfg.TimestampField; f != "" {
		if raw, ok := obj[f]; ok {
			ts, err := parseTimestamp(raw)
			if err != nil {
				return 0, reject(reasoncode.PayloadFormatInvalid, "invalid_timestamp", "topic %q: field %q: %v", in.Topic, f, err)
			}
			return ts, nil
		}
	}
	if p := r.cfg.TimestampProperty; p != "" {
		if v, ok := in.UserProperties[p]; ok {
			ts, err := parseTimestampString(v)
			if err != nil {
				return 0, reject(reasoncode.PayloadFormatInvalid, "invalid_timestamp", "topic %q: user property %q: %v", in.Topic, p, err)
			}
			return ts, nil
		}
	}
	return 0, nil
}

// checkJSON checks that payload is one JSON object and returns its fields
// if the rule reads any; otherwise it only validates, which allocates
// nothing (most rules, and most of the cost of mapping a reading).
func (r *Rule) checkJSON(payload []byte) (map[string]json.RawMessage, error) {
	if r.cfg.PartitionKeyField != "" || r.cfg.TimestampField != "" {
		return parseObject(payload)
	}
	return nil, validObject(payload)
}

// validObject checks that payload is one JSON object without decoding it,
// which allocates nothing.
func validObject(payload []byte) error {
	if trimmed := bytes.TrimLeft(payload, " \t\r\n"); len(trimmed) > 0 && trimmed[0] == '{' && json.Valid(trimmed) {
		return nil
	}
	_, err := parseObject(payload) // says what is wrong
	return err
}

// parseObject checks that payload is one JSON object, as the Streamr node
// requires of MQTT content.
func parseObject(payload []byte) (map[string]json.RawMessage, error) {
	dec := json.NewDecoder(bytes.NewReader(payload))
	var obj map[string]json.RawMessage
	if err := dec.Decode(&obj); err != nil || obj == nil {
		return nil, errors.New("payload is not a JSON object")
	}
	// dec.More is false before a stray '}' or ']': only the end of the
	// payload may follow the object.
	if _, err := dec.Token(); err != io.EOF {
		return nil, errors.New("payload has data after its JSON object")
	}
	return obj, nil
}

func parseTimestamp(raw json.RawMessage) (int64, error) {
	var s string
	if json.Unmarshal(raw, &s) == nil {
		return parseTimestampString(s)
	}
	return parseTimestampString(string(raw))
}

// parseTimestampString reads a positive time in milliseconds or RFC 3339.
func parseTimestampString(s string) (int64, error) {
	ms, err := ParseTime(s)
	if err != nil {
		return 0, err
	}
	if ms <= 0 {
		return 0, fmt.Errorf("timestamp %q is not after the epoch", s)
	}
	return ms, nil
}

func parseFilter(f string) ([]string, error) {
	if f == "" {
		return nil, errors.New("empty topic filter")
	}
	levels := strings.Split(f, "/")
	for i, l := range levels {
		switch {
		case l == "#" && i != len(levels)-1:
			return nil, errors.New("'#' must be the last level")
		case l != "#" && l != "+" && strings.ContainsAny(l, "#+"):
			return nil, fmt.Errorf("level %q mixes a wildcard with text", l)
		}
	}
	return levels, nil
}

func countWildcards(filter []string) int {
	n := 0
	for _, l := range filter {
		if l == "+" || l == "#" {
			n++
		}
	}
	return n
}

// match reports whether topic levels match the filter and returns the
// captures: one level per "+", the rest of the topic for "#".
func (r *Rule) match(levels []string) ([]string, bool) {
	return r.matchTopic(strings.Join(levels, "/"), levels, nil)
}

// matchTopic is match for topic, split into levels, appending the
// captures to dst. The rest of the topic that "#" captures is a substring
// of topic, so matching allocates only if dst must grow.
func (r *Rule) matchTopic(topic string, levels []string, dst []string) ([]string, bool) {
	captures := dst
	offset := 0 // of levels[i] in topic
	for i, f := range r.filter {
		switch {
		case f == "#":
			// MQTT: "#" does not match topics starting with "$" at level 0.
			if i == 0 && len(levels) > 0 && strings.HasPrefix(levels[0], "$") {
				return nil, false
			}
			return append(captures, topic[min(offset, len(topic)):]), true
		case i >= len(levels):
			return nil, false
		case f == "+":
			if i == 0 && strings.HasPrefix(levels[0], "$") {
				return nil, false
			}
			captures = append(captures, levels[i])
		case f != levels[i]:
			return nil, false
		}
		offset += len(levels[i]) + 1
	}
	return captures, len(levels) == len(r.filter)
}

// template is a string with {address}, {topic} and {N} placeholders.
type template []templatePart

type templatePart struct {
	literal string
	ref     string // "address", "topic" or "" for a capture
	capture int    // 1-based capture index
}

type templateVars struct {
	address  string
	topic    string
	captures []string
}

func parseTemplate(s string, captures int) (template, error) {
	var t template
	for s != "" {
		open := strings.IndexByte(s, '{')
		if open < 0 {
			t = append(t, templatePart{literal: s})
			break
		}
		if open > 0 {
			t = append(t, templatePart{literal: s[:open]})
		}
		end := strings.IndexByte(s[open:], '}')
		if end < 0 {
			return nil, fmt.Errorf("unclosed '{' in %q", s)
		}
		name := s[open+1 : open+end]
		part, err := templateRef(name, captures)
		if err != nil {
			return nil, err
		}
		t = append(t, part)
		s = s[open+end+1:]
	}
	return t, nil
}

func templateRef(name string, captures int) (templatePart, error) {
	switch name {
	case "address", "topic":
		return templatePart{ref: name}, nil
	}
	n, err := strconv.Atoi(name)
	if err != nil {
		return templatePart{}, fmt.Errorf("unknown placeholder {%s}: want {address}, {topic} or {1}…{%d}", name, captures)
	}
	if n < 1 || n > captures {
		return templatePart{}, fmt.Errorf("placeholder {%d}: the topic filter has %d wildcard(s)", n, captures)
	}
	return templatePart{capture: n}, nil
}

// checkStreamID refuses a stream template that no reading can turn into
// a valid stream ID: a literal owner that is neither 0x<address> nor an
// ENS name, or a literal path character stream IDs do not allow. What
// placeholders decide is left to each reading.
func (t template) checkStreamID() error {
	const anyAddress = "0x0000000000000000000000000000000000000000"
	var owner strings.Builder
	ownerDone := false
	for _, p := range t {
		if p.literal == "" {
			if !ownerDone {
				return t.checkPathLiterals(anyAddress) // a placeholder is part of the owner
			}
			continue
		}
		if ownerDone {
			continue
		}
		before, _, found := strings.Cut(p.literal, "/")
		owner.WriteString(before)
		ownerDone = found
	}
	if !ownerDone {
		return errors.New("no '/' between owner and path")
	}
	if _, err := streamr.ParseStreamID(owner.String() + "/x"); err != nil {
		return fmt.Errorf("owner %q is neither 0x followed by 40 hex digits nor an ENS name", owner.String())
	}
	return t.checkPathLiterals(anyAddress)
}

// checkPathLiterals checks the literal characters after the first '/'
// against the stream ID path alphabet.
func (t template) checkPathLiterals(owner string) error {
	inPath := false
	for _, p := range t {
		lit := p.literal
		if !inPath {
			_, rest, found := strings.Cut(lit, "/")
			if !found {
				continue
			}
			inPath, lit = true, rest
		}
		if lit == "" {
			continue
		}
		if _, err := streamr.ParseStreamID(owner + "/" + lit); err != nil {
			return fmt.Errorf("the path part %q has a character stream IDs do not allow (A-Z a-z 0-9 - . / _)", lit)
		}
	}
	return nil
}

func (t template) expand(v templateVars) string {
	var b strings.Builder
	b.Grow(t.expandedLen(v)) // one allocation
	for _, p := range t {
		switch {
		case p.literal != "":
			b.WriteString(p.literal)
		case p.ref == "address":
			b.WriteString(v.address)
		case p.ref == "topic":
			b.WriteString(v.topic)
		default:
			b.WriteString(v.captures[p.capture-1])
		}
	}
	return b.String()
}

// expandedLen is the length of t.expand(v).
func (t template) expandedLen(v templateVars) int {
	n := 0
	for _, p := range t {
		switch {
		case p.literal != "":
			n += len(p.literal)
		case p.ref == "address":
			n += len(v.address)
		case p.ref == "topic":
			n += len(v.topic)
		default:
			n += len(v.captures[p.capture-1])
		}
	}
	return n
}
