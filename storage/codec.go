package storage

import (
	"encoding/binary"
	"fmt"

	"github.com/tributary-iot/tributary/streamr"
)

// Reading is an accepted MQTT reading that is not yet signed.
type Reading struct {
	Seq         uint64               // assigned by Append: global ingest order, strictly increasing, never reused
	Part        streamr.StreamPartID // stream part the rule mapped the topic to
	Source      string               // MQTT client ID; chains are per (Part, Source)
	ReceivedAt  int64                // wall clock at receipt, ms since the Unix epoch
	BootNanos   int64                // CLOCK_BOOTTIME at receipt, ns; dates readings held while the clock was unsynced
	Timestamp   int64                // explicit timestamp from the payload, ms; 0 = none
	ContentType streamr.ContentType  // how Payload is to be read
	Encrypt     bool                 // the rule wants the message end-to-end encrypted
	Payload     []byte               // message content
}

// encryptFlag marks Reading.Encrypt in the content type byte (content
// types are 0 and 1), so readings stored before it existed read as plain.
const encryptFlag = 0x80

// readingHeaderLen is the fixed part of an encoded reading:
// part u32 ‖ receivedAt i64 ‖ bootNanos i64 ‖ timestamp i64 ‖ contentType u8 (bit 7: Encrypt).
const readingHeaderLen = 4 + 8 + 8 + 8 + 1

// encodeReading lays out r (minus Seq, which is the key, and Part, given as
// its number) as the fixed header, uvarint source length, source, payload.
func encodeReading(r *Reading, part uint32) []byte {
	b := make([]byte, 0, readingHeaderLen+binary.MaxVarintLen64+len(r.Source)+len(r.Payload))
	b = binary.BigEndian.AppendUint32(b, part)
	b = binary.BigEndian.AppendUint64(b, uint64(r.ReceivedAt))
	b = binary.BigEndian.AppendUint64(b, uint64(r.BootNanos))
	b = binary.BigEndian.AppendUint64(b, uint64(r.Timestamp))
	ct := byte(r.ContentType)
	if r.Encrypt {
		ct |= encryptFlag
	}
	b = append(b, ct)
	b = binary.AppendUvarint(b, uint64(len(r.Source)))
	b = append(b, r.Source...)
	return append(b, r.Payload...)
}

// decodeReading parses a value written by encodeReading and returns the
// part number for the caller to resolve. Payload is copied out of b.
func decodeReading(seq uint64, b []byte) (Reading, uint32, error) {
	r, part, source, payload, err := decodeReadingView(seq, b)
	if err != nil {
		return Reading{}, 0, err
	}
	r.Source = string(source)
	r.Payload = append([]byte(nil), payload...)
	return r, part, nil
}

// decodeReadingView is decodeReading without Source and Payload, which it
// returns as sub-slices of b.
func decodeReadingView(seq uint64, b []byte) (r Reading, part uint32, source, payload []byte, err error) {
	if len(b) < readingHeaderLen {
		return Reading{}, 0, nil, nil, fmt.Errorf("reading %d: value of %d bytes is shorter than its %d-byte header", seq, len(b), readingHeaderLen)
	}
	r = Reading{
		Seq:         seq,
		ReceivedAt:  int64(binary.BigEndian.Uint64(b[4:])),
		BootNanos:   int64(binary.BigEndian.Uint64(b[12:])),
		Timestamp:   int64(binary.BigEndian.Uint64(b[20:])),
		ContentType: streamr.ContentType(b[28] &^ encryptFlag),
		Encrypt:     b[28]&encryptFlag != 0,
	}
	part = binary.BigEndian.Uint32(b)
	rest := b[readingHeaderLen:]
	n, w := binary.Uvarint(rest)
	if w <= 0 || n > uint64(len(rest)-w) {
		return Reading{}, 0, nil, nil, fmt.Errorf("reading %d: bad source length", seq)
	}
	rest = rest[w:]
	return r, part, rest[:n], rest[n:], nil
}

// logHeaderLen is the prefix of a log value: part u32 ‖ reading seq u64.
const logHeaderLen = 4 + 8

func encodeLogValue(part uint32, readingSeq uint64, encoded []byte) []byte {
	b := make([]byte, 0, logHeaderLen+len(encoded))
	b = binary.BigEndian.AppendUint32(b, part)
	b = binary.BigEndian.AppendUint64(b, readingSeq)
	return append(b, encoded...)
}

func decodeLogValue(pos uint64, b []byte) (part uint32, readingSeq uint64, encoded []byte, err error) {
	if len(b) < logHeaderLen {
		return 0, 0, nil, fmt.Errorf("log entry %d: value of %d bytes is shorter than its %d-byte header", pos, len(b), logHeaderLen)
	}
	return binary.BigEndian.Uint32(b), binary.BigEndian.Uint64(b[4:]), b[logHeaderLen:], nil
}
