package bridge

import (
	"cmp"
	"context"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"

	"github.com/tributary-iot/tributary/streamr"
)

// The Streamr SDK's enum values, as a storage node writes them in
// format=object answers (they differ from the protobuf's).
const (
	sdkMessageTypeContent          = 27
	sdkMessageTypeGroupKeyRequest  = 28
	sdkMessageTypeGroupKeyResponse = 29
	sdkEncryptionAES               = 2
)

// MessageObject is one message in the Streamr storage node's format=object
// shape: the message's metadata and its parsed content.
type MessageObject struct {
	StreamID        string `json:"streamId"`
	StreamPartition int32  `json:"streamPartition"`
	Timestamp       int64  `json:"timestamp"`
	SequenceNumber  int32  `json:"sequenceNumber"`
	PublisherID     string `json:"publisherId"`
	MsgChainID      string `json:"msgChainId"`
	MessageType     int    `json:"messageType"`
	ContentType     int    `json:"contentType"`
	EncryptionType  int    `json:"encryptionType"`
	// Content is the JSON content as is; binary or encrypted content as a
	// hex string (no 0x), as the storage node writes it.
	Content    json.RawMessage `json:"content"`
	Signature  string          `json:"signature"`
	GroupKeyID *string         `json:"groupKeyId,omitempty"`
}

// NewMessageObject returns m in the storage node's format=object shape.
func NewMessageObject(m *streamr.StreamMessage) (MessageObject, error) {
	o := MessageObject{
		StreamID:        string(m.ID.StreamID),
		StreamPartition: m.ID.StreamPartition,
		Timestamp:       m.ID.Timestamp,
		SequenceNumber:  m.ID.SequenceNumber,
		PublisherID:     m.ID.PublisherHex(),
		MsgChainID:      m.ID.MsgChainID,
		Signature:       hex.EncodeToString(m.Signature),
		Content:         json.RawMessage("null"),
	}
	switch b := m.Body.(type) {
	case *streamr.ContentMessage:
		o.MessageType = sdkMessageTypeContent
		o.ContentType = int(b.ContentType)
		o.GroupKeyID = b.GroupKeyID
		if b.EncryptionType != streamr.EncryptionNone {
			o.EncryptionType = sdkEncryptionAES
		}
		if b.ContentType == streamr.ContentJSON && b.EncryptionType == streamr.EncryptionNone && json.Valid(b.Content) {
			o.Content = json.RawMessage(b.Content)
		} else {
			o.Content = hexJSON(b.Content)
		}
	case *streamr.GroupKeyRequest:
		o.MessageType = sdkMessageTypeGroupKeyRequest
	case *streamr.GroupKeyResponse:
		o.MessageType = sdkMessageTypeGroupKeyResponse
	default:
		return o, fmt.Errorf("message %s: unknown body %T", m.ID.Ref(), m.Body)
	}
	return o, nil
}

func hexJSON(b []byte) json.RawMessage {
	out := make([]byte, 0, 2+2*len(b))
	out = append(out, '"')
	out = hex.AppendEncode(out, b)
	return append(out, '"')
}

// jsonArrayWriter writes messages as one JSON array, element by element,
// so an answer of any length streams in constant memory.
type jsonArrayWriter struct {
	w     io.Writer
	count int
	// ctx and plain decrypt encrypted content; a message that does not
	// decrypt is left out (never written as ciphertext) and counted.
	ctx            context.Context
	plain          *Plaintext
	undecrypted    int
	undecryptedErr error // the first
}

// WriteFrame decodes an encoded StreamMessage and writes it as the next
// element of the array.
func (a *jsonArrayWriter) WriteFrame(encoded []byte) error {
	m, err := streamr.Unmarshal(encoded)
	if err != nil {
		return fmt.Errorf("stored message: %w", err)
	}
	if m, err = a.plain.Decrypt(a.ctx, m); err != nil {
		if !errors.Is(err, ErrUndecrypted) {
			return err
		}
		a.undecrypted++
		a.undecryptedErr = cmp.Or(a.undecryptedErr, err)
		return nil
	}
	o, err := NewMessageObject(m)
	if err != nil {
		return err
	}
	b, err := json.Marshal(o)
	if err != nil {
		return fmt.Errorf("message %s: %w", m.ID.Ref(), err)
	}
	sep := ","
	if a.count == 0 {
		sep = "["
	}
	a.count++
	if _, err := io.WriteString(a.w, sep); err != nil {
		return err
	}
	_, err = a.w.Write(b)
	return err
}

// Close ends the array ("[]" when no message was written).
func (a *jsonArrayWriter) Close() error {
	end := "]"
	if a.count == 0 {
		end = "[]"
	}
	_, err := io.WriteString(a.w, end)
	return err
}
