//go:build linux

package main

import (
	"errors"
	"os"
	"strconv"
	"strings"
	"testing"

	"golang.org/x/sys/unix"
)

func TestReadOnlyMapping(t *testing.T) {
	const exe = "/usr/bin/bridge"
	tests := []struct {
		line       string
		start, end uintptr
		ok         bool
	}{
		{"00400000-01a00000 r-xp 00000000 fe:01 123 /usr/bin/bridge", 0x400000, 0x1a00000, true},
		{"01a00000-02f00000 r--p 01600000 fe:01 123 /usr/bin/bridge", 0x1a00000, 0x2f00000, true},
		{"02f00000-02f80000 rw-p 02b00000 fe:01 123 /usr/bin/bridge", 0, 0, false},             // data: written
		{"7f0000000000-7f0000100000 r--s 00000000 fe:01 9 /var/lib/x/000001.mem", 0, 0, false}, // another file
		{"7f0000000000-7f0000100000 rw-p 00000000 00:00 0", 0, 0, false},                       // anonymous
		{"zz-01a00000 r-xp 00000000 fe:01 123 /usr/bin/bridge", 0, 0, false},
		{"", 0, 0, false},
	}
	for _, tc := range tests {
		start, end, ok := readOnlyMapping(tc.line, exe)
		if start != tc.start || end != tc.end || ok != tc.ok {
			t.Errorf("readOnlyMapping(%q) = %#x, %#x, %v; want %#x, %#x, %v", tc.line, start, end, ok, tc.start, tc.end, tc.ok)
		}
	}
}

// TestReleaseStartupText gives back this test binary's resident text: its
// file-backed resident memory must shrink.
func TestReleaseStartupText(t *testing.T) {
	before := rssFileKB(t)
	n, err := releaseStartupText()
	if errors.Is(err, unix.EINVAL) {
		t.Skipf("kernel without MADV_PAGEOUT: %v", err)
	}
	if err != nil {
		t.Fatal(err)
	}
	if n == 0 {
		t.Fatal("no read-only mapping of the executable found")
	}
	if after := rssFileKB(t); after >= before {
		t.Errorf("file-backed RSS %d kB after releasing %d bytes, %d kB before", after, n, before)
	}
}

func rssFileKB(t *testing.T) int {
	t.Helper()
	status, err := os.ReadFile("/proc/self/status")
	if err != nil {
		t.Fatal(err)
	}
	for line := range strings.Lines(string(status)) {
		if v, ok := strings.CutPrefix(line, "RssFile:"); ok {
			kb, err := strconv.Atoi(strings.TrimSpace(strings.TrimSuffix(strings.TrimSpace(v), "kB")))
			if err != nil {
				t.Fatal(err)
			}
			return kb
		}
	}
	t.Fatal("no RssFile in /proc/self/status")
	return 0
}
