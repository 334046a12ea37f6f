package gateway

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"net/http"
	"net/url"
	"os"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/tributary-iot/tributary/bridge"
	"github.com/tributary-iot/tributary/e2ee"
	"github.com/tributary-iot/tributary/hw"
	"github.com/tributary-iot/tributary/storage"
	"github.com/tributary-iot/tributary/streamr"
)

// ExportFile is `bridge export`: it writes the stored messages q selects
// in Streamr raw format to the file at path, or to stdout if path is "",
// and explains on stderr an export that writes nothing. A file is removed
// when the export fails, unless it holds what was signed (see
// UnsignedExportError). With progress (a terminal) it reports how many
// messages went out, twice a second, on one line rewritten in place.
func ExportFile(ctx context.Context, cfg *Config, q streamr.ResendQuery, path string, stdout, stderr, progress io.Writer) error {
	return exportFile(ctx, cfg, q, path, false, stdout, stderr, progress)
}

// ExportDecryptedFile is `bridge export --decrypt`: ExportFile with AES
// content decrypted by the group keys stored here (this gateway's own and
// those it received), written with encryption type NONE. Their signatures
// cover the ciphertext, so decrypted messages no longer verify: the
// output is for the keys' holders, not for republishing. It reads the
// store, so the gateway must be stopped.
func ExportDecryptedFile(ctx context.Context, cfg *Config, q streamr.ResendQuery, path string, stdout, stderr, progress io.Writer) error {
	return exportFile(ctx, cfg, q, path, true, stdout, stderr, progress)
}

func exportFile(ctx context.Context, cfg *Config, q streamr.ResendQuery, path string, decrypt bool, stdout, stderr, progress io.Writer) error {
	out, finish, err := openOutput(path, stdout)
	if err != nil {
		return err
	}
	if progress != nil {
		p := newExportProgress(out, progress)
		defer p.Done()
		out = p
	}
	err = export(ctx, cfg, q, decrypt, out, stderr)
	var unsigned *UnsignedExportError
	keep := err == nil || errors.As(err, &unsigned) // what is signed is exported
	return errors.Join(err, finish(keep))
}

// ExportQuery is the query of `bridge export`: a stream partition and a
// range of timestamps, each in milliseconds since the epoch or RFC 3339
// ("" for no bound).
func ExportQuery(stream string, partition int, from, to string) (streamr.ResendQuery, error) {
	if stream == "" {
		return streamr.ResendQuery{}, errors.New("--stream is required")
	}
	id, err := streamr.ParseStreamID(stream)
	if err != nil {
		return streamr.ResendQuery{}, err
	}
	part, err := streamr.NewStreamPartID(id, partition)
	if err != nil {
		return streamr.ResendQuery{}, err
	}
	q := streamr.ResendQuery{Part: part, To: streamr.MaxRef}
	if q.From.Timestamp, err = bridge.ParseTime(from); err != nil {
		return q, fmt.Errorf("--from: %w", err)
	}
	if to != "" {
		if q.To.Timestamp, err = bridge.ParseTime(to); err != nil {
			return q, fmt.Errorf("--to: %w", err)
		}
	}
	return q, nil
}

