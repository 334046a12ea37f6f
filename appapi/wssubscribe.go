package appapi

import (
	"context"
	"errors"
	"fmt"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/tributary-iot/tributary/bridge"
	"github.com/tributary-iot/tributary/streamr"
	"github.com/tributary-iot/tributary/wsock"
)

// logPage is how many stored messages a subscriber reads from the log at
// a time: what it holds in memory besides the socket's buffers.
const logPage = 32

// wsSubscriber is a /subscribe connection: what the gateway holds for the
// stream partitions, from storage first when asked (from=, last=), then
// live from the store's log.
type wsSubscriber struct {
	s     *WSServer
	parts []streamr.StreamPartID
	from  int64 // ms; with resume
	last  int   // newest N first; with resume
	// resume is whether from= or last= was given.
	resume bool
	// sent is the newest message sent per chain (part, publisher, chain):
	// a live message at or before it was already sent from history.
	sent map[string]streamr.MessageRef
	// plain decrypts encrypted content; what cannot be is not sent.
	plain *bridge.Plaintext
}

func (s *WSServer) newSubscriber(q url.Values, id string) (*wsSubscriber, error) {
	sub := &wsSubscriber{s: s, sent: map[string]streamr.MessageRef{}, plain: bridge.NewPlaintext(s.cfg.Decrypter)}
	partitions := []int{0}
	if v := q.Get("partitions"); v != "" {
		var err error
		if partitions, err = parsePartitions(v); err != nil {
			return nil, err
		}
	}
	for _, p := range partitions {
		part, err := streamr.NewStreamPartID(streamr.StreamID(id), p)
		if err != nil {
			return nil, err
		}
		sub.parts = append(sub.parts, part)
	}
	_, hasFrom := q["from"]
	_, hasLast := q["last"]
	switch {
	case hasFrom && hasLast:
		return nil, errors.New(`invalid combination of "from" and "last"`)
	case hasFrom:
		ms, err := bridge.ParseTime(q.Get("from"))
		if err != nil || ms < 0 {
			return nil, fmt.Errorf("from %q: want milliseconds since the epoch or RFC 3339", q.Get("from"))
		}
		sub.from, sub.resume = ms, true
	case hasLast:
		n, err := strconv.Atoi(q.Get("last"))
		if err != nil || n < 1 || n > s.cfg.MaxResend {
			return nil, fmt.Errorf("last %q: want an integer from 1 to %d (websocket.max_resend)", q.Get("last"), s.cfg.MaxResend)
		}
		sub.last, sub.resume = n, true
	}
	return sub, nil
}

// parsePartitions reads "0,2,5": distinct partitions 0 to 99.
func parsePartitions(v string) ([]int, error) {
	var out []int
	for _, f := range strings.Split(v, ",") {
		n, err := strconv.Atoi(strings.TrimSpace(f))
		if err != nil || n < 0 || n >= streamr.MaxPartitions {
			return nil, fmt.Errorf("partitions %q: want partitions 0 to %d separated by commas", truncate(v, 100), streamr.MaxPartitions-1)
		}
		if !slices.Contains(out, n) {
			out = append(out, n)
		}
	}
	return out, nil
}

// serve sends history, then live messages, until the connection ends; a
// goroutine reads the app's messages (pings) and notices its close.
func (sub *wsSubscriber) serve(ctx context.Context, c *wsock.Conn) error {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	readErr := make(chan error, 1)
	go func() {
		readErr <- sub.readLoop(c)
		cancel()
	}()
	if err := sub.send(ctx, c); err != nil {
		_ = c.Close()
		<-readErr
		return err
	}
	var rerr error
	select {
	case rerr = <-readErr: // the app closed, or went silent
	default: // the gateway stops: end the read
		_ = c.SetReadDeadline(time.Now())
		<-readErr
		return nil
	}
	if isTimeout(rerr) {
		return &dropError{reason: "dead", err: rerr}
	}
	return nil
}

func isDrop(err error) bool {
	var d *dropError
	return errors.As(err, &d)
}

