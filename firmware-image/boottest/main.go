// Command boottest is the host side of firmware-image/test-boot.sh: it publishes a reading with QoS 1
// to the booted image's MQTT port and waits for the PUBACK, and it verifies what `bridge export`
// printed inside the guest: Streamr raw frames, correctly signed by the gateway, carrying the reading.
//
//	boottest publish -addr 127.0.0.1:PORT -topic T -payload JSON
//	boottest verify -in EXPORT.b64 -payload JSON -publisher 0xADDRESS
package main

import (
	"bytes"
	"encoding/base64"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"strings"
	"time"

	mqtt "github.com/eclipse/paho.mqtt.golang"

	"github.com/tributary-iot/tributary/streamr"
)

func main() {
	if err := run(os.Args[1:], os.Stdout); err != nil {
		fmt.Fprintln(os.Stderr, "boottest:", err)
		os.Exit(1)
	}
}

func run(args []string, stdout io.Writer) error {
	if len(args) == 0 {
		return errors.New("want a command: publish or verify")
	}
	fs := flag.NewFlagSet("boottest "+args[0], flag.ContinueOnError)
	switch args[0] {
	case "publish":
		addr := fs.String("addr", "", "MQTT broker host:port")
		topic := fs.String("topic", "", "topic")
		payload := fs.String("payload", "", "payload")
		timeout := fs.Duration("timeout", 60*time.Second, "connect and PUBACK timeout")
		if err := fs.Parse(args[1:]); err != nil {
			return err
		}
		if err := publish(*addr, *topic, []byte(*payload), *timeout); err != nil {
			return err
		}
		fmt.Fprintf(stdout, "PUBACK received for %s\n", *topic)
		return nil
	case "verify":
		in := fs.String("in", "", "file with the base64 of the exported raw frames")
		payload := fs.String("payload", "", "expected content of one message")
		publisher := fs.String("publisher", "", "expected publisher ID (0x address)")
		if err := fs.Parse(args[1:]); err != nil {
			return err
		}
		b64, err := os.ReadFile(*in)
		if err != nil {
			return err
		}
		m, err := verify(b64, []byte(*payload), *publisher)
		if err != nil {
			return fmt.Errorf("%s: %w", *in, err)
		}
		fmt.Fprintf(stdout, "verified %s message %d from %s on %s\n", m.SignatureType, m.ID.Timestamp, *publisher, m.ID.StreamID)
		return nil
	}
	return fmt.Errorf("unknown command %q", args[0])
}

// publish sends one QoS 1 message and returns once the broker acknowledged it.
func publish(addr, topic string, payload []byte, timeout time.Duration) error {
	opts := mqtt.NewClientOptions().AddBroker("tcp://" + addr).SetClientID("boottest").
		SetConnectTimeout(timeout).SetAutoReconnect(false)
	c := mqtt.NewClient(opts)
	if tok := c.Connect(); !tok.WaitTimeout(timeout) || tok.Error() != nil {
		return fmt.Errorf("connect to %s: %v", addr, tokenErr(tok))
	}
	defer c.Disconnect(250)
	tok := c.Publish(topic, 1, false, payload)
	if !tok.WaitTimeout(timeout) || tok.Error() != nil {
		return fmt.Errorf("publish QoS 1 to %s on %s: %v", topic, addr, tokenErr(tok))
	}
	return nil
}

func tokenErr(tok mqtt.Token) error {
	if err := tok.Error(); err != nil {
		return err
	}
	return errors.New("timed out")
}

// verify decodes the exported frames and returns the message carrying payload, after checking that
// every message is signed correctly by publisher.
func verify(b64, payload []byte, publisher string) (*streamr.StreamMessage, error) {
	raw, err := base64.StdEncoding.DecodeString(strings.TrimSpace(string(b64)))
	if err != nil {
		return nil, fmt.Errorf("decode base64: %w", err)
	}
	rr := streamr.NewRawReader(bytes.NewReader(raw), 1<<20)
	var found *streamr.StreamMessage
	for n := 0; ; n++ {
		m, err := rr.Read()
		if errors.Is(err, io.EOF) {
			if n == 0 {
				return nil, errors.New("export holds no messages")
			}
			break
		}
		if err != nil {
			return nil, fmt.Errorf("message %d: %w", n, err)
		}
		if err := streamr.VerifySignature(m); err != nil {
			return nil, fmt.Errorf("message %d: %w", n, err)
		}
		if got := streamr.UserID(m.ID.PublisherID); !strings.EqualFold(got, publisher) {
			return nil, fmt.Errorf("message %d: publisher %s, want %s", n, got, publisher)
		}
		if c := m.Content(); c != nil && bytes.Equal(c.Content, payload) {
			found = m
		}
	}
	if found == nil {
		return nil, fmt.Errorf("no message carries the payload %q", payload)
	}
	return found, nil
}
