package overlay

import (
	"context"
	"fmt"
	"time"

	"github.com/tributary-iot/tributary/streamr"
)

// Reasons a message is dropped, the "reason" label of the drops metric.
const (
	reasonSize         = "size"                  // encoded size over the limit
	reasonDecode       = "decode"                // not a StreamMessage protobuf
	reasonTopic        = "topic"                 // stream part differs from the topic's
	reasonPublisher    = "publisher"             // publisher not allowed by the Policy
	reasonUnreachable  = "registry_unreachable"  // the TimedPolicy could not decide (on_unreachable)
	reasonSignature    = "signature"             // signature does not verify
	reasonMalformed    = "malformed"             // structure or content invalid, signature fine
	reasonFuture       = "future"                // timestamp beyond MaxClockSkew
	reasonQueueFull    = "validation_queue_full" // pubsub dropped it before validation
	reasonShed         = "shed"                  // waited longer than shed_queue_wait for validation: left to gap fill
	reasonThrottled    = "validation_throttled"  // too many concurrent validations
	reasonSlowConsumer = "slow_consumer"         // the local subscriber did not keep up
	reasonSendQueue    = "send_queue_full"       // outbound queue to a peer full
)

// verdict is the outcome of validating one message.
type verdict int

const (
	accept verdict = iota
	reject         // invalid: drop and penalise the sender
	ignore         // drop without penalty: the fault may be ours (clock)
)

// validator checks messages for one stream partition. Its methods are
// safe for concurrent use.
type validator struct {
	part    streamr.StreamPartID
	limits  streamr.Limits
	maxSkew time.Duration
	policy  Policy
	now     func() time.Time
}

// check validates an encoded message and returns it decoded. On failure it
// returns the verdict, the drop reason and an error describing it.
func (v *validator) check(data []byte) (*streamr.StreamMessage, verdict, string, error) {
	m, reason, err := v.decode(data)
	if err != nil {
		return nil, reject, reason, err
	}
	return v.checkDecoded(m, len(data))
}

// decode checks an encoded message's size and decodes it; on failure it
// returns the drop reason and an error describing it.
func (v *validator) decode(data []byte) (*streamr.StreamMessage, string, error) {
	if len(data) > v.limits.MaxMessageBytes {
		return nil, reasonSize, fmt.Errorf("%w: %d bytes exceed the limit of %d", ErrInvalidMessage, len(data), v.limits.MaxMessageBytes)
	}
	m, err := streamr.Unmarshal(data)
	if err != nil {
		return nil, reasonDecode, fmt.Errorf("%w: %w", ErrInvalidMessage, err)
	}
	return m, "", nil
}

// checkDecoded is check of a decoded message of size encoded bytes.
func (v *validator) checkDecoded(m *streamr.StreamMessage, size int) (*streamr.StreamMessage, verdict, string, error) {
	if got := m.ID.StreamPart(); got != v.part {
		return nil, reject, reasonTopic, fmt.Errorf("%w: message of %s on the topic of %s", ErrInvalidMessage, got, v.part)
	}
	who := policySubject(m)
	timed, isTimed := v.policy.(TimedPolicy)
	if !isTimed && !v.policy.MayPublish(m.ID.StreamID, who) {
		return nil, reject, reasonPublisher, fmt.Errorf("%w: publisher %s may not publish on %s", ErrInvalidMessage, streamr.UserID(who), m.ID.StreamID)
	}
	if err := streamr.Validate(m, size, v.limits); err != nil {
		reason := reasonMalformed
		if streamr.VerifySignature(m) != nil { // only on the failure path: classifies the drop
			reason = reasonSignature
		}
		return nil, reject, reason, fmt.Errorf("%w: %w", ErrInvalidMessage, err)
	}
	if limit := v.now().Add(v.maxSkew).UnixMilli(); m.ID.Timestamp > limit {
		return nil, ignore, reasonFuture, fmt.Errorf("%w: timestamp %d is more than %s ahead of the local clock",
			ErrInvalidMessage, m.ID.Timestamp, v.maxSkew)
	}
	if isTimed {
		return v.checkTimed(timed, m, who)
	}
	return m, accept, "", nil
}

// checkTimed asks a TimedPolicy whether who (policySubject) may publish
// at the time of m, a message that is valid otherwise.
func (v *validator) checkTimed(p TimedPolicy, m *streamr.StreamMessage, who []byte) (*streamr.StreamMessage, verdict, string, error) {
	ok, err := p.MayPublishAt(context.Background(), m.ID.StreamID, who, time.UnixMilli(m.ID.Timestamp))
	switch {
	case err != nil:
		return nil, ignore, reasonUnreachable, fmt.Errorf("%w: publisher %s on %s: %w", ErrInvalidMessage, streamr.UserID(who), m.ID.StreamID, err)
	case !ok:
		// Ignored, not rejected: nodes' caches of the chain disagree for
		// up to their TTL after a change, and a relay is not the publisher.
		return nil, ignore, reasonPublisher, fmt.Errorf("%w: publisher %s may not publish on %s at %d", ErrInvalidMessage, streamr.UserID(who), m.ID.StreamID, m.ID.Timestamp)
	}
	return m, accept, "", nil
}

// policySubject is whose publish right admits m: a subscriber's group key
// request (issue 18) travels on the strength of the publisher it asks,
// which decides itself whether the subscriber may have its keys; every
// other message on its own publisher's.
func policySubject(m *streamr.StreamMessage) []byte {
	if r, ok := m.Body.(*streamr.GroupKeyRequest); ok {
		return r.RecipientID
	}
	return m.ID.PublisherID
}

// Validator checks messages that reach the gateway outside the overlay
// (from the Streamr Network) exactly as the overlay checks its own.
type Validator struct{ v validator }

// NewValidator returns the Validator of part under cfg's Policy, Limits
// and MaxClockSkew (their defaults where unset).
func NewValidator(part streamr.StreamPartID, cfg Config) *Validator {
	cfg.setDefaults()
	return &Validator{validator{part: part, limits: cfg.Limits, maxSkew: cfg.MaxClockSkew, policy: cfg.Policy, now: time.Now}}
}

// Check validates an encoded message and returns it decoded; on failure
// it returns the drop reason (as in the overlay's drops metric) and an
// error naming the problem.
func (v *Validator) Check(data []byte) (*streamr.StreamMessage, string, error) {
	m, _, reason, err := v.v.check(data)
	return m, reason, err
}
