package broker

import (
	"fmt"
	"strings"
)

// Defaults of the topic limits. Real sensor topics are a few levels and well under 100 bytes;
// mochi's topic tree costs time quadratic in the depth of a topic or filter.
const (
	DefaultMaxTopicLength = 512 // bytes of a topic name or filter
	DefaultMaxTopicLevels = 32  // levels of a topic name or filter
)

// topicLimits bound topic names and filters.
type topicLimits struct {
	maxLength, maxLevels int
}

// checkTopic returns why a PUBLISH topic is refused, or "" if it is within the limits.
func (l topicLimits) checkTopic(topic string) (refusal, string) {
	return l.check("topic", topic)
}

// checkFilter is checkTopic for a subscription filter (without a $share prefix).
func (l topicLimits) checkFilter(filter string) (refusal, string) {
	return l.check("filter", filter)
}

func (l topicLimits) check(what, s string) (refusal, string) {
	if len(s) > l.maxLength {
		return refuseTopicLength, fmt.Sprintf("%s of %d bytes is longer than %d", what, len(s), l.maxLength)
	}
	if n := strings.Count(s, "/") + 1; n > l.maxLevels {
		return refuseTopicLevels, fmt.Sprintf("%s of %d levels is deeper than %d", what, n, l.maxLevels)
	}
	return 0, ""
}
