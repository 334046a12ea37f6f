package tpm

import (
	"bytes"
	"context"
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"reflect"
	"testing"

	"github.com/ethereum/go-ethereum/crypto"
	"github.com/google/go-tpm/tpm2"
	"github.com/google/go-tpm/tpm2/transport"
	"go.uber.org/goleak"

	"github.com/tributary-iot/tributary/hw/internal/signtest"
	"github.com/tributary-iot/tributary/hw/simtest"
	"github.com/tributary-iot/tributary/streamr"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

func TestParseURI(t *testing.T) {
	tests := []struct {
		uri     string
		want    Config
		wantErr bool
	}{
		{uri: "tpm:///dev/tpmrm0", want: Config{Path: "/dev/tpmrm0", Type: Secp256k1, Blob: DefaultBlob}},
		{uri: "tpm:?type=p256", want: Config{Path: DefaultDevice, Type: P256, Blob: DefaultBlob}},
		{uri: "tpm:///dev/tpm0?type=secp256k1&blob=/var/lib/t/k.tpm&pcrs=7,0,7",
			want: Config{Path: "/dev/tpm0", Type: Secp256k1, Blob: "/var/lib/t/k.tpm", PCRs: []int{0, 7}}},
		{uri: "tpm://127.0.0.1:2321?type=P256&blob=p.tpm", want: Config{Addr: "127.0.0.1:2321", Type: P256, Blob: "p.tpm"}},
		{uri: "tpm:///dev/tpmrm0?type=rsa", wantErr: true},
		{uri: "tpm:///dev/tpmrm0?pcrs=24", wantErr: true},
		{uri: "tpm:///dev/tpmrm0?pcrs=x", wantErr: true},
		{uri: "tpm:///dev/tpmrm0?type=p256&pcrs=7", wantErr: true},
		{uri: "tpm:///dev/tpmrm0?slot=1", wantErr: true},
		{uri: "tpm://127.0.0.1:2321/dev/tpm0", wantErr: true},
		{uri: "file:///x", wantErr: true},
	}
	for _, tt := range tests {
		t.Run(tt.uri, func(t *testing.T) {
			got, err := ParseURI(tt.uri)
			if tt.wantErr {
				if err == nil {
					t.Fatalf("ParseURI = %+v, want error", got)
				}
				return
			}
			if err != nil || !reflect.DeepEqual(got, tt.want) {
				t.Fatalf("ParseURI = %+v, %v; want %+v", got, err, tt.want)
			}
		})
	}
}

func simConfig(sim *simtest.SWTPM, typ KeyType, pcrs ...int) Config {
	return Config{Path: sim.Socket, Type: typ, Blob: filepath.Join(sim.StateDir, "..", string(typ)+".blob"), PCRs: pcrs}
}

func TestSealedSecp256k1(t *testing.T) {
	sim := simtest.StartSWTPM(t)
	ctx := context.Background()
	cfg := simConfig(sim, Secp256k1)
	created, err := Create(ctx, cfg)
	if err != nil {
		t.Fatalf("Create: %v", err)
	}
	defer created.Close()
	if created.SignatureType() != streamr.SignatureEVM {
		t.Fatalf("signature type %v", created.SignatureType())
	}
	if _, err := Create(ctx, cfg); !errors.Is(err, fs.ErrExist) {
		t.Fatalf("second Create error = %v, want fs.ErrExist", err)
	}
	sim.Restart() // a reboot: the key must come back from the blob
	opened, err := Open(ctx, cfg)
	if err != nil {
		t.Fatalf("Open after restart: %v", err)
	}
	defer opened.Close()
	if !bytes.Equal(opened.PublisherID(), created.PublisherID()) {
		t.Fatalf("unsealed address %x, created %x", opened.PublisherID(), created.PublisherID())
	}
	signtest.Messages(t, opened, "tpm-sealed-secp256k1", 3)
	blob, err := os.ReadFile(cfg.Blob)
	if err != nil {
		t.Fatal(err)
	}
	priv := crypto.FromECDSA(created.(sealedKey).PrivateKey())
	if bytes.Contains(blob, priv) {
		t.Fatal("blob file contains the private key in clear")
	}
}

func TestSealedImport(t *testing.T) {
	sim := simtest.StartSWTPM(t)
	priv, err := crypto.GenerateKey()
	if err != nil {
		t.Fatal(err)
	}
	cfg := simConfig(sim, Secp256k1)
	k, err := Import(context.Background(), cfg, crypto.FromECDSA(priv))
	if err != nil {
		t.Fatalf("Import: %v", err)
	}
	k.Close()
	k, err = Open(context.Background(), cfg)
	if err != nil {
		t.Fatalf("Open: %v", err)
	}
	defer k.Close()
	if want := crypto.PubkeyToAddress(priv.PublicKey); !bytes.Equal(k.PublisherID(), want[:]) {
		t.Fatalf("imported key unseals as %x, want %x", k.PublisherID(), want)
	}
	if _, err := Import(context.Background(), simConfig(sim, P256), crypto.FromECDSA(priv)); err == nil {
		t.Fatal("Import of a P-256 TPM key succeeded")
	}
}

func TestSealedPCRBinding(t *testing.T) {
	sim := simtest.StartSWTPM(t)
	ctx := context.Background()
	cfg := simConfig(sim, Secp256k1, 7, 14)
	created, err := Create(ctx, cfg)
	if err != nil {
		t.Fatalf("Create: %v", err)
	}
	created.Close()

	steps := []struct {
		name    string
		before  func(t *testing.T)
		wantErr error
	}{
		{"unchanged PCRs", func(*testing.T) {}, nil},
		{"PCR 14 extended", func(t *testing.T) { extendPCR(t, sim, 14) }, ErrPCRMismatch},
		{"after reboot", func(*testing.T) { sim.Restart() }, nil},
		{"PCR 7 extended", func(t *testing.T) { extendPCR(t, sim, 7) }, ErrPCRMismatch},
		{"PCR 8 extended (not bound)", func(t *testing.T) { sim.Restart(); extendPCR(t, sim, 8) }, nil},
	}
	for _, st := range steps {
		t.Run(st.name, func(t *testing.T) {
			st.before(t)
			k, err := Open(ctx, cfg)
			if st.wantErr != nil {
				if !errors.Is(err, st.wantErr) {
					t.Fatalf("Open error = %v, want %v", err, st.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatalf("Open: %v", err)
			}
			defer k.Close()
			if !bytes.Equal(k.PublisherID(), created.PublisherID()) {
				t.Fatalf("unsealed %x, want %x", k.PublisherID(), created.PublisherID())
			}
		})
	}
}

func extendPCR(t *testing.T, sim *simtest.SWTPM, pcr int) {
	t.Helper()
	tp, err := dial(Config{Path: sim.Socket})
	if err != nil {
		t.Fatal(err)
	}
	defer tp.Close()
	_, err = tpm2.PCRExtend{
		PCRHandle: tpm2.AuthHandle{Handle: tpm2.TPMHandle(pcr), Auth: tpm2.PasswordAuth(nil)},
		Digests:   tpm2.TPMLDigestValues{Digests: []tpm2.TPMTHA{{HashAlg: tpm2.TPMAlgSHA256, Digest: make([]byte, 32)}}},
	}.Execute(tp)
	if err != nil {
		t.Fatalf("extend PCR %d: %v", pcr, err)
	}
}

func TestNativeP256(t *testing.T) {
	sim := simtest.StartSWTPM(t)
	ctx := context.Background()
	cfg := simConfig(sim, P256)
	created, err := Create(ctx, cfg)
	if err != nil {
		t.Fatalf("Create: %v", err)
	}
	if created.SignatureType() != streamr.SignatureSecp256r1 || len(created.PublisherID()) != 33 {
		t.Fatalf("type %v, publisher ID %d bytes; want SECP256R1, 33", created.SignatureType(), len(created.PublisherID()))
	}
	signtest.Messages(t, created, "tpm-p256-created", 2)
	if err := created.Close(); err != nil {
		t.Fatalf("Close: %v", err)
	}
	if err := created.Close(); !errors.Is(err, fs.ErrClosed) {
		t.Fatalf("second Close = %v, want fs.ErrClosed", err)
	}
	if _, err := created.Sign(ctx, []byte("x")); !errors.Is(err, fs.ErrClosed) {
		t.Fatalf("Sign after Close = %v, want fs.ErrClosed", err)
	}

	sim.Restart()
	opened, err := Open(ctx, cfg)
	if err != nil {
		t.Fatalf("Open after restart: %v", err)
	}
	defer opened.Close()
	if !bytes.Equal(opened.PublisherID(), created.PublisherID()) {
		t.Fatalf("reopened key %x, created %x", opened.PublisherID(), created.PublisherID())
	}
	signtest.Messages(t, opened, "tpm-p256", 3)

	wrongType := cfg
	wrongType.Type = Secp256k1
	if _, err := Open(ctx, wrongType); err == nil {
		t.Fatal("Open of a P-256 blob as secp256k1 succeeded")
	}
}

func TestBlobUselessOnAnotherTPM(t *testing.T) {
	for _, typ := range []KeyType{Secp256k1, P256} {
		t.Run(string(typ), func(t *testing.T) {
			first := simtest.StartSWTPM(t)
			cfg := simConfig(first, typ)
			k, err := Create(context.Background(), cfg)
			if err != nil {
				t.Fatalf("Create: %v", err)
			}
			k.Close()
			other := simtest.StartSWTPM(t)
			cfg.Path = other.Socket
			if k, err := Open(context.Background(), cfg); err == nil {
				k.Close()
				t.Fatal("another TPM opened the blob")
			}
		})
	}
}

func TestMissingBlob(t *testing.T) {
	_, err := Open(context.Background(), Config{Path: "/nonexistent", Blob: filepath.Join(t.TempDir(), "none")})
	if !errors.Is(err, fs.ErrNotExist) {
		t.Fatalf("Open error = %v, want fs.ErrNotExist", err)
	}
}

// TestFlushesStaleHandles fills the TPM's object slots the way crashed
// clients on a raw TPM do, then checks that Open still works.
func TestFlushesStaleHandles(t *testing.T) {
	sim := simtest.StartSWTPM(t)
	cfg := simConfig(sim, P256)
	k, err := Create(context.Background(), cfg)
	if err != nil {
		t.Fatal(err)
	}
	k.Close()
	tp, err := dial(Config{Path: sim.Socket})
	if err != nil {
		t.Fatal(err)
	}
	leaked := 0
	for range 16 {
		_, err := tpm2.CreatePrimary{PrimaryHandle: tpm2.TPMRHOwner, InPublic: tpm2.New2B(tpm2.ECCSRKTemplate)}.Execute(tp)
		if errors.Is(err, tpm2.TPMRCObjectMemory) {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		leaked++
	}
	tp.Close()
	if leaked == 16 {
		t.Fatal("TPM never ran out of object memory; the test cannot show flushing")
	}
	k, err = Open(context.Background(), cfg)
	if err != nil {
		t.Fatalf("Open with %d leaked objects: %v", leaked, err)
	}
	defer k.Close()
	signtest.Messages(t, k, "tpm-p256-after-flush", 1)
}

// retryInjector answers the first n commands with TPM_RC_RETRY without
// passing them to the TPM, as a busy TPM does.
type retryInjector struct {
	transport.TPMCloser
	n, sent int
}

func (r *retryInjector) Send(cmd []byte) ([]byte, error) {
	r.sent++
	if r.n > 0 {
		r.n--
		return []byte{0x80, 0x01, 0, 0, 0, 10, 0, 0, 0x09, 0x22}, nil
	}
	return r.TPMCloser.Send(cmd)
}

func TestRetry(t *testing.T) {
	sim := simtest.StartSWTPM(t)
	tests := []struct {
		name      string
		retries   int
		wantErr   bool
		wantSends int
	}{
		{"no retry", 0, false, 1},
		{"three retries", 3, false, 4},
		{"gives up", 20, true, 10},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			raw, err := dial(Config{Path: sim.Socket})
			if err != nil {
				t.Fatal(err)
			}
			inj := &retryInjector{TPMCloser: raw, n: tt.retries}
			tp := withRetry(inj, Config{}.logger())
			defer tp.Close()
			_, err = tpm2.GetRandom{BytesRequested: 8}.Execute(tp)
			if tt.wantErr != (err != nil) || (err != nil && !errors.Is(err, tpm2.TPMRCRetry)) {
				t.Fatalf("GetRandom error = %v, want error %v (TPM_RC_RETRY)", err, tt.wantErr)
			}
			if inj.sent != tt.wantSends {
				t.Errorf("sent %d times, want %d", inj.sent, tt.wantSends)
			}
		})
	}
}

func FuzzParseBlob(f *testing.F) {
	f.Add([]byte(`{"format":"tributary-tpm-key/1","type":"p256","public":"AAA=","private":"AAA="}`))
	f.Add([]byte(`{"format":"tributary-tpm-key/1","type":"secp256k1","pcrs":[7],"public":"","private":""}`))
	f.Fuzz(func(t *testing.T, raw []byte) {
		b, pub, _, err := parseBlob(raw)
		if err != nil {
			return
		}
		if b.Format != blobFormat {
			t.Fatalf("accepted format %q", b.Format)
		}
		if _, err := pub.Contents(); err != nil {
			t.Fatalf("accepted unparsable public area: %v", err)
		}
	})
}
