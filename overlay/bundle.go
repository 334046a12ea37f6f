package overlay

import (
	"bytes"
	"errors"
	"fmt"
	"hash/maphash"
	"sync"

	"google.golang.org/protobuf/encoding/protowire"
	"google.golang.org/protobuf/proto"

	"github.com/tributary-iot/tributary/streamr"
	"github.com/tributary-iot/tributary/streamr/pb"
)

// Gossip bundles. Every GossipSub message on a partition's topic is a
// pb.GossipBundle: consecutive messages of one PublishBatch, in order.
// pubsub keeps bookkeeping per gossip message for a minute or more (its
// seen filter and its peer-score delivery records, swept once a minute:
// ~400 bytes per message, ~55 MB at 2,000 msg/s), and validates, caches
// and frames each one; a bundle of the readings a gateway signed together
// pays that once.
const (
	// maxBundleMessages is the most messages a bundle may hold: part of
	// the wire contract of the /tributary/2 topics (a sender never packs
	// more, a receiver rejects more and penalises the sender), not a
	// setting, as a gateway configured differently would be penalised by
	// its peers. It bounds one gossip message's validation, at worst
	// 256 signature checks (~15 ms on a Raspberry Pi 4 core).
	maxBundleMessages = 256
	// recentSize is how many accepted message IDs a node remembers per
	// generation (recentIDs): 4 to 8 s of 2,000 msg/s, ~0.5 MB at most.
	recentSize = 8192
	// bundleBytes is the size a bundle is filled to: a message that would
	// take it past this starts the next one (a larger message goes alone).
	// It keeps one gossip message's validation, a few milliseconds, and a
	// peer's queue slot small.
	bundleBytes = 32 << 10
)

// maxBundleSize is the largest bundle a node accepts under limits: the
// messages plus, for each, a one-byte tag and a length prefix (a varint
// below 2³², at most 5 bytes).
func maxBundleSize(limits streamr.Limits) int {
	return max(limits.MaxMessageBytes, bundleBytes) + maxBundleMessages*(1+5)
}

// packBundles splits encoded messages, in order, into the index ranges of
// bundles of at most maxMessages messages and about bundleBytes each.
func packBundles(encoded [][]byte, maxMessages int) [][2]int {
	var out [][2]int
	start, size := 0, 0
	for i, enc := range encoded {
		if i > start && (i-start == maxMessages || size+len(enc) > bundleBytes) {
			out = append(out, [2]int{start, i})
			start, size = i, 0
		}
		size += len(enc)
	}
	if start < len(encoded) {
		out = append(out, [2]int{start, len(encoded)})
	}
	return out
}

// encodeBundle returns the gossip data carrying msgs.
func encodeBundle(msgs [][]byte) ([]byte, error) {
	b, err := proto.Marshal(&pb.GossipBundle{Messages: msgs})
	if err != nil {
		return nil, fmt.Errorf("encode gossip bundle: %w", err)
	}
	return b, nil
}

// decodeBundle returns the messages of gossip data. A bundle of one
// message returns it in place; the messages of a larger one are copied
// each into its own buffer, as a message kept (a chain tip, or one waiting
// for its turn in the bridge's ordering) must not pin the whole bundle.
// It refuses more than maxBundleMessages messages before copying any.
func decodeBundle(data []byte) ([][]byte, error) {
	var msgs [][]byte
	n, err := walkBundle(data, func(m []byte) { msgs = append(msgs, m) })
	switch {
	case err != nil:
		return nil, err
	case n == 0:
		return nil, errors.New("decode gossip bundle: no messages")
	}
	if n > 1 {
		for i, m := range msgs {
			msgs[i] = bytes.Clone(m)
		}
	}
	return msgs, nil
}

