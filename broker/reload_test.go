package broker

import (
	"crypto/tls"
	"crypto/x509"
	"os"
	"strings"
	"testing"
	"time"

	mqttv3 "github.com/eclipse/paho.mqtt.golang"
)

const reloadUsersBefore = `
[[user]]
name = "alice"
password_hash = "HASH(alice)"
publish = ["a/#"]
[[user]]
name = "bob"
password_hash = "HASH(bob)"
publish = ["b/#"]
[[user]]
name = "dave"
password_hash = "HASH(dave)"
`

// rewrite replaces the users file at path, keeping the hashes of users named in keep (so that
// their credentials stay the same) and hashing the passwords of the others afresh.
func rewrite(t *testing.T, path, body string, keep []string, passwords map[string]string) {
	t.Helper()
	old, err := loadUsers(path)
	if err != nil {
		t.Fatal(err)
	}
	for _, name := range keep {
		body = strings.ReplaceAll(body, "HASH("+name+")", old[name].PasswordHash)
	}
	fresh := writeUsersFile(t, body, passwords)
	data, err := os.ReadFile(fresh)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(path, data, 0o600); err != nil {
		t.Fatal(err)
	}
}

// TestReloadUsers reloads a changed users file under connected clients: a removed user and a
// user whose password changed are disconnected, an unchanged one stays connected under its
// new ACL, and a new user can connect.
func TestReloadUsers(t *testing.T) {
	pw := map[string]string{"alice": "a-pw", "bob": "b-pw", "dave": "d-pw"}
	path := writeUsersFile(t, reloadUsersBefore, pw)
	b := startBroker(t, Config{UsersFile: path, AuthBackoffMax: -1}, &testHandler{})

	alice := dialV3(t, "tcp://"+b.tcpAddr(), "alice-1", func(o *mqttv3.ClientOptions) { o.SetUsername("alice").SetPassword("a-pw") })
	bob := mustDialV5(t, b.tcpAddr(), "bob-1", "bob", "b-pw")
	dave := mustDialV5(t, b.tcpAddr(), "dave-1", "dave", "d-pw")
	if _, err := dialV5(t, b.tcpAddr(), "carol-1", "carol", "c-pw"); err == nil {
		t.Fatal("carol connected before she is in the users file")
	}

	rewrite(t, path, `
[[user]]
name = "alice"
password_hash = "HASH(alice)"
publish = ["a/#", "shared/#"]
[[user]]
name = "carol"
password_hash = "HASH(carol)"
[[user]]
name = "dave"
password_hash = "HASH(dave)"
`, []string{"alice"}, map[string]string{"carol": "c-pw", "dave": "new-d-pw"})
	if err := b.Reload(); err != nil {
		t.Fatalf("Reload: %v", err)
	}

	for name, c := range map[string]v5{"bob (removed)": bob, "dave (new password)": dave} {
		select {
		case <-c.Done():
		case <-time.After(waitTimeout):
			t.Errorf("%s still connected after the reload", name)
		}
	}
	if !alice.IsConnectionOpen() {
		t.Fatal("alice was disconnected although her credentials did not change")
	}
	publishV3(t, alice, "shared/x", 1, false, "allowed by the new ACL")
	mustDialV5(t, b.tcpAddr(), "carol-1", "carol", "c-pw")
	if _, err := dialV5(t, b.tcpAddr(), "bob-2", "bob", "b-pw"); err == nil {
		t.Error("removed user bob can still connect")
	}
	if n := b.Stats().ReloadDisconnects; n != 2 {
		t.Errorf("ReloadDisconnects = %d, want 2", n)
	}
	logs := b.logs.String()
	for _, want := range []string{"users file reloaded", "added=[carol]", "removed=[bob]", "changed=\"[alice dave]\"", "disconnecting=2"} {
		if !strings.Contains(logs, want) {
			t.Errorf("log lacks %q:\n%s", want, logs)
		}
	}
}

// TestReloadBrokenUsersFileKeepsOld refuses a broken users file with an error naming the file
// and line; the users in force before stay in force and nobody is disconnected.
func TestReloadBrokenUsersFileKeepsOld(t *testing.T) {
	pw := map[string]string{"alice": "a-pw", "bob": "b-pw", "dave": "d-pw"}
	path := writeUsersFile(t, reloadUsersBefore, pw)
	b := startBroker(t, Config{UsersFile: path, AuthBackoffMax: -1}, &testHandler{})
	bob := mustDialV5(t, b.tcpAddr(), "bob-1", "bob", "b-pw")

	for _, broken := range []string{
		"[[user]]\nname = \"bob\"\npassword_hash = \"plaintext\"\n",
		"[[user]]\nname = \"bob\n",
		"",
	} {
		if err := os.WriteFile(path, []byte(broken), 0o600); err != nil {
			t.Fatal(err)
		}
		err := b.Reload()
		if err == nil || !strings.Contains(err.Error(), path) {
			t.Fatalf("Reload of %q: error %v, want one naming %s", broken, err, path)
		}
	}
	if err := os.Remove(path); err != nil {
		t.Fatal(err)
	}
	if err := b.Reload(); err == nil {
		t.Fatal("Reload of a missing users file succeeded")
	}
	select {
	case <-bob.Done():
		t.Fatal("bob disconnected by a refused reload")
	case <-time.After(100 * time.Millisecond):
	}
	mustDialV5(t, b.tcpAddr(), "alice-1", "alice", "a-pw")
	if n := b.Stats().ReloadDisconnects; n != 0 {
		t.Errorf("ReloadDisconnects = %d, want 0", n)
	}
}

// TestReloadTLSCertificate replaces a TLS listener's certificate: new handshakes present the
// new one; a broken certificate is refused and the one in force stays.
func TestReloadTLSCertificate(t *testing.T) {
	certFile, keyFile, oldPool := selfSignedCert(t)
	b := startBroker(t, Config{Listeners: []Listener{{Type: "tls", Address: "127.0.0.1:0", CertFile: certFile, KeyFile: keyFile}}}, &testHandler{})
	addr := b.Addrs()[0].String()
	handshake := func(pool *x509.CertPool) error {
		c, err := tls.Dial("tcp", addr, &tls.Config{RootCAs: pool, ServerName: "127.0.0.1"})
		if err == nil {
			c.Close()
		}
		return err
	}
	if err := handshake(oldPool); err != nil {
		t.Fatal(err)
	}

	newCert, newKey, newPool := selfSignedCert(t)
	for src, dst := range map[string]string{newCert: certFile, newKey: keyFile} {
		data, err := os.ReadFile(src)
		if err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(dst, data, 0o600); err != nil {
			t.Fatal(err)
		}
	}
	if err := b.Reload(); err != nil {
		t.Fatal(err)
	}
	if err := handshake(newPool); err != nil {
		t.Fatalf("handshake after reload: %v", err)
	}
	if err := handshake(oldPool); err == nil {
		t.Fatal("the old certificate is still served")
	}

	if err := os.WriteFile(keyFile, []byte("not a key"), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := b.Reload(); err == nil || !strings.Contains(err.Error(), keyFile) {
		t.Fatalf("Reload with a broken key: %v", err)
	}
	if err := handshake(newPool); err != nil {
		t.Fatalf("the certificate in force was dropped by a refused reload: %v", err)
	}
}
