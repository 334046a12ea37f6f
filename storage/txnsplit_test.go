package storage

import (
	"context"
	"errors"
	"fmt"
	"testing"
	"time"

	badger "github.com/dgraph-io/badger/v4"

	"github.com/tributary-iot/tributary/streamr"
)

// tinyMemTable makes Badger's transaction limit about 9.8 kB or 102
// writes, so that batches of a few hundred entries must be split.
const tinyMemTable = 64 << 10

func tinyStore(t *testing.T, dir string) *Store {
	t.Helper()
	return running(t, Options{Dir: dir, MinFreeBytes: -1, memTableSize: tinyMemTable})
}

// TestBatchesSplitAcrossTransactions runs every writer whose batch
// depends on its input with batches many times Badger's transaction
// limit, and checks that all of each batch is stored.
func TestBatchesSplitAcrossTransactions(t *testing.T) {
	tests := []struct {
		name string
		run  func(t *testing.T, s *Store)
	}{
		{"CommitSigned 256 readings on 16 chains", func(t *testing.T, s *Store) {
			pend := appendSources(t, s, 256, 16)
			msgs, states := childSign(s, pend, map[string]*streamr.Chain{})
			if err := s.CommitSigned(context.Background(), msgs, states); err != nil {
				t.Fatal(err)
			}
			assertStored(t, s, 0, 256)
			assertChains(t, s, states)
		}},
		{"StoreReceived 600 messages and positions", func(t *testing.T, s *Store) {
			msgs, states := received(t, 600)
			for round, want := range []int{600, 0} { // the second time all are duplicates
				n, err := s.StoreReceived(context.Background(), msgs, states)
				if err != nil || n != want {
					t.Fatalf("round %d: stored %d, %v; want %d", round, n, err, want)
				}
			}
			assertStored(t, s, 0, 600)
			assertChains(t, s, states)
		}},
		{"SaveChainStates 2000 states", func(t *testing.T, s *Store) {
			_, states := received(t, 2000)
			if err := s.SaveChainStates(context.Background(), states); err != nil {
				t.Fatal(err)
			}
			assertChains(t, s, states)
		}},
		{"SetCursors 2000 cursors", func(t *testing.T, s *Store) {
			cursors := map[string]uint64{}
			for i := range 2000 {
				cursors[fmt.Sprintf("forwarder/%d", i)] = uint64(i + 1)
			}
			if err := s.SetCursors(context.Background(), cursors); err != nil {
				t.Fatal(err)
			}
			for name, want := range cursors {
				if got, err := s.Cursor(name); err != nil || got != want {
					t.Fatalf("cursor %q = %d, %v; want %d", name, got, err, want)
				}
			}
		}},
		{"CommitSessions 2000 records", func(t *testing.T, s *Store) {
			writes := map[string][]byte{}
			for i := range 2000 {
				writes[fmt.Sprintf("q/client\x00%04x", i)] = []byte(`{"topic":"sensors/temp","payload":"21.5"}`)
			}
			if err := s.CommitSessions(context.Background(), writes); err != nil {
				t.Fatal(err)
			}
			n := 0
			if err := s.ScanSessions("q/", func(string, []byte) error { n++; return nil }); err != nil || n != 2000 {
				t.Fatalf("scanned %d records, %v; want 2000", n, err)
			}
		}},
		{"retention of 600 messages", func(t *testing.T, s *Store) {
			msgs, _ := received(t, 600)
			if _, err := s.StoreReceived(context.Background(), msgs, nil); err != nil {
				t.Fatal(err)
			}
			s.opts.Retention = time.Hour // messages are from 2023
			n, err := s.applyRetention(context.Background(), time.Now())
			if err != nil || n != 600 {
				t.Fatalf("retention deleted %d, %v; want 600", n, err)
			}
			assertStored(t, s, 0, 0)
			if got := s.signedTotal(); got != 0 {
				t.Fatalf("signed bytes %d after deleting every message, want 0", got)
			}
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) { tt.run(t, tinyStore(t, t.TempDir())) })
	}
}

