package streamr

import (
	"encoding/json"
	"fmt"
)

// Limits bounds what Validate accepts.
type Limits struct {
	MaxMessageBytes int // encoded size; 0 means DefaultMaxFrame
	MaxContentBytes int // content size; 0 means no limit beyond MaxMessageBytes
}

// Validate checks a decoded message the way a subscriber must before
// delivering it: sane stream part and chain, previous reference strictly
// before the message, size within limits, JSON content that parses, and a
// valid signature. encodedSize is the wire size (0 if unknown).
func Validate(m *StreamMessage, encodedSize int, lim Limits) error {
	if err := checkStructure(m); err != nil {
		return fmt.Errorf("message %s of %s: %w", m.ID.Ref(), m.ID.StreamID, err)
	}
	if err := checkSizes(m, encodedSize, lim); err != nil {
		return fmt.Errorf("message %s of %s: %w", m.ID.Ref(), m.ID.StreamPart(), err)
	}
	if err := checkContent(m); err != nil {
		return fmt.Errorf("message %s of %s: %w", m.ID.Ref(), m.ID.StreamPart(), err)
	}
	if err := VerifySignature(m); err != nil {
		return fmt.Errorf("message %s of %s: %w", m.ID.Ref(), m.ID.StreamPart(), err)
	}
	return nil
}

func checkStructure(m *StreamMessage) error {
	if _, err := ParseStreamID(string(m.ID.StreamID)); err != nil {
		return err
	}
	if p := m.ID.StreamPartition; p < 0 || p >= MaxPartitions {
		return fmt.Errorf("partition %d: must be 0 to %d", p, MaxPartitions-1)
	}
	if m.ID.Timestamp < 0 || m.ID.SequenceNumber < 0 {
		return fmt.Errorf("negative timestamp or sequence number")
	}
	if m.ID.MsgChainID == "" {
		return fmt.Errorf("empty message chain ID")
	}
	if len(m.ID.PublisherID) == 0 {
		return fmt.Errorf("empty publisher ID")
	}
	if p := m.PrevMsgRef; p != nil && p.Compare(m.ID.Ref()) >= 0 {
		return fmt.Errorf("previous reference %s is not before the message", p)
	}
	if m.Body == nil {
		return fmt.Errorf("no body")
	}
	return nil
}

func checkSizes(m *StreamMessage, encodedSize int, lim Limits) error {
	maxMsg := lim.MaxMessageBytes
	if maxMsg <= 0 {
		maxMsg = DefaultMaxFrame
	}
	if encodedSize > maxMsg {
		return fmt.Errorf("encoded size %d exceeds the limit of %d bytes", encodedSize, maxMsg)
	}
	if c := m.Content(); c != nil && lim.MaxContentBytes > 0 && len(c.Content) > lim.MaxContentBytes {
		return fmt.Errorf("content size %d exceeds the limit of %d bytes", len(c.Content), lim.MaxContentBytes)
	}
	return nil
}

func checkContent(m *StreamMessage) error {
	c := m.Content()
	if c == nil {
		return nil
	}
	switch c.EncryptionType {
	case EncryptionNone:
	case EncryptionAES:
		if c.GroupKeyID == nil || *c.GroupKeyID == "" {
			return fmt.Errorf("AES-encrypted content without a group key ID")
		}
		return nil // content is ciphertext; it is parsed after decryption
	default:
		return fmt.Errorf("unknown encryption type %d", c.EncryptionType)
	}
	switch c.ContentType {
	case ContentJSON:
		if !json.Valid(c.Content) {
			return fmt.Errorf("JSON content does not parse")
		}
	case ContentBinary:
	default:
		return fmt.Errorf("unknown content type %d", c.ContentType)
	}
	return nil
}
