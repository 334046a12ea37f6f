package streamr

import (
	"crypto/md5"
	"encoding/binary"
	"fmt"
	"strconv"
	"strings"
)

// MaxPartitions is the number of partitions a stream may have (SDK
// MAX_PARTITION_COUNT); valid partitions are 0 to MaxPartitions-1.
const MaxPartitions = 100

// StreamID is a validated, canonical Streamr stream ID: "0x<address>/path" or
// "name.eth/path", with the domain lowercased and the path's case kept.
type StreamID string

// ParseStreamID validates s as a stream ID that can exist on chain and
// returns its canonical form. Errors name the rule the input broke.
func ParseStreamID(s string) (StreamID, error) {
	slash := strings.IndexByte(s, '/')
	if slash < 0 {
		return "", fmt.Errorf("stream ID %q: no path: want 0x<address>/path or name.eth/path", s)
	}
	if slash == 0 {
		return "", fmt.Errorf("stream ID %q: no domain before the path", s)
	}
	domain, path := s[:slash], s[slash:]
	switch {
	case strings.Contains(domain, "."):
		if err := checkENSName(domain); err != nil {
			return "", fmt.Errorf("stream ID %q: %w", s, err)
		}
	case !isAddress(domain):
		return "", fmt.Errorf("stream ID %q: domain %q is neither an ENS name nor 0x followed by 40 hex digits", s, domain)
	}
	if err := checkPath(path); err != nil {
		return "", fmt.Errorf("stream ID %q: %w", s, err)
	}
	return StreamID(strings.ToLower(domain) + path), nil
}

// Domain returns the owner part of the ID: a lowercase 0x address or ENS name.
func (id StreamID) Domain() string {
	d, _, _ := strings.Cut(string(id), "/")
	return d
}

// Path returns the path part of the ID, starting with "/".
func (id StreamID) Path() string {
	i := strings.IndexByte(string(id), '/')
	if i < 0 {
		return ""
	}
	return string(id)[i:]
}

// OwnerAddress returns the 20-byte address in the domain of a
// "0x<address>/path" stream ID, and false for ENS-named streams.
func (id StreamID) OwnerAddress() ([20]byte, bool) {
	var addr [20]byte
	d := id.Domain()
	if !isAddress(d) {
		return addr, false
	}
	for i := range addr {
		v, err := strconv.ParseUint(d[2+2*i:4+2*i], 16, 8)
		if err != nil {
			return addr, false
		}
		addr[i] = byte(v)
	}
	return addr, true
}

func isAddress(s string) bool {
	if len(s) != 42 || s[0] != '0' || (s[1] != 'x' && s[1] != 'X') {
		return false
	}
	for _, c := range s[2:] {
		if !isHexDigit(c) {
			return false
		}
	}
	return true
}

func isHexDigit(c rune) bool {
	return ('0' <= c && c <= '9') || ('a' <= c && c <= 'f') || ('A' <= c && c <= 'F')
}

func checkENSName(name string) error {
	for _, label := range strings.Split(name, ".") {
		if label == "" {
			return fmt.Errorf("ENS name %q has an empty label", name)
		}
	}
	for i, c := range name {
		if c == '#' || c == '?' || c <= ' ' {
			return fmt.Errorf("ENS name %q has forbidden character %q at byte %d", name, c, i)
		}
	}
	return nil
}

// checkPath applies the StreamRegistry's rule: "/" then [-./0-9A-Za-z_].
func checkPath(path string) error {
	if len(path) < 2 {
		return fmt.Errorf("path %q is empty", path)
	}
	for i := 0; i < len(path); i++ {
		c := path[i]
		ok := ('-' <= c && c <= '9') || ('A' <= c && c <= 'Z') || ('a' <= c && c <= 'z') || c == '_'
		if !ok {
			return fmt.Errorf("path %q has character %q at byte %d; allowed are A-Z a-z 0-9 - . / _", path, c, i)
		}
	}
	return nil
}

// StreamPartID names one partition of a stream: "streamId#partition".
type StreamPartID struct {
	Stream    StreamID
	Partition int
}

// NewStreamPartID checks the partition range and returns the stream part.
func NewStreamPartID(stream StreamID, partition int) (StreamPartID, error) {
	if partition < 0 || partition >= MaxPartitions {
		return StreamPartID{}, fmt.Errorf("partition %d of stream %q: must be 0 to %d", partition, stream, MaxPartitions-1)
	}
	return StreamPartID{Stream: stream, Partition: partition}, nil
}

// ParseStreamPartID parses "streamId#partition", splitting on the last "#"
// as the SDK does.
func ParseStreamPartID(s string) (StreamPartID, error) {
	i := strings.LastIndexByte(s, '#')
	if i < 0 {
		return StreamPartID{}, fmt.Errorf("stream part %q: no '#' before the partition", s)
	}
	stream, err := ParseStreamID(s[:i])
	if err != nil {
		return StreamPartID{}, fmt.Errorf("stream part %q: %w", s, err)
	}
	p, err := strconv.Atoi(s[i+1:])
	if err != nil {
		return StreamPartID{}, fmt.Errorf("stream part %q: partition %q is not a decimal number", s, s[i+1:])
	}
	return NewStreamPartID(stream, p)
}

func (p StreamPartID) String() string {
	return string(p.Stream) + "#" + strconv.Itoa(p.Partition)
}

// PartitionForKey picks a partition for a string key exactly as the SDK's
// keyToArrayIndex: md5 of the UTF-8 key, first 4 bytes as a signed
// little-endian int32, absolute value, modulo count.
func PartitionForKey(count int, key string) int {
	if count <= 1 {
		return 0
	}
	sum := md5.Sum([]byte(key))
	v := int64(int32(binary.LittleEndian.Uint32(sum[:4])))
	if v < 0 {
		v = -v
	}
	return int(v % int64(count))
}

// PartitionForNumber picks a partition for a numeric key as keyToArrayIndex
// does: |key| modulo count.
func PartitionForNumber(count int, key int64) int {
	if count <= 1 {
		return 0
	}
	v := key % int64(count)
	if v < 0 {
		v = -v
	}
	return int(v)
}
