package overlay

import "errors"

// ErrInvalidMessage reports a message that fails the overlay's validation
// (size, structure, signature, publisher policy or timestamp).
var ErrInvalidMessage = errors.New("invalid message")

// ErrJoined reports a second Join of a stream partition already joined.
var ErrJoined = errors.New("stream partition already joined")