// export reads the store in cfg's state directory, after signing the
// readings a stopped gateway left pending. Badger admits one process at a
// time, so while the gateway runs it asks that gateway's HTTP API instead
// (exportRunning), never another: whatever answers on http.address may
// be a gateway on another state directory.
func export(ctx context.Context, cfg *Config, q streamr.ResendQuery, decrypt bool, out io.Writer, stderr io.Writer) error {
	if _, err := os.Stat(storageDir(cfg)); errors.Is(err, fs.ErrNotExist) && cfg.HTTP.Address != "" && !decrypt {
		// No store here: this is not where the gateway keeps its state
		// (outside its systemd unit, a config without state_dir resolves
		// to ./bridge-data, not the service's $STATE_DIRECTORY), so the
		// gateway at http.address is the one meant; nothing to check it by.
		fmt.Fprintf(stderr, "export: no store in state_dir %s: exporting from the gateway at http.address %s\n", cfg.StateDir, cfg.HTTP.Address)
		return exportServed(ctx, cfg, q, out, stderr)
	}
	store, err := storage.Open(storage.Options{Dir: storageDir(cfg), Logger: slog.New(slog.DiscardHandler)})
	if err != nil && decrypt { // --decrypt needs the keys in storage
		return fmt.Errorf("export --decrypt reads the group keys from storage, so the gateway must be stopped: %w", err)
	}
	if errors.Is(err, storage.ErrLocked) {
		return exportRunning(ctx, cfg, q, out, stderr)
	}
	if errors.Is(err, fs.ErrPermission) && cfg.HTTP.Address != "" {
		// An operator without rights to a service's state directory: the
		// gateway's HTTP API is the only way, and who answers cannot be
		// checked against a directory that cannot be read.
		fmt.Fprintf(stderr, "export: cannot read state_dir %s (%v): exporting from the gateway at http.address %s without checking that it runs there\n",
			cfg.StateDir, err, cfg.HTTP.Address)
		return exportServed(ctx, cfg, q, out, stderr)
	}
	if err != nil {
		return fmt.Errorf("export: open storage: %w", err)
	}
	defer store.Close()
	signErr := signPending(ctx, cfg, store, q.Part, stderr)
	var unsigned *UnsignedExportError
	if signErr != nil && !errors.As(signErr, &unsigned) {
		return signErr
	}
	cw := &countingWriter{w: out}
	write := func() error { return bridge.WriteResend(store, q, streamr.NewRawWriter(cw)) }
	if decrypt {
		secrets, err := exportSecrets(ctx, cfg, store, stderr)
		if err != nil {
			return err
		}
		write = func() error { return writeDecrypted(store, secrets, q, streamr.NewRawWriter(cw), stderr) }
	}
	if err := write(); err != nil {
		return fmt.Errorf("export %s: %w", q.Part, err)
	}
	if cw.n == 0 && (unsigned == nil || unsigned.InPart == 0) {
		if err := reportEmpty(store, q.Part, stderr); err != nil {
			return errors.Join(err, signErr)
		}
	}
	return signErr
}

// exportRunning exports through the HTTP API of the gateway running on
// cfg's state directory, once it has checked that this gateway is the one
// answering on cfg's http.address.
func exportRunning(ctx context.Context, cfg *Config, q streamr.ResendQuery, out io.Writer, stderr io.Writer) error {
	if cfg.HTTP.Address == "" {
		return fmt.Errorf("export: a running gateway holds the storage in %s, and http.address is empty in this config: stop the gateway, or export through its HTTP API", storageDir(cfg))
	}
	if err := checkServer(ctx, cfg); err != nil {
		return err
	}
	return exportServed(ctx, cfg, q, out, stderr)
}

// exportServed exports through the HTTP API at cfg's http.address.
func exportServed(ctx context.Context, cfg *Config, q streamr.ResendQuery, out io.Writer, stderr io.Writer) error {
	n, err := exportHTTP(ctx, cfg, q, out)
	if err == nil && n == 0 {
		err = reportEmptyHTTP(ctx, cfg, q.Part, stderr)
	}
	return err
}

// checkServer checks that the gateway answering on cfg's http.address
// runs on cfg's state directory: a gateway on another state directory
// (its config changed the address, or the port was free when it started)
// would answer with its own messages.
func checkServer(ctx context.Context, cfg *Config) error {
	address := cfg.HTTP.Address
	running, err := runningIdentity(ctx, cfg)
	if err != nil {
		return fmt.Errorf("export: a running gateway holds the storage in %s; asking the gateway at http.address %s who it is: %w", storageDir(cfg), address, err)
	}
	own, err := ownIdentity(ctx, cfg, running.PeerID != "")
	if err != nil {
		return fmt.Errorf("export: cannot check that the gateway at http.address %s runs on state_dir %s: %w", address, cfg.StateDir, err)
	}
	if own.matches(running) {
		return nil
	}
	byPeer := own.PeerID != ""
	return fmt.Errorf("export: the gateway answering on http.address %s is not the one running on state_dir %s: it has %s, the gateway on state_dir %s has %s and listens elsewhere; set http.address to its address, or stop it to export from storage",
		address, cfg.StateDir, running.brief(byPeer), cfg.StateDir, own.brief(byPeer))
}

