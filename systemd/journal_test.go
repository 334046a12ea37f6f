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
	"syscall"
	"testing"
	"time"
)

// fakeJournal is a datagram socket standing in for journald's native socket.
type fakeJournal struct {
	t    *testing.T
	conn *net.UnixConn
	path string
}

func listenJournal(t *testing.T) *fakeJournal {
	t.Helper()
	path := filepath.Join(t.TempDir(), "journal.sock")
	conn, err := net.ListenUnixgram("unixgram", &net.UnixAddr{Name: path, Net: "unixgram"})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	return &fakeJournal{t: t, conn: conn, path: path}
}

// entry reads one datagram and decodes it with the native protocol's rules.
func (j *fakeJournal) entry() map[string]string {
	j.t.Helper()
	buf := make([]byte, 1<<16)
	if err := j.conn.SetReadDeadline(time.Now().Add(10 * time.Second)); err != nil {
		j.t.Fatal(err)
	}
	n, err := j.conn.Read(buf)
	if err != nil {
		j.t.Fatalf("read journal entry: %v", err)
	}
	fields, err := parseJournalEntry(buf[:n])
	if err != nil {
		j.t.Fatalf("entry %q: %v", buf[:n], err)
	}
	return fields
}

func parseJournalEntry(b []byte) (map[string]string, error) {
	fields := map[string]string{}
	for len(b) > 0 {
		nl := bytes.IndexByte(b, '\n')
		if nl < 0 {
			return nil, fmt.Errorf("unterminated field %q", b)
		}
		line := b[:nl]
		if name, value, ok := bytes.Cut(line, []byte("=")); ok {
			fields[string(name)] = string(value)
			b = b[nl+1:]
			continue
		}
		rest := b[nl+1:]
		if len(rest) < 8 {
			return nil, fmt.Errorf("field %q: short length", line)
		}
		size := binary.LittleEndian.Uint64(rest)
		if uint64(len(rest)-8) < size+1 || rest[8+size] != '\n' {
			return nil, fmt.Errorf("field %q: bad binary value", line)
		}
		fields[string(line)] = string(rest[8 : 8+size])
		b = rest[8+size+1:]
	}
	return fields, nil
}

func TestJournalHandlerFields(t *testing.T) {
	tests := []struct {
		name string
		log  func(*slog.Logger)
		want map[string]string
	}{
		{
			name: "message, priority and attributes",
			log:  func(l *slog.Logger) { l.Info("reading stored", "stream", "0xab/sensors", "partition", 3) },
			want: map[string]string{"MESSAGE": "reading stored", "PRIORITY": "6", "STREAM": "0xab/sensors", "PARTITION": "3"},
		},
		{
			name: "levels map to syslog priorities",
			log:  func(l *slog.Logger) { l.Error("disk full", "err", os.ErrPermission) },
			want: map[string]string{"MESSAGE": "disk full", "PRIORITY": "3", "ERR": "permission denied"},
		},
		{
			name: "warn",
			log:  func(l *slog.Logger) { l.Warn("slow") },
			want: map[string]string{"PRIORITY": "4"},
		},
		{
			name: "groups prefix field names",
			log: func(l *slog.Logger) {
				l.WithGroup("rule").With("topic", "a/b").Info("matched", slog.Group("peer", "id", "12D3"))
			},
			want: map[string]string{"RULE_TOPIC": "a/b", "RULE_PEER_ID": "12D3"},
		},
		{
			name: "values with newlines use the binary form",
			log:  func(l *slog.Logger) { l.Info("line one\nline two", "trace", "a\nb\n") },
			want: map[string]string{"MESSAGE": "line one\nline two", "TRACE": "a\nb\n"},
		},
		{
			name: "keys are made valid field names",
			log:  func(l *slog.Logger) { l.Info("x", "mqtt.client-id", "s1", "_trusted", "no", "9lives", "ok") },
			want: map[string]string{"MQTT_CLIENT_ID": "s1", "X_TRUSTED": "no", "X9LIVES": "ok"},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			j := listenJournal(t)
			h, err := NewJournalHandler(j.path, &slog.HandlerOptions{Level: slog.LevelDebug})
			if err != nil {
				t.Fatal(err)
			}
			defer h.Close()
			tt.log(slog.New(h))
			got := j.entry()
			for name, want := range tt.want {
				if got[name] != want {
					t.Errorf("field %s = %q, want %q (entry %q)", name, got[name], want, got)
				}
			}
			if got["SYSLOG_IDENTIFIER"] == "" {
				t.Errorf("entry has no SYSLOG_IDENTIFIER: %q", got)
			}
		})
	}
}

func TestJournalHandlerLevelAndSource(t *testing.T) {
	j := listenJournal(t)
	h, err := NewJournalHandler(j.path, &slog.HandlerOptions{Level: slog.LevelWarn, AddSource: true})
	if err != nil {
		t.Fatal(err)
	}
	defer h.Close()
	if h.Enabled(context.Background(), slog.LevelInfo) {
		t.Error("Info enabled with Level: Warn")
	}
	slog.New(h).Warn("kept")
	got := j.entry()
	if got["MESSAGE"] != "kept" || filepath.Base(got["CODE_FILE"]) != "journal_test.go" || got["CODE_LINE"] == "" {
		t.Errorf("entry %q lacks message or source fields", got)
	}
}

func TestNewJournalHandlerMissingSocket(t *testing.T) {
	if _, err := NewJournalHandler(filepath.Join(t.TempDir(), "absent"), nil); err == nil {
		t.Fatal("NewJournalHandler on a missing socket succeeded")
	}
}

func TestIsJournalStream(t *testing.T) {
	f, err := os.CreateTemp(t.TempDir(), "stream")
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		t.Fatal(err)
	}
	st := fi.Sys().(*syscall.Stat_t)
	self := fmt.Sprintf("%d:%d", st.Dev, st.Ino)
	tests := []struct {
		env  string
		want bool
	}{
		{self, true},
		{"", false},
		{fmt.Sprintf("%d:%d", st.Dev, st.Ino+1), false},
		{"garbage", false},
	}
	for _, tt := range tests {
		if got := isJournalStream(f, tt.env); got != tt.want {
			t.Errorf("isJournalStream(JOURNAL_STREAM=%q) = %v, want %v", tt.env, got, tt.want)
		}
	}
}
