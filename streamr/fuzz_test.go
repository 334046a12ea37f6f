package streamr

import (
	"bytes"
	"encoding/binary"
	"errors"
	"io"
	"reflect"
	"testing"
)

func FuzzUnmarshal(f *testing.F) {
	for _, m := range signedMessages(f) {
		b, err := m.Marshal()
		if err != nil {
			f.Fatal(err)
		}
		f.Add(b)
	}
	f.Add([]byte{})
	f.Fuzz(func(t *testing.T, b []byte) {
		m, err := Unmarshal(b)
		if err != nil {
			return
		}
		_ = Validate(m, len(b), Limits{})
		again, err := m.Marshal()
		if err != nil {
			t.Fatalf("re-encode a decoded message: %v", err)
		}
		if ref, err := pbMarshal(m); err != nil || !bytes.Equal(again, ref) {
			t.Fatalf("Marshal differs from proto.Marshal (%v)\n got %x\nwant %x", err, again, ref)
		}
		m2, err := Unmarshal(again)
		if err != nil {
			t.Fatalf("decode a re-encoded message: %v", err)
		}
		if !reflect.DeepEqual(normalise(m), normalise(m2)) {
			t.Fatalf("decode(encode(m)) != m\n%+v\n%+v", m, m2)
		}
	})
}

// FuzzUnmarshalHeader: the partial decoder never panics and agrees with
// the full one on every message the full one accepts.
func FuzzUnmarshalHeader(f *testing.F) {
	for _, m := range signedMessages(f) {
		b, err := m.Marshal()
		if err != nil {
			f.Fatal(err)
		}
		f.Add(b)
	}
	f.Add([]byte{0x0a, 0x00})
	f.Fuzz(func(t *testing.T, b []byte) {
		id, sig, herr := UnmarshalHeader(b)
		m, err := Unmarshal(b)
		if err != nil {
			return
		}
		if herr != nil {
			t.Fatalf("UnmarshalHeader fails on a message Unmarshal accepts: %v", herr)
		}
		if !reflect.DeepEqual(normaliseID(id), normaliseID(m.ID)) || !bytes.Equal(sig, m.Signature) {
			t.Fatalf("header %+v %x, message %+v %x", id, sig, m.ID, m.Signature)
		}
	})
}

// normaliseID makes empty and nil publisher IDs compare equal.
func normaliseID(id MessageID) MessageID {
	if len(id.PublisherID) == 0 {
		id.PublisherID = nil
	}
	return id
}

func FuzzRawReader(f *testing.F) {
	var buf bytes.Buffer
	w := NewRawWriter(&buf)
	for _, m := range signedMessages(f)[:4] {
		if err := w.Write(m); err != nil {
			f.Fatal(err)
		}
	}
	f.Add(buf.Bytes())
	f.Add(buf.Bytes()[:buf.Len()-7])
	f.Add(binary.BigEndian.AppendUint32(nil, 1<<20))
	f.Add([]byte{0, 0})
	f.Fuzz(func(t *testing.T, in []byte) {
		r := NewRawReader(bytes.NewReader(in), 1<<16)
		var out bytes.Buffer
		rw := NewRawWriter(&out)
		var frames int
		for {
			frame, err := r.ReadFrame()
			if errors.Is(err, io.EOF) {
				break
			}
			if err != nil {
				if frames == 0 && len(in) >= 4 && binary.BigEndian.Uint32(in) <= 1<<16 && len(in) >= 4+int(binary.BigEndian.Uint32(in)) {
					t.Fatalf("first frame is complete but reading it failed: %v", err)
				}
				return
			}
			frames++
			if err := rw.WriteFrame(frame); err != nil {
				t.Fatal(err)
			}
		}
		// Whole input read cleanly: writing the frames back reproduces it.
		if !bytes.Equal(out.Bytes(), in) {
			t.Fatalf("%d frames re-written as %x, read from %x", frames, out.Bytes(), in)
		}
	})
}

func FuzzParseStreamID(f *testing.F) {
	for _, s := range append(crossStreamIDs, "legacy", "/path", "0X00/x", "a.eth/#", "ÜBER.eth/x", "x.eth/\xff") {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		id, err := ParseStreamID(s)
		if err != nil {
			return
		}
		again, err := ParseStreamID(string(id))
		if err != nil {
			t.Fatalf("canonical form %q of %q does not parse: %v", id, s, err)
		}
		if again != id {
			t.Fatalf("canonical form %q of %q re-parses as %q", id, s, again)
		}
		if id.Domain()+id.Path() != string(id) {
			t.Fatalf("Domain %q + Path %q != %q", id.Domain(), id.Path(), id)
		}
	})
}

func FuzzParseStreamPartID(f *testing.F) {
	for _, s := range []string{"streamr.eth/foo#0", "Streamr.eth/Foo#99", "a.eth/x#1#2", "a.eth/x#07", "a.eth/x#", "a.eth/x#-0"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		p, err := ParseStreamPartID(s)
		if err != nil {
			return
		}
		if p.Partition < 0 || p.Partition >= MaxPartitions {
			t.Fatalf("partition %d accepted from %q", p.Partition, s)
		}
		again, err := ParseStreamPartID(p.String())
		if err != nil {
			t.Fatalf("String() %q of %q does not parse: %v", p, s, err)
		}
		if again != p {
			t.Fatalf("%q re-parses as %+v, want %+v", p, again, p)
		}
	})
}
