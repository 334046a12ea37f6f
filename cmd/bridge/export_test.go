package main

import (
	"bytes"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"

	"github.com/tributary-iot/tributary/streamr"
)

// TestExportAfterKill exports a gateway stopped by kill -9 with every
// reading still unsigned: without the key, export counts them and exits
// 3; with it, export signs them all; a mistyped stream ID, a partition
// that holds nothing and an empty range each say so; and a following run
// continues the chains export signed.
func TestExportAfterKill(t *testing.T) {
	if testing.Short() {
		t.Skip("runs the real binary")
	}
	in := newInstance(t, "[signing]\nbatch_window = \"1h\"\nsign_in_commit_under = \"0s\"\n") // nothing is signed while running
	in.start()
	acked := make(map[string]bool)
	for _, id := range publishBurst(t, in, 0, 25) {
		acked[id] = true
	}
	in.kill()
	stream := in.address() + "/crash/data"

	key := filepath.Join(in.dir, "state", "key")
	if err := os.Rename(key, key+".away"); err != nil { // e.g. a TPM on another device
		t.Fatal(err)
	}
	msgs, stderr, code := in.exportAll(stream)
	want := fmt.Sprintf("export: %d stored readings are not signed yet, %d of them in stream partition %s#0", len(acked), len(acked), stream)
	if code != exitUnsigned || len(msgs) != 0 || !strings.Contains(stderr, want) {
		t.Fatalf("export without the key: exit status %d, %d messages, stderr:\n%s\nwant status %d and %q", code, len(msgs), stderr, exitUnsigned, want)
	}
	if err := os.Rename(key+".away", key); err != nil {
		t.Fatal(err)
	}
	msgs, stderr, code = in.exportAll(stream)
	if code != 0 || exportSigned(t, stderr) != len(acked) {
		t.Fatalf("export with the key: exit status %d, want 0 and %d readings signed; stderr:\n%s", code, len(acked), stderr)
	}
	checkExport(t, msgs, acked, crashPublishers)

	checkEmptyExports(t, in, stream, "stopped")
	in.start() // continues the chains export signed
	checkEmptyExports(t, in, stream, "running")
	for _, id := range publishBurst(t, in, 1, 25) {
		acked[id] = true
	}
	in.stop()
	checkExport(t, in.export(stream), acked, crashPublishers)
	msgs, stderr, _ = in.exportAll(stream, "--progress")
	if want := fmt.Sprintf("\rexported %d messages (", len(msgs)); len(msgs) != len(acked) || !strings.Contains(stderr, want) {
		t.Errorf("export --progress: %d messages, stderr %q; want %q", len(msgs), stderr, want)
	}
}

// checkEmptyExports exports a mistyped stream, a partition without
// messages and an empty range: each says so, differently.
func checkEmptyExports(t *testing.T, in *instance, stream, state string) {
	t.Helper()
	for _, tc := range []struct {
		name, stream string
		flags        []string
		code         int
		stderr       string
	}{
		{"mistyped stream", in.address() + "/crash/dta", nil, 1, "holds no messages on this gateway (check the stream ID and --partition); it holds: " + stream + "#0"},
		{"partition without messages", stream, []string{"--partition", "1"}, 1, "it holds: " + stream + "#0"},
		{"empty range", stream, []string{"--to", "1000"}, 0, "stream partition " + stream + "#0 holds no messages in this range"},
	} {
		msgs, stderr, code := in.exportAll(tc.stream, tc.flags...)
		if code != tc.code || len(msgs) != 0 || !strings.Contains(stderr, tc.stderr) {
			t.Errorf("%s gateway, %s: exit status %d, %d messages, stderr %q; want status %d and %q",
				state, tc.name, code, len(msgs), stderr, tc.code, tc.stderr)
		}
	}
}

// The release binary carries no test hook: the slow-signer switch exists
// only in builds with the bridgetest tag.
func TestReleaseBuildHasNoTestHooks(t *testing.T) {
	bin, err := os.ReadFile(bridgeBinary)
	if err != nil {
		t.Fatal(err)
	}
	if bytes.Contains(bin, []byte("TRIBUTARY_TEST_SIGN_DELAY")) {
		t.Fatal("the release binary contains the bridgetest sign delay hook")
	}
}

