package streamr

import (
	"bytes"
	"encoding/binary"
	"errors"
	"io"
	"reflect"
	"testing"

	"google.golang.org/protobuf/encoding/protowire"
)

func FuzzUnmarshal(f *testing.F) {
	addSignedSeeds(f)
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

// addSignedSeeds adds the encodings of signedMessages to f's corpus.
func addSignedSeeds(f *testing.F) {
	for _, m := range signedMessages(f) {
		b, err := m.Marshal()
		if err != nil {
			f.Fatal(err)
		}
		f.Add(b)
	}
}

// FuzzUnmarshalHeader: the partial decoder never panics and agrees with
// the full one on every message the full one accepts.
func FuzzUnmarshalHeader(f *testing.F) {
	addSignedSeeds(f)
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

// FuzzUnmarshalMatchesProto: on arbitrary bytes, Unmarshal and
// UnmarshalHeader accept and reject what proto.Unmarshal of the generated
// pb types does (referenceUnmarshal*) and return the same fields, nil and
// empty alike, without aliasing the input.
func FuzzUnmarshalMatchesProto(f *testing.F) {
	addSignedSeeds(f)
	for _, b := range wireOddities() {
		f.Add(b)
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		in := bytes.Clone(b)
		got, err := Unmarshal(in)
		want, wantErr := referenceUnmarshal(b)
		if (err == nil) != (wantErr == nil) {
			t.Fatalf("Unmarshal error %v, proto.Unmarshal error %v", err, wantErr)
		}
		if !reflect.DeepEqual(got, want) {
			t.Fatalf("Unmarshal\n %#v\n %#v\nproto.Unmarshal\n %#v\n %#v", got, bodyOf(got), want, bodyOf(want))
		}
		id, sig, err := UnmarshalHeader(in)
		wantID, wantSig, wantErr := referenceUnmarshalHeader(b)
		if (err == nil) != (wantErr == nil) {
			t.Fatalf("UnmarshalHeader error %v, proto.Unmarshal error %v", err, wantErr)
		}
		if !reflect.DeepEqual(id, wantID) || !reflect.DeepEqual(sig, wantSig) {
			t.Fatalf("UnmarshalHeader %#v %x, proto.Unmarshal %#v %x", id, sig, wantID, wantSig)
		}
		for i := range in { // the decoded values are copies
			in[i] ^= 0xff
		}
		if !reflect.DeepEqual(got, want) || !reflect.DeepEqual(id, wantID) || !bytes.Equal(sig, wantSig) {
			t.Fatal("decoded values alias the input")
		}
	})
}

func bodyOf(m *StreamMessage) Body {
	if m == nil {
		return nil
	}
	return m.Body
}

// wireOddities are encodings proto.Unmarshal has rules for beyond the
// fields themselves: repeats, merges, oneof switches, unknown fields and
// groups, wrong wire types, bad field numbers.
func wireOddities() [][]byte {
	id := msg(1, str(1, "s"), vint(2, 3), vint(3, 1<<40), vint(4, -1), str(5, "pub"), str(6, "chain"))
	content := msg(5, str(1, "c"), vint(2, 1), vint(3, 1), str(4, ""), msg(5, str(1, "k"), str(2, "d")))
	return [][]byte{
		cat(id, content),
		cat(id, msg(1, vint(2, 9)), content, msg(5, vint(2, 0))),                      // merges, last wins
		cat(id, content, msg(6, str(1, "r")), msg(5)),                                 // oneof: a fresh content
		cat(id, msg(7, str(1, "r"), msg(3, str(1, "k")), msg(3)), msg(7, vint(4, 1))), // response merges, keys append
		cat(id, msg(6, str(4, "a"), str(4, "b"), str(2, "")), content, msg(6)),
		cat(id, msg(2, vint(1, 5)), msg(2, vint(2, 6)), str(3, "sig"), str(3, ""), vint(4, 1)), // no body
		cat(id, vint(5, 1), content),                                                           // body field as a varint: unknown
		cat(id, content, []byte{0x0b, 0x10, 0x01, 0x0c}),                                       // unknown group 1
		cat(id, content, []byte{0x0b, 0x14}),                                                   // group ended by another number
		cat(id, content, []byte{0x0c}),                                                         // stray end group
		cat(id, content, []byte{0x0f, 0x00}),                                                   // reserved wire type
		cat(id, content, []byte{0x80, 0x80, 0x80, 0x80, 0x10, 0x00}),                           // field number 2^29+…
		cat(id, content, []byte{0x00}),                                                         // field number 0
		cat(id, content, []byte{0x1d, 1, 2, 3, 4, 0x21, 1, 2, 3, 4, 5, 6, 7, 8}),               // fixed32, fixed64 unknown
		cat(msg(1, str(6, "\xff")), content),                                                   // invalid UTF-8
		cat(id, msg(5, msg(5, str(1, "\xc3")))),
	}
}

func cat(parts ...[]byte) []byte { return bytes.Join(parts, nil) }

func msg(num protowire.Number, fields ...[]byte) []byte {
	return protowire.AppendBytes(protowire.AppendTag(nil, num, protowire.BytesType), cat(fields...))
}

func str(num protowire.Number, s string) []byte {
	return protowire.AppendString(protowire.AppendTag(nil, num, protowire.BytesType), s)
}

func vint(num protowire.Number, v int64) []byte {
	return protowire.AppendVarint(protowire.AppendTag(nil, num, protowire.VarintType), uint64(v))
}
