package broker

import (
	"context"

	"github.com/tributary-iot/tributary/reasoncode"
)

// Message is one PUBLISH received from a network client, handed to the Handler before the
// broker acknowledges it.
type Message struct {
	ClientID        string
	Username        string // empty when the broker runs without a users file
	Topic           string // after topic-alias resolution (MQTT 5)
	Payload         []byte // owned by the broker; the Handler may keep it but must not modify it
	QoS             byte
	Retain          bool
	ProtocolVersion byte // 4 = MQTT 3.1.1, 5 = MQTT 5

	// MQTT 5 properties; zero for MQTT 3.1.1.
	UserProperties    []UserProperty
	ContentType       string
	PayloadFormatUTF8 bool // payload format indicator was 1 (UTF-8 text)
}

// UserProperty is an MQTT 5 user property (a key/value pair; keys may repeat).
type UserProperty struct {
	Key, Value string
}

// ReasonCode is the Handler's verdict on a message, using the MQTT 5 PUBACK reason codes; the
// type is shared with the bridge, which decides them.
type ReasonCode = reasoncode.Code

// Reason codes a Handler may return. Anything else is treated as UnspecifiedError.
const (
	Success                     = reasoncode.Success
	UnspecifiedError            = reasoncode.UnspecifiedError
	ImplementationSpecificError = reasoncode.ImplementationSpecificError
	NotAuthorized               = reasoncode.NotAuthorized
	TopicNameInvalid            = reasoncode.TopicNameInvalid
	QuotaExceeded               = reasoncode.QuotaExceeded
	PayloadFormatInvalid        = reasoncode.PayloadFormatInvalid
)

// reasonCodes lists every ReasonCode the broker emits, in a stable order (metrics, Stats).
var reasonCodes = [...]ReasonCode{
	Success, UnspecifiedError, ImplementationSpecificError, NotAuthorized,
	TopicNameInvalid, QuotaExceeded, PayloadFormatInvalid,
}

// knownCode reports whether c is one of the constants above.
func knownCode(c ReasonCode) bool {
	for _, k := range reasonCodes {
		if c == k {
			return true
		}
	}
	return false
}

// Verdict is a Handler's answer to one PUBLISH.
type Verdict struct {
	// Code is Success, or why the message is refused (then Wait is ignored).
	Code ReasonCode
	// Wait, for an accepted QoS 1 or 2 message, blocks until the message is durable and returns
	// nil, or returns why it never will be. nil means the message is durable already. Wait must
	// return soon after ctx is cancelled (the client disconnected or the broker is shutting down).
	// It is called at most once, never for QoS 0 messages and never for refused ones.
	Wait func(ctx context.Context) error
	// Detail says why a refused message was refused, for the broker's log line (the only one
	// for a refusal: a Handler does not log its own refusals). It must not contain payload bytes.
	Detail string
}

// Handler decides on every PUBLISH from a network client, QoS 0 included. HandlePublish runs on
// the client's connection goroutine, so it must return quickly: map, admit and enqueue the
// message, and leave waiting for durability to Verdict.Wait. A refused message (Code other than
// Success) is neither delivered to subscribers nor retained.
//
// An accepted message is acknowledged, delivered to local subscribers and retained if asked only
// once it is durable:
//   - QoS 1: the broker keeps reading the client's next PUBLISHes while Wait runs on a
//     per-client goroutine; PUBACKs are written in publish order (MQTT-4.6.0-2), each before
//     its message goes to local subscribers (as mochi's own QoS 1 path does), so a PUBACK does
//     not wait for them; a retained message is retained before its PUBACK. At most the
//     broker's ReceiveMaximum QoS 1 messages per client are outstanding; beyond that the broker
//     stops reading from the client until the oldest is acknowledged.
//   - QoS 2: Wait runs on the connection goroutine before the PUBREC (mochi runs the
//     PUBREC/PUBREL exchange), so QoS 2 messages of one client are not pipelined.
//   - QoS 0: Wait is not called; the message is delivered at once.
//
// Order is kept among one client's messages of the same QoS, as MQTT requires (MQTT-4.6.0-2,
// 4.6.0-6); a QoS 0 or 2 message may overtake QoS 1 messages still waiting for durability.
//
// If Wait fails, the message is not acknowledged and the client's connection is closed, so
// that the client sends it again after reconnecting: an acknowledged message is never lost,
// but one that failed may be handed to the Handler twice.
//
// ctx is cancelled when the broker shuts down. A refusal given after ctx is cancelled is not
// sent to the client: its connection is closed without an ack so that it publishes again after
// reconnecting.
type Handler interface {
	HandlePublish(ctx context.Context, m *Message) Verdict
}

// HandlerFunc adapts a function to the Handler interface.
type HandlerFunc func(ctx context.Context, m *Message) Verdict

// HandlePublish calls f(ctx, m).
func (f HandlerFunc) HandlePublish(ctx context.Context, m *Message) Verdict { return f(ctx, m) }
