package tpm

import (
	"fmt"
	"log/slog"
	"net/url"
	"slices"
	"strconv"
	"strings"
)

// KeyType is the kind of key kept with the TPM's help.
type KeyType string

// Key types. Secp256k1 is sealed (the key is in RAM while the gateway runs);
// P256 never leaves the TPM.
const (
	Secp256k1 KeyType = "secp256k1"
	P256      KeyType = "p256"
)

// DefaultDevice is the kernel's TPM resource manager: it keeps each client's
// transient objects apart and flushes them when the client exits.
const DefaultDevice = "/dev/tpmrm0"

// DefaultBlob is the blob file name used when the URI gives none.
const DefaultBlob = "key.tpm"

// maxPCR is the highest PCR index of a PC Client TPM.
const maxPCR = 23

// Config says which TPM, which key type and where the wrapped key lives.
type Config struct {
	Path   string       // TPM device or unix socket; if empty and Addr is empty, DefaultDevice
	Addr   string       // host:port of a simulator speaking raw TPM frames; overrides Path
	Type   KeyType      // if empty, Secp256k1
	Blob   string       // blob file holding the TPM-wrapped key (caller resolves relative paths)
	PCRs   []int        // SHA-256 PCRs the sealed secp256k1 key is bound to; none if empty
	Logger *slog.Logger // if nil, logs are discarded
}

// ParseURI reads a key URI:
//
//	tpm:///dev/tpmrm0?type=secp256k1&blob=key.tpm&pcrs=7,14
//	tpm:///run/swtpm/tpm.sock?type=p256
//	tpm://127.0.0.1:2321?type=p256&blob=/var/lib/tributary/p256.tpm
//	tpm:?type=p256                       (default device)
//
// type defaults to secp256k1 and blob to DefaultBlob.
func ParseURI(uri string) (Config, error) {
	u, err := url.Parse(uri)
	if err != nil {
		return Config{}, fmt.Errorf("TPM key URI: %w", err)
	}
	if u.Scheme != "tpm" {
		return Config{}, fmt.Errorf("TPM key URI %q: scheme must be tpm", uri)
	}
	cfg := Config{Addr: u.Host, Path: u.Path, Type: Secp256k1, Blob: DefaultBlob}
	if u.Opaque != "" {
		return Config{}, fmt.Errorf("TPM key URI %q: write tpm:///path for a device", uri)
	}
	if cfg.Addr == "" && cfg.Path == "" {
		cfg.Path = DefaultDevice
	}
	if cfg.Addr != "" && cfg.Path != "" && cfg.Path != "/" {
		return Config{}, fmt.Errorf("TPM key URI %q: give either a host:port or a device path", uri)
	}
	q := u.Query()
	for name := range q {
		if !slices.Contains([]string{"type", "blob", "pcrs"}, name) {
			return Config{}, fmt.Errorf("TPM key URI %q: unknown parameter %q (want type, blob, pcrs)", uri, name)
		}
	}
	if t := q.Get("type"); t != "" {
		cfg.Type = KeyType(strings.ToLower(t))
	}
	if b := q.Get("blob"); b != "" {
		cfg.Blob = b
	}
	if p := q.Get("pcrs"); p != "" {
		if cfg.PCRs, err = parsePCRs(p); err != nil {
			return Config{}, fmt.Errorf("TPM key URI %q: %w", uri, err)
		}
	}
	return cfg, cfg.validate()
}

func parsePCRs(s string) ([]int, error) {
	var pcrs []int
	for f := range strings.SplitSeq(s, ",") {
		n, err := strconv.Atoi(strings.TrimSpace(f))
		if err != nil || n < 0 || n > maxPCR {
			return nil, fmt.Errorf("pcrs: %q is not a PCR index 0-%d", f, maxPCR)
		}
		if !slices.Contains(pcrs, n) {
			pcrs = append(pcrs, n)
		}
	}
	slices.Sort(pcrs)
	return pcrs, nil
}

func (c Config) validate() error {
	switch c.Type {
	case Secp256k1, "":
	case P256:
		if len(c.PCRs) > 0 {
			return fmt.Errorf("TPM key: pcrs apply only to the sealed secp256k1 key, not to type p256")
		}
	default:
		return fmt.Errorf("TPM key type %q: want secp256k1 or p256", c.Type)
	}
	if c.Blob == "" {
		return fmt.Errorf("TPM key: no blob file")
	}
	for _, p := range c.PCRs {
		if p < 0 || p > maxPCR {
			return fmt.Errorf("TPM key: PCR %d out of range 0-%d", p, maxPCR)
		}
	}
	return nil
}

func (c Config) keyType() KeyType {
	if c.Type == "" {
		return Secp256k1
	}
	return c.Type
}

func (c Config) logger() *slog.Logger {
	if c.Logger == nil {
		return slog.New(slog.DiscardHandler)
	}
	return c.Logger
}

func (c Config) where() string {
	if c.Addr != "" {
		return c.Addr
	}
	if c.Path == "" {
		return DefaultDevice
	}
	return c.Path
}
