// Package reasoncode holds the MQTT 5 reason codes that a publish is
// answered with: the bridge decides them, the broker sends them (as PUBACK
// reason codes to MQTT 5 clients) and counts them. It imports nothing, so
// both share the one type without either importing the other.
package reasoncode

import "fmt"

// Code is an MQTT 5 PUBACK reason code.
type Code byte

// The codes the gateway answers with. A broker.Handler returning any other
// is treated as UnspecifiedError.
const (
	Success                     Code = 0x00
	UnspecifiedError            Code = 0x80
	ImplementationSpecificError Code = 0x83
	NotAuthorized               Code = 0x87
	TopicNameInvalid            Code = 0x90
	QuotaExceeded               Code = 0x97
	PayloadFormatInvalid        Code = 0x99
)

// String returns a snake_case name, used in logs and as the metrics label.
func (c Code) String() string {
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
