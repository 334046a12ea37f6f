package gateway

import (
	"encoding/binary"
	"fmt"
	"io"
	"sync"
	"time"

	"github.com/dustin/go-humanize"
)

// progressInterval is how often a long export reports its progress.
const progressInterval = 500 * time.Millisecond

// exportProgress counts the raw-format frames ([uint32 length][message])
// written through it and reports them on a terminal line, rewritten in
// place, at most every progressInterval; Done ends the line.
type exportProgress struct {
	w     io.Writer
	to    io.Writer // the terminal
	start time.Time

	mu       sync.Mutex
	messages int64
	bytes    int64
	header   [4]byte
	inHeader int    // header bytes of the current frame seen
	left     uint32 // body bytes of the current frame still to come
	shown    time.Time
}

func newExportProgress(w, terminal io.Writer) *exportProgress {
	now := time.Now()
	return &exportProgress{w: w, to: terminal, start: now, shown: now}
}

func (p *exportProgress) Write(b []byte) (int, error) {
	n, err := p.w.Write(b)
	p.mu.Lock()
	defer p.mu.Unlock()
	p.count(b[:n])
	if time.Since(p.shown) >= progressInterval {
		p.show("\r")
	}
	return n, err
}

// count follows the frame boundaries through b.
func (p *exportProgress) count(b []byte) {
	p.bytes += int64(len(b))
	for len(b) > 0 {
		if p.left > 0 {
			k := min(uint32(len(b)), p.left)
			p.left -= k
			b = b[k:]
			continue
		}
		k := copy(p.header[p.inHeader:], b)
		p.inHeader += k
		b = b[k:]
		if p.inHeader == len(p.header) {
			p.inHeader, p.left = 0, binary.BigEndian.Uint32(p.header[:])
			p.messages++
		}
	}
}

func (p *exportProgress) show(prefix string) {
	p.shown = time.Now()
	secs := max(time.Since(p.start).Seconds(), 0.001)
	fmt.Fprintf(p.to, "%sexported %s messages (%s) in %s, %s msg/s   ", prefix, humanize.Comma(p.messages),
		humanize.IBytes(uint64(p.bytes)), time.Since(p.start).Round(100*time.Millisecond), humanize.Comma(int64(float64(p.messages)/secs)))
}

// Done writes the final count and ends the line.
func (p *exportProgress) Done() {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.show("\r")
	fmt.Fprintln(p.to)
}