// exportSecrets opens the sealed secrets for export --decrypt: the data
// key needs the gateway key.
func exportSecrets(ctx context.Context, cfg *Config, store *storage.Store, stderr io.Writer) (e2ee.Secrets, error) {
	log := slog.New(slog.NewTextHandler(stderr, &slog.HandlerOptions{Level: slog.LevelWarn}))
	key, err := openKey(ctx, cfg, log)
	if err != nil {
		return nil, fmt.Errorf("export --decrypt opens the group keys with the gateway key: %w", err)
	}
	defer key.Close()
	return sealedSecrets(ctx, cfg, key, store, log)
}

// signPending signs the readings a stopped gateway left pending (after
// kill -9 or a power cut), with the gateway key and the signer `run` uses,
// so the chains continue without a fork when the gateway starts again.
// Without the key it returns an *UnsignedExportError counting them.
func signPending(ctx context.Context, cfg *Config, store *storage.Store, part streamr.StreamPartID, stderr io.Writer) error {
	if store.PendingCount() == 0 {
		return nil
	}
	log := slog.New(slog.NewTextHandler(stderr, &slog.HandlerOptions{Level: slog.LevelWarn}))
	key, err := openKey(ctx, cfg, log)
	if err == nil {
		defer key.Close()
		err = drainWith(ctx, cfg, store, key, log, stderr)
	}
	if err == nil {
		return nil
	}
	counts, cerr := store.PendingByPart()
	if cerr != nil {
		return errors.Join(err, cerr)
	}
	e := &UnsignedExportError{Part: part, InPart: counts[part], Reason: err}
	for _, n := range counts {
		e.Total += n
	}
	return e
}

// UnsignedExportError reports the stored readings an export could not
// sign, which it therefore left out.
type UnsignedExportError struct {
	Total, InPart int // unsigned readings in all, and in the exported partition
	Part          streamr.StreamPartID
	Reason        error
}

func (e *UnsignedExportError) Error() string {
	return fmt.Sprintf("export: %d stored readings are not signed yet, %d of them in stream partition %s, and are left out: %v",
		e.Total, e.InPart, e.Part, e.Reason)
}

func (e *UnsignedExportError) Unwrap() error { return e.Reason }

// ExitCode is the process exit status for this error.
func (e *UnsignedExportError) ExitCode() int { return ExitUnsigned }

// drainWith signs every pending reading of store with key.
func drainWith(ctx context.Context, cfg *Config, store *storage.Store, key hw.Key, log *slog.Logger, stderr io.Writer) error {
	rules, err := cfg.compileRules()
	if err != nil {
		return err
	}
	p, err := bridge.New(bridge.Config{
		Rules:        rules,
		Signer:       key,
		Log:          store,
		HoldUnsynced: cfg.Signing.OnUnsyncedClock == "hold",
		Logger:       log,
	})
	if err != nil {
		return err
	}
	n, err := p.Drain(ctx)
	if n > 0 {
		fmt.Fprintf(stderr, "export: signed %d readings the gateway had stored but not signed yet\n", n)
	}
	return err
}

// reportEmpty says on stderr why an export of a stopped gateway wrote
// nothing.
func reportEmpty(store *storage.Store, part streamr.StreamPartID, stderr io.Writer) error {
	parts, err := store.Parts()
	if err != nil {
		return err
	}
	names := make([]string, len(parts))
	for i, p := range parts {
		names[i] = p.String()
	}
	return explainEmpty(names, part, stderr)
}

