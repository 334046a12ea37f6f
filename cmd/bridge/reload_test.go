package main

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	mqtt "github.com/eclipse/paho.mqtt.golang"

	"github.com/tributary-iot/tributary/broker"
)

// writeUsers writes a users file with one [[user]] per name, password "<name>-pw". hashes
// keeps each user's hash across rewrites (a new salt would count as a changed password).
func writeUsers(t *testing.T, path string, hashes map[string]string, names ...string) {
	t.Helper()
	var b strings.Builder
	for _, n := range names {
		h, ok := hashes[n]
		if !ok {
			var err error
			if h, err = broker.HashPassword(n + "-pw"); err != nil {
				t.Fatal(err)
			}
			hashes[n] = h
		}
		fmt.Fprintf(&b, "[[user]]\nname = %q\npassword_hash = %q\npublish = [\"#\"]\nsubscribe = [\"#\"]\n", n, h)
	}
	if err := os.WriteFile(path, []byte(b.String()), 0o600); err != nil {
		t.Fatal(err)
	}
}

func connectAs(addr, user string, lost chan<- struct{}) (mqtt.Client, error) {
	opts := mqtt.NewClientOptions().AddBroker("tcp://" + addr).SetClientID(user + "-dev").
		SetUsername(user).SetPassword(user + "-pw").SetAutoReconnect(false).SetConnectRetry(false).
		SetConnectTimeout(5 * time.Second).SetKeepAlive(30 * time.Second).
		SetConnectionLostHandler(func(mqtt.Client, error) {
			if lost != nil {
				close(lost)
			}
		})
	c := mqtt.NewClient(opts)
	tok := c.Connect()
	if !tok.WaitTimeout(10 * time.Second) {
		return nil, fmt.Errorf("connect %s: timeout", user)
	}
	return c, tok.Error()
}

// waitLog waits until the instance's log contains s.
func waitLog(t *testing.T, in *instance, s string) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !strings.Contains(in.logs(), s) {
		if time.Now().After(deadline) {
			t.Fatalf("log lacks %q:\n%s", s, in.logs())
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// TestSIGHUPReload sends SIGHUP to the real binary: a removed user is disconnected, a new one
// can connect, a broken file is refused with its error while the old one stays in force, and
// the gateway keeps running throughout.
func TestSIGHUPReload(t *testing.T) {
	if testing.Short() {
		t.Skip("real binary")
	}
	usersPath := filepath.Join(t.TempDir(), "users.toml")
	hashes := map[string]string{}
	writeUsers(t, usersPath, hashes, "alice", "bob")
	in := newInstance(t, fmt.Sprintf("[mqtt]\nusers_file = %q\n", usersPath))
	in.start()
	defer in.stop()

	bobLost := make(chan struct{})
	bob, err := connectAs(in.mqtt, "bob", bobLost)
	if err != nil {
		t.Fatal(err)
	}
	defer bob.Disconnect(0)
	alice, err := connectAs(in.mqtt, "alice", nil)
	if err != nil {
		t.Fatal(err)
	}
	defer alice.Disconnect(0)
	if _, err := connectAs(in.mqtt, "carol", nil); err == nil {
		t.Fatal("carol connected before she is in the users file")
	}

	writeUsers(t, usersPath, hashes, "alice", "carol")
	hangup := func() {
		if err := in.cmd.Process.Signal(syscall.SIGHUP); err != nil {
			t.Fatal(err)
		}
	}
	hangup()
	select {
	case <-bobLost:
	case <-time.After(10 * time.Second):
		t.Fatalf("removed user bob still connected after SIGHUP\n%s", in.logs())
	}
	waitLog(t, in, "users file reloaded")
	carol, err := connectAs(in.mqtt, "carol", nil)
	if err != nil {
		t.Fatalf("new user carol cannot connect after SIGHUP: %v", err)
	}
	carol.Disconnect(0)
	if !alice.IsConnectionOpen() {
		t.Error("alice, whose credentials did not change, was disconnected")
	}

	if err := os.WriteFile(usersPath, []byte("[[user]]\nname = \"carol\"\npassword_hash = \"plain\"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	hangup()
	waitLog(t, in, "reload refused")
	if !strings.Contains(in.logs(), usersPath+":3") {
		t.Errorf("refusal does not name %s:3:\n%s", usersPath, in.logs())
	}
	carol, err = connectAs(in.mqtt, "carol", nil)
	if err != nil {
		t.Fatalf("users in force before the broken file were dropped: %v", err)
	}
	carol.Disconnect(0)
	select {
	case <-in.exited:
		t.Fatalf("gateway exited on SIGHUP: %v", in.exitErr)
	default:
	}
}
