package bridge

import "log/slog"

// componentLogger is what a constructor logs with (docs/conventions.md):
// the logger it was given, or one that discards if that is nil, tagged
// with the component the constructor names.
func componentLogger(l *slog.Logger, component string) *slog.Logger {
	if l == nil {
		l = slog.New(slog.DiscardHandler)
	}
	return l.With("component", component)
}