// reportEmptyHTTP is reportEmpty for a running gateway, which lists its
// stream partitions at /streams.
func reportEmptyHTTP(ctx context.Context, cfg *Config, part streamr.StreamPartID, stderr io.Writer) error {
	address := cfg.HTTP.Address
	req, err := newAPIRequest(ctx, cfg, http.MethodGet, "http://"+address+"/streams")
	if err != nil {
		return err
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return fmt.Errorf("list stream partitions of the bridge at %s: %w", address, err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("list stream partitions of the bridge at %s: %s", address, resp.Status)
	}
	var parts []bridge.StoredPart
	if err := json.NewDecoder(resp.Body).Decode(&parts); err != nil {
		return fmt.Errorf("list stream partitions of the bridge at %s: %w", address, err)
	}
	names := make([]string, len(parts))
	for i, p := range parts {
		names[i] = p.StreamPart
	}
	return explainEmpty(names, part, stderr)
}

// explainEmpty says why an export wrote nothing, given the stream
// partitions that hold messages. A partition that holds none is an error,
// so that a mistyped stream ID does not look like an empty stream.
func explainEmpty(names []string, part streamr.StreamPartID, stderr io.Writer) error {
	if slices.Contains(names, part.String()) {
		fmt.Fprintf(stderr, "export: stream partition %s holds no messages in this range\n", part)
		return nil
	}
	if len(names) == 0 {
		return fmt.Errorf("export: stream partition %s holds no messages: this gateway holds no messages at all", part)
	}
	return fmt.Errorf("export: stream partition %s holds no messages on this gateway (check the stream ID and --partition); it holds: %s",
		part, strings.Join(names, ", "))
}

// countingWriter counts the bytes written through it.
type countingWriter struct {
	w io.Writer
	n int64
}

func (c *countingWriter) Write(b []byte) (int, error) {
	n, err := c.w.Write(b)
	c.n += int64(n)
	return n, err
}

// APIKey is the key the gateway's own commands (export, status, rekey) send
// to its HTTP API: the first configured key, or "" when keys are off.
func (c *Config) APIKey() (string, error) {
	if !c.API.hasKeys() {
		return "", nil
	}
	keys, err := c.apiKeyList()
	if err != nil || len(keys) == 0 {
		return "", err
	}
	return keys[0], nil
}

// newAPIRequest is a request to the gateway's own HTTP API, with the first API
// key when keys are configured.
func newAPIRequest(ctx context.Context, cfg *Config, method, u string) (*http.Request, error) {
	req, err := http.NewRequestWithContext(ctx, method, u, nil)
	if err != nil {
		return nil, err
	}
	key, err := cfg.APIKey()
	if err != nil {
		return nil, err
	}
	if key != "" {
		req.Header.Set("Authorization", "Bearer "+key)
	}
	return req, nil
}

func exportHTTP(ctx context.Context, cfg *Config, q streamr.ResendQuery, out io.Writer) (int64, error) {
	address := cfg.HTTP.Address
	v := url.Values{}
	v.Set("format", "raw")
	v.Set("fromTimestamp", strconv.FormatInt(q.From.Timestamp, 10))
	v.Set("fromSequenceNumber", "0")
	v.Set("toTimestamp", strconv.FormatInt(q.To.Timestamp, 10))
	u := fmt.Sprintf("http://%s/streams/%s/data/partitions/%d/range?%s",
		address, url.PathEscape(string(q.Part.Stream)), q.Part.Partition, v.Encode())
	ctx, cancel := context.WithTimeout(ctx, 10*time.Minute)
	defer cancel()
	req, err := newAPIRequest(ctx, cfg, http.MethodGet, u)
	if err != nil {
		return 0, err
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return 0, fmt.Errorf("export from bridge at %s: %w", address, err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		msg, _ := io.ReadAll(io.LimitReader(resp.Body, 1024))
		return 0, fmt.Errorf("export from bridge at %s: %s: %s", address, resp.Status, msg)
	}
	n, err := io.Copy(out, resp.Body)
	if err != nil {
		return n, fmt.Errorf("export from bridge at %s: %w", address, err)
	}
	return n, nil
}

// openOutput returns a buffered writer to path (or stdout) and a function
// that flushes and closes it; on failure a partial file is removed.
func openOutput(path string, stdout io.Writer) (io.Writer, func(ok bool) error, error) {
	if path == "" {
		bw := bufio.NewWriter(stdout)
		return bw, func(bool) error { return bw.Flush() }, nil
	}
	f, err := os.Create(path)
	if err != nil {
		return nil, nil, fmt.Errorf("export: %w", err)
	}
	bw := bufio.NewWriter(f)
	finish := func(ok bool) error {
		err := errors.Join(bw.Flush(), f.Close())
		if !ok || err != nil {
			_ = os.Remove(path)
		}
		return err
	}
	return bw, finish, nil
}