// TestDeferredChainsSplitAtClose presigns readings of 1,000 chains twice
// (the second states are deferred) and checks that Close stores them all.
func TestDeferredChainsSplitAtClose(t *testing.T) {
	dir := t.TempDir()
	s, err := Open(Options{Dir: dir, MinFreeBytes: -1, memTableSize: tinyMemTable})
	if err != nil {
		t.Fatal(err)
	}
	p := &testPresigner{s: s, chains: map[string]*streamr.Chain{}}
	s.SetPresigner(p)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); _ = s.Run(ctx) }()
	appendSources(t, s, 2000, 1000)
	cancel()
	<-done
	if n := len(s.chains.unsaved); n == 0 {
		t.Log("no chain state was deferred (the presigned commits took over a second)")
	}
	if err := s.Close(); err != nil {
		t.Fatalf("close with deferred chain states: %v", err)
	}
	want := map[string]streamr.ChainState{}
	for k, c := range p.chains {
		want[k] = c.State()
	}
	if len(want) != 1000 {
		t.Fatalf("presigner holds %d chains, want 1000", len(want))
	}
	assertChains(t, tinyStore(t, dir), want)
}

// TestCommitSignedSplitKeepsChains fails a split CommitSigned after its
// first transactions (a reading that is not pending) and checks what a
// crash there would leave: the stored chain states match the stored
// messages, the other readings are pending, and signing them from the
// stored states continues every chain without a gap or a fork.
func TestCommitSignedSplitKeepsChains(t *testing.T) {
	s := tinyStore(t, t.TempDir())
	pend := appendSources(t, s, 200, 3)
	msgs, states := childSign(s, pend, map[string]*streamr.Chain{})
	msgs[150].ReadingSeq = 1 << 40 // not pending
	err := s.CommitSigned(context.Background(), msgs, states)
	if !errors.Is(err, ErrNotPending) {
		t.Fatalf("commit with reading %d not pending: %v, want ErrNotPending", msgs[150].ReadingSeq, err)
	}
	logged, err := s.After(0, 1000)
	if err != nil {
		t.Fatal(err)
	}
	if len(logged) == 0 || len(logged) > 150 {
		t.Fatalf("%d messages stored before the failing one (150): the batch was not split", len(logged))
	}
	last := map[string]streamr.ChainState{}
	for _, l := range logged {
		id, _, err := streamr.UnmarshalHeader(l.Encoded)
		if err != nil {
			t.Fatal(err)
		}
		last[testPart.String()+"\x00"+id.MsgChainID] = streamr.ChainState{ID: id.MsgChainID, Last: &streamr.MessageRef{Timestamp: id.Timestamp, SequenceNumber: id.SequenceNumber}}
	}
	assertChains(t, s, last)
	assertStored(t, s, 200-len(logged), len(logged))

	rest, err := s.Pending(0, 1000)
	if err != nil {
		t.Fatal(err)
	}
	msgs, states = childSign(s, rest, map[string]*streamr.Chain{}) // from the stored states
	if err := s.CommitSigned(context.Background(), msgs, states); err != nil {
		t.Fatal(err)
	}
	assertStored(t, s, 0, 200)
	assertChained(t, s)
}

// assertChained checks that every stored message refers to the one
// before it in its chain.
func assertChained(t *testing.T, s *Store) {
	t.Helper()
	logged, err := s.After(0, 1000)
	if err != nil {
		t.Fatal(err)
	}
	prev := map[string]*streamr.MessageRef{}
	for _, l := range logged {
		m, err := streamr.Unmarshal(l.Encoded)
		if err != nil {
			t.Fatal(err)
		}
		chain := m.ID.MsgChainID
		if want := prev[chain]; (want == nil) != (m.PrevMsgRef == nil) || want != nil && want.Compare(*m.PrevMsgRef) != 0 {
			t.Fatalf("message %s of chain %s refers to %v, want %v", m.ID.Ref(), chain, m.PrevMsgRef, want)
		}
		prev[chain] = &streamr.MessageRef{Timestamp: m.ID.Timestamp, SequenceNumber: m.ID.SequenceNumber}
	}
}

