package storage

import (
	"bytes"
	"reflect"
	"testing"

	"github.com/tributary-iot/tributary/streamr"
)

// FuzzDecodeReading decodes stored reading values as a damaged database
// could hold them. A value that decodes re-encodes to one that decodes
// the same (a source length may have been written in a longer varint), and
// the decoded payload does not alias the value.
func FuzzDecodeReading(f *testing.F) {
	r := Reading{Source: "sensor-1", ReceivedAt: 1700000000000, BootNanos: 42, Timestamp: 1700000000001,
		ContentType: streamr.ContentJSON, Payload: []byte(`{"t":21.5}`)}
	f.Add(encodeReading(&r, 3))
	f.Add(encodeReading(&Reading{}, 0))
	f.Add(encodeReading(&Reading{Source: string(make([]byte, 300)), ContentType: streamr.ContentBinary}, 1<<31))
	f.Add([]byte{})
	f.Add(make([]byte, readingHeaderLen))
	f.Add(append(make([]byte, readingHeaderLen), 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x01))
	f.Add(append(make([]byte, readingHeaderLen), 0x85, 0x00, 'a', 'b', 'c', 'd', 'e'))
	f.Fuzz(func(t *testing.T, b []byte) {
		stored := bytes.Clone(b) // the fuzz input itself must stay as it is
		r, part, err := decodeReading(7, stored)
		if err != nil {
			return
		}
		if r.Seq != 7 {
			t.Fatalf("Seq %d, want the key's 7", r.Seq)
		}
		if len(r.Payload) > 0 {
			orig := bytes.Clone(r.Payload)
			clear(stored)
			if !bytes.Equal(r.Payload, orig) {
				t.Fatal("decoded payload aliases the stored value")
			}
		}
		checkRoundTrip(t, r, part)
	})
}

// FuzzReadingRoundTrip encodes readings of any field values: each decodes
// to itself, byte for byte.
func FuzzReadingRoundTrip(f *testing.F) {
	f.Add(uint32(3), "sensor-1", int64(1700000000000), int64(42), int64(0), byte(streamr.ContentJSON), []byte(`{}`))
	f.Add(uint32(0), "", int64(-1), int64(-1), int64(-1), byte(0xff), []byte(nil))
	f.Fuzz(func(t *testing.T, part uint32, source string, received, boot, ts int64, ctype byte, payload []byte) {
		in := Reading{Seq: 9, Source: source, ReceivedAt: received, BootNanos: boot, Timestamp: ts,
			ContentType: streamr.ContentType(ctype &^ encryptFlag), Encrypt: ctype&encryptFlag != 0, Payload: payload}
		checkRoundTrip(t, in, part)
	})
}

// FuzzDecodeLogValue decodes signed-log values: one that decodes
// re-encodes to the same bytes.
func FuzzDecodeLogValue(f *testing.F) {
	f.Add(encodeLogValue(5, 1<<40, []byte("message")))
	f.Add(encodeLogValue(0, 0, nil))
	f.Add([]byte{1, 2, 3})
	f.Fuzz(func(t *testing.T, b []byte) {
		part, seq, encoded, err := decodeLogValue(11, b)
		if err != nil {
			if len(b) >= logHeaderLen {
				t.Fatalf("value of %d bytes refused: %v", len(b), err)
			}
			return
		}
		if again := encodeLogValue(part, seq, encoded); !bytes.Equal(again, b) {
			t.Fatalf("re-encoded %x, want %x", again, b)
		}
	})
}

// checkRoundTrip expects r and part back from decoding their encoding.
func checkRoundTrip(t *testing.T, r Reading, part uint32) {
	t.Helper()
	out, gotPart, err := decodeReading(r.Seq, encodeReading(&r, part))
	if err != nil {
		t.Fatalf("encoded reading does not decode: %v", err)
	}
	if gotPart != part || !reflect.DeepEqual(normalize(out), normalize(r)) {
		t.Fatalf("round trip: %+v part %d, want %+v part %d", out, gotPart, r, part)
	}
}

// normalize makes an empty payload compare equal to a nil one.
func normalize(r Reading) Reading {
	if len(r.Payload) == 0 {
		r.Payload = nil
	}
	return r
}