// walkBundle calls each, if not nil, with every message of gossip data,
// in order and in place, and returns how many there are. It stops with an
// error at malformed data, a messages field that is not length-delimited,
// or more than maxBundleMessages messages; other fields are skipped (a
// later version may add some).
func walkBundle(data []byte, each func([]byte)) (int, error) {
	n := 0
	for len(data) > 0 {
		num, typ, tagLen := protowire.ConsumeTag(data)
		if tagLen < 0 {
			return 0, fmt.Errorf("decode gossip bundle: %w", protowire.ParseError(tagLen))
		}
		if !num.IsValid() { // ConsumeTag refuses only 0; protobuf also numbers above 2²⁹-1
			return 0, fmt.Errorf("decode gossip bundle: invalid field number %d", num)
		}
		data = data[tagLen:]
		if num != bundleMessagesField {
			fieldLen := protowire.ConsumeFieldValue(num, typ, data)
			if fieldLen < 0 {
				return 0, fmt.Errorf("decode gossip bundle: field %d: %w", num, protowire.ParseError(fieldLen))
			}
			data = data[fieldLen:]
			continue
		}
		if typ != protowire.BytesType {
			return 0, fmt.Errorf("decode gossip bundle: messages field of wire type %d", typ)
		}
		m, fieldLen := protowire.ConsumeBytes(data)
		if fieldLen < 0 {
			return 0, fmt.Errorf("decode gossip bundle: message %d: %w", n, protowire.ParseError(fieldLen))
		}
		if n++; n > maxBundleMessages {
			return 0, fmt.Errorf("decode gossip bundle: more than %d messages", maxBundleMessages)
		}
		if each != nil {
			each(m)
		}
		data = data[fieldLen:]
	}
	return n, nil
}

// bundleMessagesField is pb.GossipBundle's messages field number.
const bundleMessagesField = 1

// bundleCount is the number of messages gossip data holds, for counting
// metrics: 1 for data that does not decode (it is one gossip message).
func bundleCount(data []byte) int {
	if n, err := walkBundle(data, nil); err == nil && n > 0 {
		return n
	}
	return 1
}

// recentIDs remembers the IDs of the last messages a node accepted, in
// all its partitions, so that a message repeated in another bundle is
// dropped before its signature is verified again: pubsub's duplicate
// filter sees bundles, and a peer could otherwise repack valid messages
// into new bundles and make this node verify each any number of times. It
// holds two generations of up to size IDs each; a full one replaces the
// older, which the GC frees (a map never shrinks). A repeat older than
// that is verified and then dropped by the bridge's ordering, like a copy
// after the seen TTL. IDs are kept as 64-bit hashes with a per-node
// random seed: 8 bytes each, and a peer cannot aim for a collision.
type recentIDs struct {
	mu        sync.Mutex
	seed      maphash.Seed
	size      int
	cur, prev map[uint64]struct{}
}

func newRecentIDs(size int) *recentIDs {
	return &recentIDs{seed: maphash.MakeSeed(), size: size, cur: make(map[uint64]struct{})}
}

// key hashes every field of id, each delimited.
func (r *recentIDs) key(id *streamr.MessageID) uint64 {
	var buf [16]byte
	var h maphash.Hash
	h.SetSeed(r.seed)
	h.Write(protowire.AppendVarint(buf[:0], uint64(len(id.StreamID))))
	h.WriteString(string(id.StreamID))
	h.Write(protowire.AppendVarint(buf[:0], uint64(id.StreamPartition)))
	h.Write(protowire.AppendVarint(buf[:0], uint64(id.Timestamp)))
	h.Write(protowire.AppendVarint(buf[:0], uint64(id.SequenceNumber)))
	h.Write(protowire.AppendVarint(buf[:0], uint64(len(id.PublisherID))))
	h.Write(id.PublisherID)
	h.WriteString(id.MsgChainID)
	return h.Sum64()
}

// seen reports whether the message whose key is k was accepted lately.
func (r *recentIDs) seen(k uint64) bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	_, inCur := r.cur[k]
	_, inPrev := r.prev[k]
	return inCur || inPrev
}

// add records the message whose key is k as accepted.
func (r *recentIDs) add(k uint64) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if len(r.cur) >= r.size {
		r.prev, r.cur = r.cur, make(map[uint64]struct{}, r.size)
	}
	r.cur[k] = struct{}{}
}
