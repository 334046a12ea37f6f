package streamr

import (
	"bufio"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
)

// DefaultMaxFrame is the default limit on one raw-format frame: the Streamr
// network's 1 MiB maximum message size.
const DefaultMaxFrame = 1 << 20

// RawWriter writes the Streamr storage node's format=raw stream: repeated
// [uint32 big-endian length][StreamMessage protobuf].
type RawWriter struct {
	w   io.Writer
	buf []byte
}

// NewRawWriter returns a writer of raw-format frames to w. It does not
// buffer; wrap w in a bufio.Writer for many small frames.
func NewRawWriter(w io.Writer) *RawWriter { return &RawWriter{w: w} }

// Write encodes m and writes it as one frame.
func (rw *RawWriter) Write(m *StreamMessage) error {
	buf, err := m.AppendMarshal(append(rw.buf[:0], 0, 0, 0, 0))
	if err != nil {
		return err
	}
	rw.buf = buf
	return rw.writeFramed(buf)
}

// WriteFrame writes an already encoded StreamMessage as one frame.
func (rw *RawWriter) WriteFrame(encoded []byte) error {
	rw.buf = append(append(rw.buf[:0], 0, 0, 0, 0), encoded...)
	return rw.writeFramed(rw.buf)
}

func (rw *RawWriter) writeFramed(buf []byte) error {
	n := len(buf) - 4
	if uint64(n) > uint64(^uint32(0)) {
		return fmt.Errorf("raw frame of %d bytes does not fit a uint32 length", n)
	}
	binary.BigEndian.PutUint32(buf, uint32(n))
	if _, err := rw.w.Write(buf); err != nil {
		return fmt.Errorf("write raw frame: %w", err)
	}
	return nil
}

// RawReader reads frames written by RawWriter or a Streamr storage node.
type RawReader struct {
	r      *bufio.Reader
	max    int
	frames int
	offset int64
}

// NewRawReader reads frames from r, refusing frames over maxFrame bytes
// (DefaultMaxFrame if maxFrame <= 0).
func NewRawReader(r io.Reader, maxFrame int) *RawReader {
	if maxFrame <= 0 {
		maxFrame = DefaultMaxFrame
	}
	return &RawReader{r: bufio.NewReader(r), max: maxFrame}
}

// ErrFrameTooLarge reports a length prefix over the reader's limit.
var ErrFrameTooLarge = errors.New("raw frame exceeds the size limit")

// ReadFrame returns the next frame's bytes. It returns io.EOF at a clean end
// of input and io.ErrUnexpectedEOF, wrapped with the frame number and byte
// offset, when the input ends inside a frame.
func (rr *RawReader) ReadFrame() ([]byte, error) {
	var hdr [4]byte
	n, err := io.ReadFull(rr.r, hdr[:])
	if err == io.EOF {
		return nil, io.EOF
	}
	if err != nil {
		return nil, rr.errorf("length prefix truncated after %d of 4 bytes: %w", n, io.ErrUnexpectedEOF)
	}
	size := binary.BigEndian.Uint32(hdr[:])
	if uint64(size) > uint64(rr.max) {
		return nil, rr.errorf("length %d: %w of %d bytes", size, ErrFrameTooLarge, rr.max)
	}
	frame := make([]byte, size)
	if n, err := io.ReadFull(rr.r, frame); err != nil {
		return nil, rr.errorf("body truncated after %d of %d bytes: %w", n, size, io.ErrUnexpectedEOF)
	}
	rr.frames++
	rr.offset += 4 + int64(size)
	return frame, nil
}

// Read returns the next frame decoded as a StreamMessage.
func (rr *RawReader) Read() (*StreamMessage, error) {
	frame, err := rr.ReadFrame()
	if err != nil {
		return nil, err
	}
	m, err := Unmarshal(frame)
	if err != nil {
		return nil, fmt.Errorf("raw frame %d (ending at byte %d): %w", rr.frames, rr.offset, err)
	}
	return m, nil
}

func (rr *RawReader) errorf(format string, args ...any) error {
	return fmt.Errorf("raw frame %d at byte %d: "+format, append([]any{rr.frames + 1, rr.offset}, args...)...)
}
