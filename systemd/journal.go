package systemd

import (
	"bytes"
	"context"
	"encoding/binary"
	"fmt"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"syscall"
)

// JournalSocket is where journald receives entries over its native protocol.
const JournalSocket = "/run/systemd/journal/socket"

// StderrIsJournal reports whether standard error is connected to the journal, which is how a service
// started by systemd with the default StandardError=journal finds out that it should log with
// NewJournalHandler instead of writing text lines.
func StderrIsJournal() bool { return isJournalStream(os.Stderr, os.Getenv("JOURNAL_STREAM")) }

// isJournalStream compares f's device and inode with journalStream ("DEV:INODE" from $JOURNAL_STREAM).
func isJournalStream(f *os.File, journalStream string) bool {
	if journalStream == "" {
		return false
	}
	var st syscall.Stat_t
	if err := syscall.Fstat(int(f.Fd()), &st); err != nil {
		return false
	}
	return journalStream == fmt.Sprintf("%d:%d", uint64(st.Dev), uint64(st.Ino))
}

// JournalHandler is a slog.Handler that writes every record as one structured journal entry, so
// attributes become fields that journalctl can filter on: the attribute "stream" of group "rule"
// becomes RULE_STREAM, as in `journalctl -u bridge RULE_STREAM=0xabc/sensors`. Levels map to syslog
// priorities. It is safe for concurrent use; each record is a single datagram.
type JournalHandler struct {
	conn   *net.UnixConn
	opts   slog.HandlerOptions
	ident  string
	prefix string // field name prefix from WithGroup, e.g. "RULE_"
	fields []byte // fields from WithAttrs, already encoded
}

var _ slog.Handler = (*JournalHandler)(nil)

// NewJournalHandler connects to journald's native socket (normally JournalSocket). opts may be nil.
// Close the handler when logging has finished.
func NewJournalHandler(socket string, opts *slog.HandlerOptions) (*JournalHandler, error) {
	conn, err := net.DialUnix("unixgram", nil, &net.UnixAddr{Name: socket, Net: "unixgram"})
	if err != nil {
		return nil, fmt.Errorf("systemd: connect to journal socket %q: %w", socket, err)
	}
	h := &JournalHandler{conn: conn, ident: filepath.Base(os.Args[0])}
	if opts != nil {
		h.opts = *opts
	}
	return h, nil
}

// Close closes the connection to journald. Handlers derived with WithAttrs or WithGroup share it.
func (h *JournalHandler) Close() error { return h.conn.Close() }

// Enabled implements slog.Handler.
func (h *JournalHandler) Enabled(_ context.Context, level slog.Level) bool {
	minLevel := slog.LevelInfo
	if h.opts.Level != nil {
		minLevel = h.opts.Level.Level()
	}
	return level >= minLevel
}

// Handle implements slog.Handler.
func (h *JournalHandler) Handle(_ context.Context, r slog.Record) error {
	var b bytes.Buffer
	appendField(&b, "MESSAGE", r.Message)
	appendField(&b, "PRIORITY", strconv.Itoa(priority(r.Level)))
	appendField(&b, "SYSLOG_IDENTIFIER", h.ident)
	if h.opts.AddSource && r.PC != 0 {
		frame, _ := runtime.CallersFrames([]uintptr{r.PC}).Next()
		appendField(&b, "CODE_FILE", frame.File)
		appendField(&b, "CODE_LINE", strconv.Itoa(frame.Line))
		appendField(&b, "CODE_FUNC", frame.Function)
	}
	b.Write(h.fields)
	r.Attrs(func(a slog.Attr) bool {
		appendAttr(&b, h.prefix, a)
		return true
	})
	if _, err := h.conn.Write(b.Bytes()); err != nil {
		return fmt.Errorf("systemd: write %d-byte journal entry: %w", b.Len(), err)
	}
	return nil
}

// WithAttrs implements slog.Handler.
func (h *JournalHandler) WithAttrs(attrs []slog.Attr) slog.Handler {
	h2 := *h
	b := bytes.NewBuffer(slices.Clip(h.fields))
	for _, a := range attrs {
		appendAttr(b, h.prefix, a)
	}
	h2.fields = b.Bytes()
	return &h2
}

// WithGroup implements slog.Handler.
func (h *JournalHandler) WithGroup(name string) slog.Handler {
	if name == "" {
		return h
	}
	h2 := *h
	h2.prefix = h.prefix + name + "_"
	return &h2
}

// appendAttr encodes a (resolved) attribute as a field; group attributes are flattened with a prefix.
func appendAttr(b *bytes.Buffer, prefix string, a slog.Attr) {
	a.Value = a.Value.Resolve()
	if a.Equal(slog.Attr{}) {
		return
	}
	if a.Value.Kind() == slog.KindGroup {
		if a.Key != "" {
			prefix += a.Key + "_"
		}
		for _, ga := range a.Value.Group() {
			appendAttr(b, prefix, ga)
		}
		return
	}
	appendField(b, fieldName(prefix+a.Key), a.Value.String())
}

// appendField encodes one field in journald's native format: "NAME=value\n", or, when the value holds
// a newline, the name, a newline, the value's length as 64-bit little endian, the value and a newline.
func appendField(b *bytes.Buffer, name, value string) {
	b.WriteString(name)
	if !strings.ContainsRune(value, '\n') {
		b.WriteByte('=')
		b.WriteString(value)
		b.WriteByte('\n')
		return
	}
	b.WriteByte('\n')
	b.Write(binary.LittleEndian.AppendUint64(nil, uint64(len(value))))
	b.WriteString(value)
	b.WriteByte('\n')
}

// fieldName maps an attribute key to a valid journal field name: upper case letters, digits and
// underscores, starting with a letter, at most 64 bytes.
func fieldName(key string) string {
	name := make([]byte, 0, len(key)+1)
	for i := 0; i < len(key); i++ {
		c := key[i]
		switch {
		case c >= 'a' && c <= 'z':
			name = append(name, c-'a'+'A')
		case c >= 'A' && c <= 'Z', c >= '0' && c <= '9':
			name = append(name, c)
		default:
			name = append(name, '_')
		}
	}
	if len(name) == 0 || name[0] < 'A' || name[0] > 'Z' {
		name = append([]byte{'X'}, name...) // journald drops fields starting with '_' or a digit
	}
	return string(name[:min(len(name), 64)])
}

// priority maps a slog level to a syslog priority (3 err, 4 warning, 6 info, 7 debug).
func priority(l slog.Level) int {
	switch {
	case l >= slog.LevelError:
		return 3
	case l >= slog.LevelWarn:
		return 4
	case l >= slog.LevelInfo:
		return 6
	default:
		return 7
	}
}
