package main

import (
	"context"
	"encoding/json"
	"errors"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	paho5 "github.com/eclipse/paho.golang/paho"

	"github.com/tributary-iot/tributary/statuspage"
)

// A gateway started on a full disk (before: a SIGBUS crash loop) stays up
// and refuses: MQTT 5 publishers get 0x97 and /healthz fails naming the
// disk. Once space is freed it starts storage and accepts readings, and
// keeps those acknowledged before.
func TestStartOnFullDisk(t *testing.T) {
	if testing.Short() {
		t.Skip("real binary on a tmpfs")
	}
	in := newInstance(t, "[overlay]\nenabled = false\n")
	state := filepath.Join(in.dir, "state")
	if err := os.MkdirAll(state, 0o700); err != nil {
		t.Fatal(err)
	}
	if out, err := exec.Command("mount", "-t", "tmpfs", "-o", "size=128m", "tmpfs", state).CombinedOutput(); err != nil {
		if os.Getenv("TRIBUTARY_REQUIRE_TOOLS") != "" {
			t.Fatalf("mount tmpfs: %v: %s", err, out)
		}
		t.Skipf("cannot mount a tmpfs (needs root): %v: %s", err, out)
	}
	t.Cleanup(func() {
		if out, err := exec.Command("umount", state).CombinedOutput(); err != nil {
			t.Errorf("umount %s: %v: %s", state, err, out)
		}
	})
	in.start() // a gateway that ran before: key and database exist
	if code := publish5(t, in.mqtt); code != 0 {
		t.Fatalf("publish: reason 0x%02x", code)
	}
	in.stop()
	filler := filepath.Join(state, "filler")
	fillFile(t, filler)
	in.start()
	defer in.stop()

	if code := publish5(t, in.mqtt); code != 0x97 {
		t.Errorf("publish on a full disk: reason 0x%02x, want 0x97", code)
	}
	resp, err := http.Get("http://" + in.http + "/healthz")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusServiceUnavailable {
		t.Errorf("/healthz on a full disk: %s, want 503", resp.Status)
	}
	checkUnhealthyStatus(t, in)

	if err := os.Remove(filler); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(30 * time.Second)
	for publish5(t, in.mqtt) != 0 {
		if time.Now().After(deadline) {
			t.Fatalf("readings still refused 30s after space was freed\n%s", in.logs())
		}
		time.Sleep(500 * time.Millisecond)
	}
	// `bridge export` reads a running gateway through the HTTP API (the
	// database is locked), Host check included.
	if msgs := waitForExport(t, in, in.address()+"/disk/test", 2); len(msgs) < 2 {
		t.Errorf("export from the running gateway: %d messages, want the 2 acknowledged", len(msgs))
	}
}

// fillFile writes path until its file system is full.
// checkUnhealthyStatus expects `bridge status` to say the gateway is at
// fault and why, and to exit with status 4 (--json too).
func checkUnhealthyStatus(t *testing.T, in *instance) {
	t.Helper()
	out, stderr, code := runBridge("status", "--config", in.config)
	if code != exitUnhealthy || !strings.Contains(out, "FAULT") || !strings.Contains(out, "disk") {
		t.Errorf("bridge status on a full disk: exit %d, want %d and FAULT naming the disk:\n%s%s", code, exitUnhealthy, out, stderr)
	}
	out, _, code = runBridge("status", "--json", "--config", in.config)
	var st statuspage.Status
	if err := json.Unmarshal([]byte(out), &st); err != nil || code != exitUnhealthy || st.Health.OK || st.Health.State != "fault" {
		t.Errorf("bridge status --json on a full disk: exit %d, health %+v (%v)", code, st.Health, err)
	}
}

func fillFile(t *testing.T, path string) {
	t.Helper()
	f, err := os.Create(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	chunk := make([]byte, 1<<20)
	for {
		if _, err := f.Write(chunk); errors.Is(err, syscall.ENOSPC) {
			return
		} else if err != nil {
			t.Fatal(err)
		}
	}
}

// publish5 publishes one QoS 1 reading over MQTT 5 and returns the PUBACK
// reason code (0 for success; 0xff if the broker is not answering).
func publish5(t *testing.T, addr string) byte {
	t.Helper()
	conn, err := net.DialTimeout("tcp", addr, time.Second)
	if err != nil {
		return 0xff
	}
	c := paho5.NewClient(paho5.ClientConfig{ClientID: "disk-full", Conn: conn, PacketTimeout: 5 * time.Second})
	ctx, cancel := context.WithTimeout(t.Context(), 5*time.Second)
	defer cancel()
	if _, err := c.Connect(ctx, &paho5.Connect{ClientID: "disk-full", KeepAlive: 30, CleanStart: true}); err != nil {
		_ = conn.Close()
		return 0xff
	}
	defer func() {
		_ = c.Disconnect(&paho5.Disconnect{})
		<-c.Done()
	}()
	resp, err := c.Publish(ctx, &paho5.Publish{Topic: "disk/test", QoS: 1, Payload: []byte(`{"t":1}`)})
	switch {
	case err == nil:
		return 0
	case resp != nil:
		return resp.ReasonCode
	}
	return 0xff
}