func isTimeout(err error) bool {
	var t interface{ Timeout() bool }
	return errors.As(err, &t) && t.Timeout()
}

// readLoop answers "ping" with "pong" and ignores other messages.
func (sub *wsSubscriber) readLoop(c *wsock.Conn) error {
	for {
		_, data, err := c.Read()
		if err != nil {
			return err
		}
		if _, err := answerPing(c, data); err != nil {
			return err
		}
	}
}

// send delivers history, then follows the log. The log position is taken
// before history is read, so a message stored meanwhile is in the live
// part: none is missed at the switch, and sent drops those that were in
// both.
func (sub *wsSubscriber) send(ctx context.Context, c *wsock.Conn) error {
	log := sub.s.cfg.Log
	pos := log.LastPos()
	if sub.resume {
		for _, part := range sub.parts {
			if err := sub.history(ctx, c, part); err != nil {
				return err
			}
		}
	}
	tick := time.NewTicker(sub.s.cfg.PollInterval)
	defer tick.Stop()
	for ctx.Err() == nil {
		woken := sub.s.wake.wait()
		page, err := log.After(pos, logPage)
		if err != nil {
			return &dropError{reason: "store", err: err}
		}
		for _, l := range page {
			pos = l.Pos
			if !slices.Contains(sub.parts, l.Part) {
				continue
			}
			if err := sub.deliver(ctx, c, l.Encoded, true); err != nil {
				return err
			}
		}
		if len(page) == logPage {
			continue
		}
		select {
		case <-ctx.Done():
			return nil
		case <-woken:
		case <-tick.C:
		}
	}
	return nil
}

// history sends part's stored messages from sub.from, or its last sub.last.
func (sub *wsSubscriber) history(ctx context.Context, c *wsock.Conn, part streamr.StreamPartID) error {
	q := streamr.ResendQuery{Part: part, From: streamr.MessageRef{Timestamp: sub.from}, To: streamr.MaxRef, Last: sub.last}
	err := bridge.ForEachResend(sub.s.cfg.Log, q, func(encoded []byte) error { return sub.deliver(ctx, c, encoded, false) })
	if err != nil && !isDrop(err) {
		return &dropError{reason: "store", err: err}
	}
	return err
}

// deliver sends one stored message unless it was sent already.
func (sub *wsSubscriber) deliver(ctx context.Context, c *wsock.Conn, encoded []byte, live bool) error {
	m0, err := streamr.Unmarshal(encoded)
	if err != nil {
		return &dropError{reason: "store", err: fmt.Errorf("stored message: %w", err)}
	}
	m := m0
	key := m.ID.StreamPart().String() + "\x00" + m.ID.PublisherHex() + "\x00" + m.ID.MsgChainID
	ref := m.ID.Ref()
	if prev, ok := sub.sent[key]; ok && live && ref.Compare(prev) <= 0 {
		return nil // sent from history already
	}
	if !live {
		sub.sent[key] = ref
	}
	if m, err = sub.plain.Decrypt(ctx, m); err != nil {
		return sub.undecrypted(m0, err)
	}
	payload, ok := subscribePayload(m, sub.s.cfg.PayloadMetadata)
	if !ok {
		return nil // group key traffic or binary content: not for this interface
	}
	if err := c.Write(wsock.Text, payload); err != nil {
		if isTimeout(err) {
			return &dropError{reason: "slow", err: err}
		}
		return err
	}
	sub.s.m.delivered.Inc()
	return nil
}

// undecrypted counts an encrypted message whose key the gateway could not
// obtain: it is skipped, never sent as ciphertext. Only the connection's
// end (ctx) stops the subscriber.
func (sub *wsSubscriber) undecrypted(m *streamr.StreamMessage, err error) error {
	if !errors.Is(err, bridge.ErrUndecrypted) {
		return err
	}
	sub.s.m.undecrypted.Inc()
	sub.s.logs.Warn("undecrypted", "encrypted message not sent to a websocket subscriber", "stream_part", m.ID.StreamPart().String(),
		"publisher", m.ID.PublisherHex(), "message", m.ID.Ref().String(), "err", err)
	return nil
}
