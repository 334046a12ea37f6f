package broker

import (
	"context"
	"fmt"
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

// ReasonCode is the Handler's verdict on a message, using the MQTT 5 PUBACK reason codes.
type ReasonCode byte

// Reason codes a Handler may return. Anything else is treated as UnspecifiedError.
const (
	Success                     ReasonCode = 0x00
	UnspecifiedError            ReasonCode = 0x80
	ImplementationSpecificError ReasonCode = 0x83
	NotAuthorized               ReasonCode = 0x87
	TopicNameInvalid            ReasonCode = 0x90
	QuotaExceeded               ReasonCode = 0x97
	PayloadFormatInvalid        ReasonCode = 0x99
)

// reasonCodes lists every ReasonCode the broker emits, in a stable order (metrics, Stats).
var reasonCodes = [...]ReasonCode{
	Success, UnspecifiedError, ImplementationSpecificError, NotAuthorized,
	TopicNameInvalid, QuotaExceeded, PayloadFormatInvalid,
}

// String returns a snake_case name, used in logs and as the metrics label.
func (c ReasonCode) String() string {
	switch c {
	case Success:
		return "success"
	case UnspecifiedError:
		return "unspecified_error"
	case ImplementationSpecificError:
		return "implementation_specific_error"
	case NotAuthorized:
		return "not_authorized"
	case TopicNameInvalid:
		return "topic_name_invalid"
	case QuotaExceeded:
		return "quota_exceeded"
	case PayloadFormatInvalid:
		return "payload_format_invalid"
	default:
		return fmt.Sprintf("reason_0x%02x", byte(c))
	}
}

// known reports whether c is one of the constants above.
func (c ReasonCode) known() bool {
	for _, k := range reasonCodes {
		if c == k {
			return true
		}
	}
	return false
}

// Handler decides on every PUBLISH from a network client. It runs on that client's connection
// goroutine, so while it runs the broker reads nothing more from that client. The PUBACK (QoS 1)
// or PUBREC (QoS 2) is written only after HandlePublish returns Success; any other code rejects the
// message: it is neither delivered to subscribers nor retained. QoS 0 messages are handed over too.
//
// ctx is cancelled when the broker shuts down; a Handler blocked on storage must return then.
// A non-Success answer given after ctx is cancelled is not sent to the client: its connection is
// closed without an ack so that it publishes again after reconnecting.
type Handler interface {
	HandlePublish(ctx context.Context, m *Message) ReasonCode
}

// HandlerFunc adapts a function to the Handler interface.
type HandlerFunc func(ctx context.Context, m *Message) ReasonCode

// HandlePublish calls f(ctx, m).
func (f HandlerFunc) HandlePublish(ctx context.Context, m *Message) ReasonCode { return f(ctx, m) }