// appendSources appends n readings from sources clients in turn and
// returns them.
func appendSources(t *testing.T, s *Store, n, sources int) []Reading {
	t.Helper()
	out := make([]Reading, n)
	for i := range n {
		r := reading(testPart, fmt.Sprintf("client-%04d", i%sources), payloadN(i))
		r.ReceivedAt += int64(i)
		if err := s.Append(context.Background(), r, true); err != nil {
			t.Fatalf("append %d: %v", i, err)
		}
		out[i] = *r
	}
	return out
}

// received returns n messages of n chains of another publisher and a
// receiver's position for each.
func received(t *testing.T, n int) ([]streamr.Envelope, map[string]streamr.ChainState) {
	t.Helper()
	msgs := make([]streamr.Envelope, n)
	states := map[string]streamr.ChainState{}
	for i := range n {
		r := Reading{Part: testPart, Source: fmt.Sprintf("chain-%04d", i), ContentType: streamr.ContentJSON, Payload: []byte(payloadN(i))}
		sm := signedFor(t, r, 1_700_000_000_000+int64(i), 0, nil)
		msgs[i] = sm.Envelope
		states[fmt.Sprintf("stored/%s/%d", testPart, i)] = streamr.ChainState{ID: r.Source, Last: &streamr.MessageRef{Timestamp: sm.Msg.ID.Timestamp}}
	}
	return msgs, states
}

// assertChains checks that the store holds want's chain states.
func assertChains(t *testing.T, s *Store, want map[string]streamr.ChainState) {
	t.Helper()
	for k, w := range want {
		got, ok, err := s.ChainState(k)
		if err != nil || !ok || got.ID != w.ID || (got.Last == nil) != (w.Last == nil) || w.Last != nil && got.Last.Compare(*w.Last) != 0 {
			t.Fatalf("chain state %q = %+v (found %v, %v), want %+v", k, got, ok, err, w)
		}
	}
}

// TestAtomicBatchReplayedAtOpen leaves a session batch too big for one
// transaction stored but not applied, as a crash inside putAtomic would,
// and checks that Open applies all of it, deletions included.
func TestAtomicBatchReplayedAtOpen(t *testing.T) {
	dir := t.TempDir()
	s, err := Open(Options{Dir: dir, MinFreeBytes: -1, memTableSize: tinyMemTable})
	if err != nil {
		t.Fatal(err)
	}
	if err := s.CommitSessions(context.Background(), map[string][]byte{"c/gone": []byte("{}")}); err != nil {
		t.Fatal(err)
	}
	ws := []write{{key: sessionKey("c/gone"), del: true}}
	for i := range 1000 {
		ws = append(ws, write{key: sessionKey(fmt.Sprintf("q/client\x00%04x", i)), value: []byte(`{"payload":"21.5"}`)})
	}
	if err := s.putSplit(nil, write{key: keyIntent, value: encodeWrites(ws)}); err != nil {
		t.Fatal(err)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	s = tinyStore(t, dir)
	n := 0
	err = s.ScanSessions("", func(key string, _ []byte) error {
		if key == "c/gone" {
			t.Error("a record the batch deletes is still stored")
		}
		n++
		return nil
	})
	if err != nil || n != 1000 {
		t.Fatalf("%d session records after replay, %v; want 1000", n, err)
	}
	if err := s.db.View(func(txn *badger.Txn) error { _, err := txn.Get(keyIntent); return err }); !errors.Is(err, badger.ErrKeyNotFound) {
		t.Fatalf("the applied batch is still stored: %v", err)
	}
}
