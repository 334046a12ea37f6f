package gateway

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/tributary-iot/tributary/appapi"
	"github.com/tributary-iot/tributary/bridge"
	"github.com/tributary-iot/tributary/broker"
	"github.com/tributary-iot/tributary/reasoncode"
	"github.com/tributary-iot/tributary/streamr"
)

// APIConfig is the [api] table: the API keys of the app interfaces (HTTP,
// WebSocket, the Streamr node's MQTT topics), like the Streamr node's
// apiAuthentication, and the publish limits they share.
type APIConfig struct {
	Keys           []string `toml:"keys"`            // like the node's apiAuthentication.keys
	KeysFile       string   `toml:"keys_file"`       // one key per line
	KeysCredential string   `toml:"keys_credential"` // systemd credential name (LoadCredential=), one key per line
	// Partitions is the partition count partitionKey and partitionKeyField
	// hash onto (the Streamr node reads it from the stream registry).
	Partitions     int      `toml:"partitions"`
	MaxMessageSize Size     `toml:"max_message_size"` // one published message; HTTP answers 413 beyond it
	PublishTimeout Duration `toml:"publish_timeout"`  // longest wait for a reading to be durable (then 503)
}

// WebSocketConfig is the [websocket] table: the Streamr node's WebSocket
// plugin.
type WebSocketConfig struct {
	Address           string   `toml:"address"`            // "" disables it
	PayloadMetadata   bool     `toml:"payload_metadata"`   // {"content":…,"metadata":…} both ways
	AllowedOrigins    []string `toml:"allowed_origins"`    // browser Origins allowed besides loopback ones; "*" any
	PingInterval      Duration `toml:"ping_interval"`      // server pings an idle connection this often
	DisconnectTimeout Duration `toml:"disconnect_timeout"` // and closes it when no pong comes within this
	WriteTimeout      Duration `toml:"write_timeout"`      // a subscriber not reading this long is disconnected
	MaxConnections    int      `toml:"max_connections"`    // open connections; more get 503
	MaxResend         int      `toml:"max_resend"`         // largest last=N
}

// hasKeys reports whether API keys are configured (from any source).
func (a APIConfig) hasKeys() bool {
	return len(a.Keys) > 0 || a.KeysFile != "" || a.KeysCredential != ""
}

func (c *Config) validateApps() error {
	var errs []error
	check := func(ok bool, format string, args ...any) {
		if !ok {
			errs = append(errs, fmt.Errorf(format, args...))
		}
	}
	a, w := c.API, c.WebSocket
	for i, k := range a.Keys {
		check(strings.TrimSpace(k) != "", "api.keys[%d]: empty key", i)
	}
	check(a.KeysFile == "" || a.KeysCredential == "", "api.keys_file and api.keys_credential: set only one")
	check(a.Partitions >= 1 && a.Partitions <= 100, "api.partitions %d: want 1 to 100", a.Partitions)
	check(a.MaxMessageSize > 0, "api.max_message_size: must be positive")
	check(a.PublishTimeout > 0, "api.publish_timeout: must be positive")
	if w.Address != "" && !a.hasKeys() && !isLoopbackAddress(w.Address) {
		check(false, "websocket.address %q: reachable beyond loopback, and no API keys are set: "+
			"use 127.0.0.1 (or localhost, [::1]) or set api.keys (or api.keys_file, api.keys_credential)", w.Address)
	}
	check(w.PingInterval >= 0 && w.DisconnectTimeout >= 0, "websocket.ping_interval and websocket.disconnect_timeout: must not be negative")
	check(w.WriteTimeout > 0, "websocket.write_timeout: must be positive")
	check(w.MaxConnections > 0, "websocket.max_connections: must be positive")
	check(w.MaxResend > 0, "websocket.max_resend: must be positive")
	return errors.Join(errs...)
}

// apiKeys reads the configured API keys: the list and the file or
// credential together.
func (c *Config) apiKeys() (appapi.Keys, error) {
	keys, err := c.apiKeyList()
	if err != nil {
		return appapi.Keys{}, err
	}
	k, err := appapi.NewKeys(keys)
	if err != nil {
		return appapi.Keys{}, fmt.Errorf("api.keys: %w", err)
	}
	return k, nil
}

