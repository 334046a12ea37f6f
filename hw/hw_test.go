package hw

import (
	"context"
	"encoding/json"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/ethereum/go-ethereum/crypto"
	"go.uber.org/goleak"

	"github.com/tributary-iot/tributary/hw/internal/signtest"
	"github.com/tributary-iot/tributary/streamr"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

func TestScheme(t *testing.T) {
	tests := []struct {
		uri, want string
	}{
		{"file:///var/lib/tributary/key", "file"},
		{"FILE:key", "file"},
		{"/var/lib/tributary/key", ""},
		{"./a:b", ""},
		{"key", ""},
		{"tpm:///dev/tpmrm0", "tpm"},
		{"pkcs11:token=gw;object=k", "pkcs11"},
		{"ecc://i2c-1:96?slot=0", "ecc"},
	}
	for _, tt := range tests {
		t.Run(tt.uri, func(t *testing.T) {
			if got := scheme(tt.uri); got != tt.want {
				t.Errorf("scheme(%q) = %q, want %q", tt.uri, got, tt.want)
			}
		})
	}
}

func TestFilePath(t *testing.T) {
	opts := Options{StateDir: "/state"}
	tests := []struct {
		uri, want string
		wantErr   bool
	}{
		{uri: "file:///etc/tributary/key", want: "/etc/tributary/key"},
		{uri: "file://localhost/etc/key", want: "/etc/key"},
		{uri: "file:key", want: "/state/key"},
		{uri: "file:keys/k1", want: "/state/keys/k1"},
		{uri: "key", want: "/state/key"},
		{uri: "/abs/key", want: "/abs/key"},
		{uri: "file://otherhost/key", wantErr: true},
		{uri: "file:///key?mode=x", wantErr: true},
		{uri: "file://", wantErr: true},
	}
	for _, tt := range tests {
		t.Run(tt.uri, func(t *testing.T) {
			got, err := filePath(tt.uri, opts)
			if tt.wantErr {
				if !errors.Is(err, ErrBadURI) {
					t.Fatalf("filePath(%q) = %q, %v; want ErrBadURI", tt.uri, got, err)
				}
				return
			}
			if err != nil || got != tt.want {
				t.Fatalf("filePath(%q) = %q, %v; want %q", tt.uri, got, err, tt.want)
			}
		})
	}
}

func TestUnknownScheme(t *testing.T) {
	_, err := Open(context.Background(), "yubikey://1", Options{})
	if !errors.Is(err, ErrBadURI) {
		t.Fatalf("Open(yubikey://1) error = %v, want ErrBadURI", err)
	}
}

// passphraseCase sets up one way of supplying a passphrase.
type passphraseCase struct {
	name  string
	setup func(t *testing.T, dir string) Options
}

func passphraseCases() []passphraseCase {
	env := func(vars map[string]string) func(string) string {
		return func(k string) string { return vars[k] }
	}
	return []passphraseCase{
		{"plain", func(t *testing.T, dir string) Options { return Options{StateDir: dir} }},
		{"file", func(t *testing.T, dir string) Options {
			p := filepath.Join(dir, "pass")
			writeFile(t, p, "correct horse\n", 0o600)
			return Options{StateDir: dir, Passphrase: PassphraseSource{File: p}}
		}},
		{"env", func(t *testing.T, dir string) Options {
			return Options{StateDir: dir, Passphrase: PassphraseSource{Env: "TRIB_PASS"},
				Getenv: env(map[string]string{"TRIB_PASS": "battery staple"})}
		}},
		{"credential", func(t *testing.T, dir string) Options {
			creds := filepath.Join(dir, "creds")
			writeFile(t, filepath.Join(creds, "bridge-key"), "s3cret\r\n", 0o600)
			return Options{StateDir: dir, Passphrase: PassphraseSource{Credential: "bridge-key"},
				Getenv: env(map[string]string{"CREDENTIALS_DIRECTORY": creds})}
		}},
	}
}

func TestFileCreateOpenSign(t *testing.T) {
	for _, pc := range passphraseCases() {
		t.Run(pc.name, func(t *testing.T) {
			dir := t.TempDir()
			opts := pc.setup(t, dir)
			ctx := context.Background()
			uri := DefaultURI(dir)

			created, err := Create(ctx, uri, opts)
			if err != nil {
				t.Fatalf("Create: %v", err)
			}
			defer created.Close()
			if _, err := Create(ctx, uri, opts); !errors.Is(err, ErrKeyExists) {
				t.Fatalf("second Create error = %v, want ErrKeyExists", err)
			}
			opened, err := Open(ctx, uri, opts)
			if err != nil {
				t.Fatalf("Open: %v", err)
			}
			defer opened.Close()
			if got, want := Describe(opened), Describe(created); got != want {
				t.Fatalf("opened key %s, created %s", got, want)
			}
			signtest.Messages(t, opened, "file-"+pc.name, 3)
			checkFileFormat(t, filepath.Join(dir, "key"), !opts.Passphrase.IsZero())
		})
	}
}

// checkFileFormat checks mode 0600 and the on-disk format: a keystore v3
// with light scrypt parameters when encrypted, hex otherwise.
func checkFileFormat(t *testing.T, path string, encrypted bool) {
	t.Helper()
	info, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	if perm := info.Mode().Perm(); perm != 0o600 {
		t.Errorf("key file mode %04o, want 0600", perm)
	}
	raw, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	if !encrypted {
		if len(strings.TrimSpace(string(raw))) != 64 {
			t.Errorf("plain key file is %q..., want 64 hex digits", raw[:8])
		}
		return
	}
	var ks struct {
		Version int `json:"version"`
		Crypto  struct {
			KDF       string `json:"kdf"`
			KDFParams struct {
				N int `json:"n"`
			} `json:"kdfparams"`
		} `json:"crypto"`
	}
	if err := json.Unmarshal(raw, &ks); err != nil {
		t.Fatalf("keystore JSON: %v", err)
	}
	if ks.Version != 3 || ks.Crypto.KDF != "scrypt" || ks.Crypto.KDFParams.N != 1<<12 {
		t.Errorf("keystore version %d kdf %s n %d, want 3 scrypt 4096", ks.Version, ks.Crypto.KDF, ks.Crypto.KDFParams.N)
	}
}

func TestFileImport(t *testing.T) {
	for _, pc := range passphraseCases() {
		t.Run(pc.name, func(t *testing.T) {
			dir := t.TempDir()
			opts := pc.setup(t, dir)
			priv, err := crypto.GenerateKey()
			if err != nil {
				t.Fatal(err)
			}
			want := streamr.NewEVMKey(priv).Address()
			k, err := Import(context.Background(), "file:imported", crypto.FromECDSA(priv), opts)
			if err != nil {
				t.Fatalf("Import: %v", err)
			}
			k.Close()
			k, err = Open(context.Background(), filepath.Join(dir, "imported"), opts)
			if err != nil {
				t.Fatalf("Open imported: %v", err)
			}
			defer k.Close()
			if got := k.PublisherID(); string(got) != string(want[:]) {
				t.Fatalf("imported key has publisher %x, want %x", got, want)
			}
		})
	}
}

func TestFileOpenErrors(t *testing.T) {
	dir := t.TempDir()
	passFile := filepath.Join(dir, "pass")
	writeFile(t, passFile, "right\n", 0o600)
	wrongFile := filepath.Join(dir, "wrong")
	writeFile(t, wrongFile, "wrong\n", 0o600)
	emptyFile := filepath.Join(dir, "empty")
	writeFile(t, emptyFile, "\n", 0o600)
	encrypted := Options{StateDir: dir, Passphrase: PassphraseSource{File: passFile}}
	if k, err := Create(context.Background(), "file:enc", encrypted); err != nil {
		t.Fatal(err)
	} else {
		k.Close()
	}
	writeFile(t, filepath.Join(dir, "loose"), strings.Repeat("11", 32), 0o644)
	writeFile(t, filepath.Join(dir, "garbage"), "not a key", 0o600)
	writeFile(t, filepath.Join(dir, "zero"), strings.Repeat("00", 32), 0o600)

	tests := []struct {
		name    string
		uri     string
		opts    Options
		wantIs  error
		wantMsg string
	}{
		{"missing", "file:absent", Options{StateDir: dir}, ErrNoKey, "does not exist"},
		{"keystore without passphrase", "file:enc", Options{StateDir: dir}, ErrPassphrase, "no passphrase is configured"},
		{"wrong passphrase", "file:enc", Options{StateDir: dir, Passphrase: PassphraseSource{File: wrongFile}}, ErrPassphrase, "wrong passphrase"},
		{"empty passphrase", "file:enc", Options{StateDir: dir, Passphrase: PassphraseSource{File: emptyFile}}, ErrPassphrase, "is empty"},
		{"two sources", "file:enc", Options{StateDir: dir, Passphrase: PassphraseSource{File: passFile, Env: "X"}}, ErrPassphrase, "only one"},
		{"credential without directory", "file:enc", Options{StateDir: dir, Passphrase: PassphraseSource{Credential: "k"},
			Getenv: func(string) string { return "" }}, ErrPassphrase, "CREDENTIALS_DIRECTORY"},
		{"group readable", "file:loose", Options{StateDir: dir}, nil, "chmod 600"},
		{"not hex", "file:garbage", Options{StateDir: dir}, nil, "neither hex nor a keystore"},
		{"invalid scalar", "file:zero", Options{StateDir: dir}, nil, "secp256k1"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			k, err := Open(context.Background(), tt.uri, tt.opts)
			if err == nil {
				k.Close()
				t.Fatal("Open succeeded")
			}
			if tt.wantIs != nil && !errors.Is(err, tt.wantIs) {
				t.Errorf("error %v is not %v", err, tt.wantIs)
			}
			if !strings.Contains(err.Error(), tt.wantMsg) {
				t.Errorf("error %q does not mention %q", err, tt.wantMsg)
			}
		})
	}
}

func TestDescribe(t *testing.T) {
	k1, err := streamr.ParseEVMKey(crypto.Keccak256([]byte("describe")))
	if err != nil {
		t.Fatal(err)
	}
	p256, err := streamr.GenerateP256Key()
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name   string
		signer streamr.Signer
		want   string
	}{
		{"secp256k1", k1, streamr.UserID(k1.PublisherID()) + " (ECDSA_SECP256K1_EVM)"},
		{"p256", p256, streamr.UserID(p256.PublisherID()) + " (ECDSA_SECP256R1)"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := Describe(tt.signer); got != tt.want {
				t.Errorf("Describe = %q, want %q", got, tt.want)
			}
		})
	}
	if n := len(streamr.UserID(p256.PublisherID())); n != 2+66 {
		t.Errorf("P-256 publisher ID is %d characters, want 68 (0x + 33 bytes)", n)
	}
}

func writeFile(t *testing.T, path, content string, mode os.FileMode) {
	t.Helper()
	if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(path, []byte(content), mode); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(path, mode); err != nil {
		t.Fatal(err)
	}
}
