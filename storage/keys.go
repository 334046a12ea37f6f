package storage

import (
	"encoding/binary"
	"math"
)

// Key layout. Every key starts with a one-byte kind; integers are
// fixed-width big-endian so that Badger's byte order is the numeric order.
// Keys are kept short because every key is written to the WAL, flushed and
// rewritten by compaction.
//
//	M<name>                                     metadata (schema version, counters)
//	P<part string>                              → part number (uint32)
//	r<seq u64>                                  → pending reading
//	c<chain key>                                → chain state
//	l<pos u64>                                  → signed message: part u32 ‖ reading seq u64 ‖ encoded
//	i<part u32><ts><seqno><publisher>\x00\x01<chain> → pos u64
//
// In the i keys, ts and seqno have their sign bit flipped so negative values
// sort first, and the publisher's bytes are escaped (0x00 → 0x00 0xff) and
// terminated by 0x00 0x01, so keys sort by publisher bytes, then chain ID.
const (
	kindMeta    = 'M'
	kindPart    = 'P'
	kindReading = 'r'
	kindChain   = 'c'
	kindLog     = 'l'
	kindIndex   = 'i'
)

// Metadata keys.
var (
	keySchema      = []byte("Mv") // schema version, uint32
	keyNextSeq     = []byte("Ms") // next reading sequence number, uint64
	keyNextPos     = []byte("Ml") // next log position, uint64
	keySignedBytes = []byte("Mb") // total encoded bytes of stored signed messages, uint64
	keyNextPart    = []byte("Mp") // next part number, uint32
	keyChainsPos   = []byte("Mc") // own chain states cover the log below this position, uint64 (chains.go)
	keyIntent      = []byte("Mi") // a batch putAtomic is applying across transactions (txnsplit.go)
)

// schemaVersion is the layout above. Open refuses a database written with
// a newer one.
const schemaVersion = 1

func u64Key(kind byte, n uint64) []byte {
	return binary.BigEndian.AppendUint64(append(make([]byte, 0, 9), kind), n)
}

func readingKey(seq uint64) []byte { return u64Key(kindReading, seq) }
func logKey(pos uint64) []byte     { return u64Key(kindLog, pos) }

func partKey(part string) []byte { return append([]byte{kindPart}, part...) }

func chainKey(key string) []byte { return append([]byte{kindChain}, key...) }

// indexPrefix returns the i key prefix of a part's messages.
func indexPrefix(part uint32) []byte {
	return binary.BigEndian.AppendUint32([]byte{kindIndex}, part)
}

// indexTimeKey returns the smallest i key of part at timestamp ts.
func indexTimeKey(part uint32, ts int64) []byte {
	return binary.BigEndian.AppendUint64(indexPrefix(part), uint64(ts)^(1<<63))
}

func indexKey(part uint32, ts int64, seqNo int32, publisher []byte, chain string) []byte {
	k := make([]byte, 0, 1+4+8+4+len(publisher)+2+len(chain)+2) // one allocation: a key per stored message
	k = binary.BigEndian.AppendUint32(append(k, kindIndex), part)
	k = binary.BigEndian.AppendUint64(k, uint64(ts)^(1<<63)) // as indexTimeKey
	k = binary.BigEndian.AppendUint32(k, uint32(seqNo)^(1<<31))
	for _, b := range publisher {
		k = append(k, b)
		if b == 0 {
			k = append(k, 0xff)
		}
	}
	k = append(k, 0, 1)
	return append(k, chain...)
}

// indexEndKey returns a key after every i key of part with timestamp ≤ ts.
func indexEndKey(part uint32, ts int64) []byte {
	if ts == math.MaxInt64 {
		return binary.BigEndian.AppendUint32([]byte{kindIndex}, part+1)
	}
	return indexTimeKey(part, ts+1)
}

func getU64(b []byte) uint64 { return binary.BigEndian.Uint64(b) }

func putU64(n uint64) []byte { return binary.BigEndian.AppendUint64(nil, n) }