// apiKeyList reads the configured API keys.
func (c *Config) apiKeyList() ([]string, error) {
	keys := append([]string(nil), c.API.Keys...)
	path, where := c.API.KeysFile, "api.keys_file"
	if name := c.API.KeysCredential; name != "" {
		where = "api.keys_credential"
		dir := os.Getenv("CREDENTIALS_DIRECTORY")
		if dir == "" {
			return nil, fmt.Errorf("%s %q: $CREDENTIALS_DIRECTORY is not set (add LoadCredential= to the unit)", where, name)
		}
		if strings.ContainsAny(name, `/\`) {
			return nil, fmt.Errorf("%s %q: a credential name has no path separators", where, name)
		}
		path = filepath.Join(dir, name)
	}
	if path != "" {
		data, err := os.ReadFile(path)
		if err != nil {
			return nil, fmt.Errorf("%s: %w", where, err)
		}
		fromFile := appapi.ParseKeyFile(data)
		if len(fromFile) == 0 {
			return nil, fmt.Errorf("%s %s: holds no key", where, path)
		}
		keys = append(keys, fromFile...)
	}
	return keys, nil
}

// publishConfig is the app interfaces' publish side.
func (s *system) publishConfig() appapi.PublishConfig {
	return appapi.PublishConfig{
		Publisher:  s.pipeline,
		Partitions: s.cfg.API.Partitions,
		MaxBody:    int64(s.cfg.API.MaxMessageSize),
		Timeout:    time.Duration(s.cfg.API.PublishTimeout),
		Metrics:    s.appMetrics,
		Logger:     s.log,
	}
}

// addAppRoutes adds the HTTP plugin's publish endpoint to the HTTP API and,
// with API keys, requires one for everything but /healthz.
func (s *system) addAppRoutes(hcfg *bridge.HTTPServerConfig) error {
	pub, err := appapi.NewHTTPPublish(s.publishConfig())
	if err != nil {
		return err
	}
	// The node's route matches with and without the trailing slash.
	hcfg.Routes = map[string]http.Handler{"POST /streams/{id}/{$}": pub, "POST /streams/{id}": pub}
	if s.apiKeys.Enabled() {
		hcfg.Authenticate = s.apiKeys.Authenticate(s.appMetrics)
	}
	return nil
}

// serveWebSocket serves the WebSocket interface until ctx ends.
func (s *system) serveWebSocket(ctx context.Context) error {
	w := s.cfg.WebSocket
	ln, err := net.Listen("tcp", w.Address)
	if err != nil {
		return fmt.Errorf("websocket.address %s: %w", w.Address, err)
	}
	var keys bridge.Decrypter // never a nil *e2ee.Exchange
	if s.e2ee != nil {
		keys = s.e2ee
	}
	srv, err := appapi.NewWSServer(ln, appapi.WSConfig{
		Publish:           s.publishConfig(),
		Decrypter:         keys,
		Log:               s.store,
		Keys:              s.apiKeys,
		PayloadMetadata:   w.PayloadMetadata,
		AllowedOrigins:    w.AllowedOrigins,
		PingInterval:      time.Duration(w.PingInterval),
		DisconnectTimeout: time.Duration(w.DisconnectTimeout),
		WriteTimeout:      time.Duration(w.WriteTimeout),
		MaxConnections:    w.MaxConnections,
		MaxResend:         w.MaxResend,
	})
	if err != nil {
		_ = ln.Close()
		return fmt.Errorf("websocket.address %s: %w", w.Address, err)
	}
	if a, ok := ln.Addr().(*net.TCPAddr); ok {
		s.wsAddr.Store(a)
	}
	s.wsServer.Store(srv)
	defer s.wsServer.Store(nil)
	return srv.Serve(ctx)
}

// notifyApps wakes the WebSocket subscribers: new messages are stored.
func (s *system) notifyApps() {
	if srv := s.wsServer.Load(); srv != nil {
		srv.Notify()
	}
}

// notifyingLog wakes the WebSocket subscribers after the storer commits
// received messages.
type notifyingLog struct {
	bridge.ReceivedLog
	notify func()
}

func (l notifyingLog) StoreReceived(ctx context.Context, msgs []streamr.Envelope, chains map[string]streamr.ChainState) (int, error) {
	n, err := l.ReceivedLog.StoreReceived(ctx, msgs, chains)
	if n > 0 {
		l.notify()
	}
	return n, err
}

// nodeMQTT is the Streamr node MQTT plugin's side of the broker: the API
// keys as passwords (without a users file) and the topics that are stream
// IDs.
func (s *system) nodeMQTT() ([]string, *appapi.NodeTopics, error) {
	m := s.cfg.MQTT
	node := &appapi.NodeTopics{
		Domain:     m.StreamIDDomain,
		Address:    streamr.UserID(s.key.PublisherID()),
		Metadata:   m.PayloadMetadata,
		Partitions: s.cfg.API.Partitions,
	}
	if m.UsersFile != "" || !s.cfg.API.hasKeys() {
		return nil, node, nil
	}
	keys, err := s.cfg.apiKeyList()
	return keys, node, err
}

// nodePublish takes a publish on a Streamr node topic into the pipeline;
// false when the topic is no stream ID (the rules map it).
func (h ingestHandler) nodePublish(m *broker.Message) (broker.Verdict, bool) {
	d, err := h.node.Direct(m.ClientID, m.Topic, m.Payload)
	switch {
	case errors.Is(err, appapi.ErrNotNodeTopic):
		return broker.Verdict{}, false
	case err != nil:
		return broker.Verdict{Code: broker.ReasonCode(reasoncode.PayloadFormatInvalid), Detail: "streamr_node: " + err.Error()}, true
	}
	return verdict(h.p.IngestDirect(d)), true
}
