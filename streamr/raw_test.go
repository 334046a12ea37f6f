package streamr

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"io"
	"reflect"
	"strconv"
	"strings"
	"testing"
)

func signedMessages(t testing.TB) []*StreamMessage {
	t.Helper()
	var out []*StreamMessage
	for _, s := range testSigners(t) {
		for _, m := range roundTripMessages(t) {
			if err := SignMessage(context.Background(), s, m); err != nil {
				t.Fatal(err)
			}
			out = append(out, m)
		}
	}
	return out
}

func TestRawRoundTrip(t *testing.T) {
	msgs := signedMessages(t)
	var buf bytes.Buffer
	w := NewRawWriter(&buf)
	for i, m := range msgs {
		if i%2 == 0 {
			if err := w.Write(m); err != nil {
				t.Fatal(err)
			}
			continue
		}
		b, err := m.Marshal()
		if err != nil {
			t.Fatal(err)
		}
		if err := w.WriteFrame(b); err != nil {
			t.Fatal(err)
		}
	}
	r := NewRawReader(&buf, 0)
	for i, want := range msgs {
		got, err := r.Read()
		if err != nil {
			t.Fatalf("message %d: %v", i, err)
		}
		if !reflect.DeepEqual(normalise(got), normalise(want)) {
			t.Fatalf("message %d differs after the round trip", i)
		}
	}
	if _, err := r.Read(); err != io.EOF {
		t.Fatalf("after the last frame: %v, want io.EOF", err)
	}
}

func TestRawReaderErrors(t *testing.T) {
	good, err := testMessage(t).Marshal()
	if err != nil {
		t.Fatal(err)
	}
	frame := func(body []byte) []byte {
		return append(binary.BigEndian.AppendUint32(nil, uint32(len(body))), body...)
	}
	first := frame(good)
	off := len(first)
	tests := []struct {
		name    string
		in      []byte
		max     int
		wantErr []string
		is      error
	}{
		{"empty input is a clean end", nil, 0, nil, io.EOF},
		{"truncated length prefix", append(bytes.Clone(first), 0, 0), 0,
			[]string{"raw frame 2 at byte " + strconv.Itoa(off), "after 2 of 4 bytes"}, io.ErrUnexpectedEOF},
		{"truncated body", append(bytes.Clone(first), frame(good)[:20]...), 0,
			[]string{"raw frame 2 at byte " + strconv.Itoa(off), "after 16 of " + strconv.Itoa(len(good)) + " bytes"}, io.ErrUnexpectedEOF},
		{"oversized frame", append(bytes.Clone(first), frame(make([]byte, 200))...), 150,
			[]string{"raw frame 2 at byte " + strconv.Itoa(off), "length 200"}, ErrFrameTooLarge},
		{"huge length prefix", append(bytes.Clone(first), 0xff, 0xff, 0xff, 0xff), 0,
			[]string{"length 4294967295"}, ErrFrameTooLarge},
		{"undecodable frame", append(bytes.Clone(first), frame([]byte{0xff, 0xff})...), 0,
			[]string{"raw frame 2 (ending at byte " + strconv.Itoa(off+6) + ")", "decode StreamMessage"}, nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := NewRawReader(bytes.NewReader(tt.in), tt.max)
			var err error
			for range 3 {
				if _, err = r.Read(); err != nil {
					break
				}
			}
			if tt.is != nil && !errors.Is(err, tt.is) {
				t.Fatalf("error %v, want %v", err, tt.is)
			}
			for _, want := range tt.wantErr {
				if err == nil || !strings.Contains(err.Error(), want) {
					t.Fatalf("error %v, want it to contain %q", err, want)
				}
			}
		})
	}
}

type failingWriter struct{}

func (failingWriter) Write([]byte) (int, error) { return 0, errors.New("disk full") }

func TestRawWriterError(t *testing.T) {
	err := NewRawWriter(failingWriter{}).Write(testMessage(t))
	if err == nil || !strings.Contains(err.Error(), "disk full") {
		t.Fatalf("Write = %v", err)
	}
}
