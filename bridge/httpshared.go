package bridge

import (
	"log/slog"
	"net/http"
	"time"
)

// WriteJSONError answers {"error": msg} with status, as every refusal of
// the HTTP API is answered; the app interfaces answer theirs the same way.
func WriteJSONError(w http.ResponseWriter, status int, msg string) { writeJSONError(w, status, msg) }

// LogLimiter logs each kind of warning at most once per interval, with the
// count it held back; other HTTP-facing packages share it.
type LogLimiter = logLimiter

// NewLogLimiter returns a LogLimiter writing to log.
func NewLogLimiter(log *slog.Logger, interval time.Duration) *LogLimiter {
	return newLogLimiter(log, interval)
}
