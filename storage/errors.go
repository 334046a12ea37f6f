package storage

import "errors"

var (
	// ErrQuotaExceeded is returned by Append when accepting the reading would
	// grow the database beyond Options.QuotaBytes (90% of it for non-durable
	// readings). Nothing already stored is deleted to make room.
	ErrQuotaExceeded = errors.New("storage quota exceeded")

	// ErrDiskFull is returned by Append when the file system holding the
	// database has less free space than Options.MinFreeBytes. The margin is
	// kept so Badger can still flush, compact and commit signed messages.
	ErrDiskFull = errors.New("storage disk nearly full")

	// ErrTooLarge is returned by Append for a reading whose encoded size
	// exceeds MaxReadingBytes.
	ErrTooLarge = errors.New("reading too large")

	// ErrClosed is returned by operations on a closed Store, and by Append
	// when Run has stopped.
	ErrClosed = errors.New("storage closed")

	// ErrNotPending is returned by CommitSigned when a message refers to a
	// reading that is not pending (never stored, or already signed), so a
	// reading can never be signed and stored twice.
	ErrNotPending = errors.New("reading not pending")

	// ErrLocked is returned by Open when another open Store, in this
	// process or another, holds the directory: Badger admits one at a time.
	// For a gateway's own directory it means the gateway is running.
	ErrLocked = errors.New("storage directory in use by another process")
)
