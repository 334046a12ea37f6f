package appapi

import (
	"context"
	"encoding/json"
	"fmt"
	"net/url"

	"github.com/tributary-iot/tributary/streamr"
	"github.com/tributary-iot/tributary/wsock"
)

// maxUnacked bounds a publisher's readings queued but not yet durable;
// beyond it the connection stops reading (TCP backpressure).
const maxUnacked = 256

// wsPublisher is a /publish connection: every text message is a reading,
// in its own message chain.
type wsPublisher struct {
	s      *WSServer
	stream streamr.StreamID
	target target
	source string
}

func (s *WSServer) newPublisher(q url.Values, id string) (*wsPublisher, error) {
	t, err := parseTarget(q)
	if err != nil {
		return nil, err
	}
	return &wsPublisher{s: s, stream: streamr.StreamID(id), target: t, source: newSource()}, nil
}

// serve reads messages until the connection ends. Readings go into the
// pipeline in order; a goroutine waits for each to be durable, so reading
// goes on meanwhile. A reading that cannot be stored ends the connection
// (close code 1011): the app learns that it and what followed may be lost.
func (p *wsPublisher) serve(ctx context.Context, c *wsock.Conn) error {
	waits := make(chan func(context.Context) error, maxUnacked)
	failed := make(chan error, 1)
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	waited := make(chan struct{})
	go func() {
		defer close(waited)
		for wait := range waits {
			err := wait(ctx)
			switch {
			case err == nil:
				p.s.m.published.WithLabelValues(ifaceWS).Inc()
			case ctx.Err() != nil:
				// The gateway stops: the store finishes its appends without us.
			default:
				failed <- &dropError{reason: "store", err: err}
				cancel()
				_ = c.Close() // unblocks the read
				return
			}
		}
	}()
	err := p.readLoop(ctx, c, waits)
	close(waits)
	<-waited
	select {
	case ferr := <-failed:
		return ferr
	default:
	}
	switch {
	case wsock.IsNormalClose(err) || ctx.Err() != nil:
		return nil
	case isTimeout(err):
		return &dropError{reason: "dead", err: err}
	}
	return err
}

func (p *wsPublisher) readLoop(ctx context.Context, c *wsock.Conn, waits chan<- func(context.Context) error) error {
	for {
		_, data, err := c.Read()
		if err != nil {
			return err
		}
		if ping, err := answerPing(c, data); ping || err != nil {
			if err != nil {
				return err
			}
			continue
		}
		wait, perr := p.ingest(data)
		if perr != nil {
			p.s.m.refused.WithLabelValues(ifaceWS, perr.reason).Inc()
			p.s.logs.Warn("publish_"+perr.reason, "websocket reading refused", "stream", string(p.stream), "reason", perr.reason, "err", perr.err)
			if perr.status >= 500 {
				return &dropError{reason: "store", err: perr}
			}
			if err := writeErrorMessage(c, perr); err != nil {
				return err
			}
			continue
		}
		select {
		case waits <- wait:
		case <-ctx.Done():
			return nil
		}
	}
}

// ingest decodes one message and queues it in the pipeline.
func (p *wsPublisher) ingest(data []byte) (func(context.Context) error, *publishError) {
	cfg := &p.s.cfg.Publish
	m, err := decodePayload(data, p.s.cfg.PayloadMetadata)
	if err != nil {
		return nil, refusal(400, "invalid_json", err)
	}
	part := streamr.StreamPartID{Stream: p.stream}
	if part.Partition, err = p.target.resolve(m.content, cfg.Partitions); err != nil {
		return nil, refusal(400, "bad_request", err)
	}
	if perr := cfg.checkPublish(p.s.ctx, p.stream); perr != nil {
		return nil, perr
	}
	wait, reason := cfg.Publisher.IngestDirect(directFor(p.source, part, m))
	if reason != nil {
		return nil, refusalFor(reason)
	}
	return wait, nil
}

// writeErrorMessage tells the app why a message was refused, as
// {"error": "..."}; the connection stays open, as the node's does.
func writeErrorMessage(c *wsock.Conn, perr *publishError) error {
	b, err := json.Marshal(struct {
		Error string `json:"error"`
	}{perr.Error()})
	if err != nil {
		return fmt.Errorf("encode error message: %w", err)
	}
	return c.Write(wsock.Text, b)
}

// answerPing answers the node's application-level "ping" with "pong"
// (browsers cannot send WebSocket pings); ping says whether data was one.
func answerPing(c *wsock.Conn, data []byte) (ping bool, err error) {
	if string(data) != "ping" {
		return false, nil
	}
	return true, c.Write(wsock.Text, []byte("pong"))
}