// TestExportOwnStateDir runs two gateways with one key (a copied state
// directory, or one hardware key), so with the same stream IDs but
// different messages and peer IDs, and gives the second's state directory
// a config naming the first's HTTP address. Export with that config reads
// the second's storage while it is stopped, and refuses the first's
// answer, naming both peer IDs, while the second runs elsewhere; with the
// second's own config it exports the running second over HTTP.
func TestExportOwnStateDir(t *testing.T) {
	if testing.Short() {
		t.Skip("runs the real binary")
	}
	first, second := newInstance(t, ""), newInstance(t, "")
	first.start()
	defer first.stop()
	copyFile(t, filepath.Join(first.dir, "state", "key"), filepath.Join(second.dir, "state", "key"))
	second.start()
	defer func() {
		select {
		case <-second.exited:
		default:
			second.kill() // failed before it was stopped
		}
	}()
	stream := first.address() + "/crash/data"
	theirs, ours := idSet(publishBurst(t, first, 1, 5)), idSet(publishBurst(t, second, 2, 5))

	checkExport(t, waitForExport(t, second, stream, len(ours)), ours, crashPublishers) // running, own address
	misdirected := filepath.Join(second.dir, "misdirected.toml")
	writeMisdirected(t, second.config, misdirected, first.http)
	file := filepath.Join(second.dir, "misdirected.raw")
	msgs, stderr, code := exportWith(t, misdirected, file, stream)
	want := fmt.Sprintf("export: the gateway answering on http.address %s is not the one running on state_dir %s: it has peer ID %s, the gateway on state_dir %[2]s has peer ID %[4]s",
		first.http, filepath.Join(second.dir, "state"), first.peerID(), second.peerID())
	if code != 1 || len(msgs) != 0 || !strings.Contains(stderr, want) {
		t.Errorf("export through another gateway's address while running: exit status %d, %d messages, stderr:\n%s\nwant status 1 and %q", code, len(msgs), stderr, want)
	}

	second.stop()
	msgs, stderr, code = exportWith(t, misdirected, file, stream)
	if code != 0 {
		t.Fatalf("export of the stopped gateway: exit status %d\n%s", code, stderr)
	}
	checkExport(t, msgs, ours, crashPublishers)
	for _, m := range msgs {
		if id := readingID(t, m); theirs[id] {
			t.Fatalf("export of the stopped gateway holds reading %s of the gateway on %s", id, first.http)
		}
	}
}

// writeMisdirected writes config with its HTTP address replaced by addr.
func writeMisdirected(t *testing.T, config, misdirected, addr string) {
	t.Helper()
	b, err := os.ReadFile(config)
	if err != nil {
		t.Fatal(err)
	}
	b = regexp.MustCompile(`(?m)^\[http\]\naddress = "[^"]*"`).ReplaceAll(b, []byte(httpTable(addr)))
	if !bytes.Contains(b, []byte(httpTable(addr))) {
		t.Fatalf("no [http] address in %s:\n%s", config, b)
	}
	if err := os.WriteFile(misdirected, b, 0o600); err != nil {
		t.Fatal(err)
	}
}

func copyFile(t *testing.T, from, to string) {
	t.Helper()
	b, err := os.ReadFile(from)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.MkdirAll(filepath.Dir(to), 0o700); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(to, b, 0o600); err != nil {
		t.Fatal(err)
	}
}

func idSet(ids []string) map[string]bool {
	set := make(map[string]bool, len(ids))
	for _, id := range ids {
		set[id] = true
	}
	return set
}

// readingID is the id field of an exported reading's JSON content.
func readingID(t *testing.T, m *streamr.StreamMessage) string {
	t.Helper()
	var body struct{ ID string }
	if err := json.Unmarshal(m.Content().Content, &body); err != nil {
		t.Fatalf("content %q: %v", m.Content().Content, err)
	}
	return body.ID
}
