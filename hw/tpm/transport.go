package tpm

import (
	"encoding/binary"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"sync"
	"time"

	"github.com/google/go-tpm/tpm2"
	"github.com/google/go-tpm/tpm2/transport"
	"github.com/google/go-tpm/tpm2/transport/linuxtpm"
)

const (
	headerSize     = 10      // tag(2) size(4) code(4)
	maxResponse    = 1 << 16 // far above any TPM 2.0 response (TPM2_MAX_COMMAND_SIZE is 4 KiB on most parts)
	commandTimeout = 2 * time.Minute
)

// dial connects to the TPM described by cfg.
func dial(cfg Config) (transport.TPMCloser, error) {
	if cfg.Addr != "" {
		return dialConn("tcp", cfg.Addr)
	}
	fi, err := os.Stat(cfg.Path)
	if err != nil {
		return nil, fmt.Errorf("open TPM: %w", err)
	}
	if fi.Mode()&os.ModeSocket != 0 {
		return dialConn("unix", cfg.Path)
	}
	t, err := linuxtpm.Open(cfg.Path)
	if err != nil {
		return nil, fmt.Errorf("open TPM %s: %w", cfg.Path, err)
	}
	return t, nil
}

func dialConn(network, addr string) (transport.TPMCloser, error) {
	c, err := net.DialTimeout(network, addr, 10*time.Second)
	if err != nil {
		return nil, fmt.Errorf("connect to TPM at %s: %w", addr, err)
	}
	return &connTPM{conn: c}, nil
}

// connTPM sends raw TPM 2.0 command frames over a stream connection and
// reads each response whole, using the size in its header (a single Read
// may return part of it).
type connTPM struct {
	mu   sync.Mutex
	conn net.Conn
}

func (c *connTPM) Send(cmd []byte) ([]byte, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if err := c.conn.SetDeadline(time.Now().Add(commandTimeout)); err != nil {
		return nil, fmt.Errorf("TPM connection deadline: %w", err)
	}
	if _, err := c.conn.Write(cmd); err != nil {
		return nil, fmt.Errorf("send TPM command: %w", err)
	}
	hdr := make([]byte, headerSize)
	if _, err := io.ReadFull(c.conn, hdr); err != nil {
		return nil, fmt.Errorf("read TPM response header: %w", err)
	}
	size := binary.BigEndian.Uint32(hdr[2:6])
	if size < headerSize || size > maxResponse {
		return nil, fmt.Errorf("TPM response claims %d bytes", size)
	}
	rsp := make([]byte, size)
	copy(rsp, hdr)
	if _, err := io.ReadFull(c.conn, rsp[headerSize:]); err != nil {
		return nil, fmt.Errorf("read TPM response body: %w", err)
	}
	return rsp, nil
}

func (c *connTPM) Close() error { return c.conn.Close() }

// retryTPM re-sends a command the TPM answered with a warning that means
// "not executed, try again" (TPM_RC_RETRY, YIELDED, TESTING): the TPM did not
// act on it, so the same bytes can be sent again.
type retryTPM struct {
	next     transport.TPMCloser
	attempts int
	backoff  time.Duration
	log      *slog.Logger
}

func withRetry(t transport.TPMCloser, log *slog.Logger) *retryTPM {
	return &retryTPM{next: t, attempts: 10, backoff: 5 * time.Millisecond, log: log}
}

func (r *retryTPM) Send(cmd []byte) ([]byte, error) {
	for attempt := 1; ; attempt++ {
		rsp, err := r.next.Send(cmd)
		if err != nil {
			return nil, err
		}
		rc := responseCode(rsp)
		if !retryable(rc) || attempt == r.attempts {
			return rsp, nil
		}
		r.log.Debug("tpm asked to retry", "code", rc, "attempt", attempt)
		time.Sleep(time.Duration(attempt) * r.backoff)
	}
}

func (r *retryTPM) Close() error { return r.next.Close() }

func responseCode(rsp []byte) tpm2.TPMRC {
	if len(rsp) < headerSize {
		return 0
	}
	return tpm2.TPMRC(binary.BigEndian.Uint32(rsp[6:10]))
}

func retryable(rc tpm2.TPMRC) bool {
	return rc == tpm2.TPMRCRetry || rc == tpm2.TPMRCYielded || rc == tpm2.TPMRCTesting
}
