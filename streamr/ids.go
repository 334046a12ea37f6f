package streamr

import (
	"crypto/md5"
	"encoding/binary"
	"fmt"
	"strconv"
	"strings"
	"unicode"
	"unicode/utf8"
)

// MaxPartitions is the number of partitions a stream may have (SDK
// MAX_PARTITION_COUNT); valid partitions are 0 to MaxPartitions-1.
const MaxPartitions = 100

// MaxStreamIDLength bounds a stream ID in bytes. Neither the SDK nor the
// StreamRegistry documents a limit; 1 KiB holds an ENS name or address
// and the path the broker's longest topic (512 B) maps to, and keeps a
// hostile topic from naming kilobytes-long partitions (issue 13).
const MaxStreamIDLength = 1024

// StreamID is a validated, canonical Streamr stream ID: "0x<address>/path" or
// "name.eth/path", with the domain lowercased and the path's case kept.
type StreamID string

// ParseStreamID validates s as a stream ID that can exist on chain and
// returns its canonical form. Errors name the rule the input broke.
func ParseStreamID(s string) (StreamID, error) {
	if len(s) > MaxStreamIDLength {
		return "", fmt.Errorf("stream ID %.64q...: %d bytes, longer than %d", s, len(s), MaxStreamIDLength)
	}
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
	if !hasASCIIUpper(domain) { // canonical already: every received message's ID
		return StreamID(s), nil
	}
	return StreamID(asciiLower(domain) + path), nil
}

func hasASCIIUpper(s string) bool {
	for i := range len(s) {
		if 'A' <= s[i] && s[i] <= 'Z' {
			return true
		}
	}
	return false
}

// asciiLower lowercases ASCII letters only (checkENSName guarantees that
// every other letter is lowercase already).
func asciiLower(s string) string {
	b := []byte(s)
	for i, c := range b {
		if 'A' <= c && c <= 'Z' {
			b[i] = c + 'a' - 'A'
		}
	}
	return string(b)
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

// isAddress matches the SDK's toEthereumAddress: ^0x[a-fA-F0-9]{40}$ (the
// "0x" prefix itself is case-sensitive there).
func isAddress(s string) bool {
	if len(s) != 42 || s[:2] != "0x" {
		return false
	}
	for i := 2; i < len(s); i++ {
		if !isHexDigit(s[i]) {
			return false
		}
	}
	return true
}

func isHexDigit(c byte) bool {
	return ('0' <= c && c <= '9') || ('a' <= c && c <= 'f') || ('A' <= c && c <= 'F')
}

// checkENSName accepts what the SDK's toENSName accepts that can also name a
// stream: non-empty labels, valid UTF-8, no spaces, control characters, '#'
// or '?'. Non-ASCII letters must already be lowercase (as normalised ENS
// names are), so that lowercasing only touches ASCII and cannot differ
// between Go's strings.ToLower and JavaScript's toLowerCase.
func checkENSName(name string) error {
	if !utf8.ValidString(name) {
		return fmt.Errorf("ENS name %q is not valid UTF-8", name)
	}
	if name == "" || name[0] == '.' || name[len(name)-1] == '.' || strings.Contains(name, "..") {
		return fmt.Errorf("ENS name %q has an empty label", name)
	}
	for i, c := range name {
		switch {
		case c == '#' || c == '?':
			return fmt.Errorf("ENS name %q has forbidden character %q at byte %d", name, c, i)
		case unicode.IsSpace(c) || unicode.IsControl(c) || !unicode.IsPrint(c):
			return fmt.Errorf("ENS name %q has a space or control character %q at byte %d", name, c, i)
		case c >= utf8.RuneSelf && unicode.ToLower(c) != c:
			return fmt.Errorf("ENS name %q has non-ASCII uppercase %q at byte %d: use the normalised (lowercase) name", name, c, i)
		}
	}
	return nil
}

// checkPath applies the StreamRegistry's rule: "/" then [-./0-9A-Za-z_]*.
func checkPath(path string) error {
	for i := 1; i < len(path); i++ {
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
	p, err := parsePartition(s[i+1:])
	if err != nil {
		return StreamPartID{}, fmt.Errorf("stream part %q: %w", s, err)
	}
	return NewStreamPartID(stream, p)
}

// parsePartition accepts only the canonical decimal form "0" to "99", so
// that every accepted stream part string is the one String returns.
func parsePartition(s string) (int, error) {
	if s == "" || len(s) > 2 || (len(s) == 2 && s[0] == '0') {
		return 0, fmt.Errorf("partition %q: want a decimal number 0 to %d without sign or leading zeros", s, MaxPartitions-1)
	}
	p := 0
	for i := 0; i < len(s); i++ {
		if s[i] < '0' || s[i] > '9' {
			return 0, fmt.Errorf("partition %q: want a decimal number 0 to %d without sign or leading zeros", s, MaxPartitions-1)
		}
		p = p*10 + int(s[i]-'0')
	}
	return p, nil
}

// String returns the SDK's StreamPartID form, "streamId#partition".
func (p StreamPartID) String() string {
	return string(p.Stream) + "#" + strconv.Itoa(p.Partition)
}

// PartitionForKey picks a partition for a string key exactly as the SDK's
// keyToArrayIndex: md5 of the UTF-8 key, first 4 bytes as a signed
// little-endian int32, absolute value, modulo count. A count below 1 (which
// the SDK rejects) is treated as 1.
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
// does: |key| modulo count. A count below 1 is treated as 1.
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
