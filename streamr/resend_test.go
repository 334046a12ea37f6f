package streamr

import "testing"

// TestResendQueryMatches pins the one meaning of each query field, shared
// by the HTTP API, the overlay's resend protocol and gap filling: in
// particular a zero To is no upper bound, the same as MaxRef.
func TestResendQueryMatches(t *testing.T) {
	pub, other := []byte{1, 2, 3}, []byte{4, 5, 6}
	id := func(ts int64, seq int32, chain string) *MessageID {
		return &MessageID{StreamID: "s", Timestamp: ts, SequenceNumber: seq, PublisherID: pub, MsgChainID: chain}
	}
	ref := func(ts int64, seq int32) MessageRef { return MessageRef{Timestamp: ts, SequenceNumber: seq} }
	tests := []struct {
		name string
		q    ResendQuery
		id   *MessageID
		want bool
	}{
		{"from with zero To: no upper bound", ResendQuery{From: ref(10, 0)}, id(1<<62, 5, "c"), true},
		{"from with MaxRef", ResendQuery{From: ref(10, 0), To: MaxRef}, id(1<<62, 5, "c"), true},
		{"from is inclusive", ResendQuery{From: ref(10, 1)}, id(10, 1, "c"), true},
		{"before from", ResendQuery{From: ref(10, 1)}, id(10, 0, "c"), false},
		{"range upper bound is inclusive", ResendQuery{From: ref(10, 0), To: ref(20, 2)}, id(20, 2, "c"), true},
		{"after range", ResendQuery{From: ref(10, 0), To: ref(20, 2)}, id(20, 3, "c"), false},
		{"last ignores bounds", ResendQuery{Last: 1, From: ref(10, 0), To: ref(20, 0)}, id(5, 0, "c"), true},
		{"publisher filter", ResendQuery{Publisher: other}, id(10, 0, "c"), false},
		{"publisher filter matches", ResendQuery{Publisher: pub}, id(10, 0, "c"), true},
		{"chain filter", ResendQuery{Last: 3, ChainID: "d"}, id(10, 0, "c"), false},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			if got := tc.q.Matches(tc.id); got != tc.want {
				t.Errorf("%+v.Matches(%v) = %v, want %v", tc.q, tc.id.Ref(), got, tc.want)
			}
		})
	}
}

func TestResendQueryKind(t *testing.T) {
	for _, tc := range []struct {
		q     ResendQuery
		from  bool
		upper MessageRef
	}{
		{ResendQuery{}, true, MaxRef},
		{ResendQuery{To: MaxRef}, true, MaxRef},
		{ResendQuery{To: MessageRef{Timestamp: 5}}, false, MessageRef{Timestamp: 5}},
		{ResendQuery{Last: 2, To: MessageRef{Timestamp: 5}}, false, MaxRef},
	} {
		if got := tc.q.IsFrom(); got != tc.from {
			t.Errorf("%+v.IsFrom() = %v, want %v", tc.q, got, tc.from)
		}
		if got := tc.q.UpperBound(); got != tc.upper {
			t.Errorf("%+v.UpperBound() = %v, want %v", tc.q, got, tc.upper)
		}
	}
}
