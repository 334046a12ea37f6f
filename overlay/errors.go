package overlay

import "errors"

// ErrNoPeers reports a publish on a topic with no connected member: the
// message was not forwarded and should stay queued.
var ErrNoPeers = errors.New("no peers in the stream partition's overlay")

// ErrInvalidMessage reports a message that fails the overlay's validation
// (size, structure, signature, publisher policy or timestamp).
var ErrInvalidMessage = errors.New("invalid message")

// ErrJoined reports a second Join of a stream partition already joined.
var ErrJoined = errors.New("stream partition already joined")
