//go:build linux

package main

import (
	"errors"
	"os"
	"strconv"
	"strings"
	"testing"
	"unsafe"

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

// TestReleasedTextFaultsSinglePages: once released, a fault of the
// executable's read-only data (not code: for executable mappings Linux 6.x
// reads ahead whatever the advice) brings back the page it needs, not a
// readahead window around it (which fault-around would map too). A read of
// one cold page through /proc/self/mem takes the same fault path as an
// access of our own.
func TestReleasedTextFaultsSinglePages(t *testing.T) {
	if _, err := releaseStartupText(); errors.Is(err, unix.EINVAL) {
		t.Skipf("kernel without MADV_PAGEOUT: %v", err)
	} else if err != nil {
		t.Fatal(err)
	}
	exe, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	ranges := dataMappings(t, exe)
	const around = 8 // pages either side that must stay out of memory
	page := uintptr(os.Getpagesize())
	for _, r := range ranges {
		before := cachedPages(t, r)
		i := coldRun(before, around)
		if i < 0 {
			continue
		}
		mem, err := os.Open("/proc/self/mem")
		if err != nil {
			t.Fatal(err)
		}
		defer mem.Close()
		if _, err := mem.ReadAt(make([]byte, 1), int64(r.start+uintptr(i)*page)); err != nil {
			t.Fatal(err)
		}
		after := cachedPages(t, r)
		if after[i]&1 == 0 {
			t.Fatalf("page %d of %#x-%#x not resident after a read", i, r.start, r.end)
		}
		for j := i - around; j <= i+around; j++ {
			if j != i && after[j]&1 != 0 {
				t.Errorf("page %d read back with page %d: readahead after the release", j, i)
			}
		}
		return
	}
	// After the release most of the read-only data is out of memory: finding no run of cold
	// pages means the release gave nothing back.
	t.Fatalf("no run of %d cold pages in the executable's read-only mappings after the release", 2*around+1)
}

// dataMappings lists this process's read-only, non-executable mappings of
// path.
func dataMappings(t *testing.T, path string) []addrRange {
	t.Helper()
	maps, err := os.ReadFile("/proc/self/maps")
	if err != nil {
		t.Fatal(err)
	}
	var out []addrRange
	for line := range strings.Lines(string(maps)) {
		if start, end, ok := readOnlyMapping(line, path); ok && strings.Fields(line)[1] == "r--p" {
			out = append(out, addrRange{start, end})
		}
	}
	return out
}

// cachedPages is mincore(2) of r: bit 0 of each byte says whether the
// page is in the page cache.
func cachedPages(t *testing.T, r addrRange) []byte {
	t.Helper()
	page := uintptr(os.Getpagesize())
	vec := make([]byte, (r.end-r.start+page-1)/page)
	if _, _, errno := unix.Syscall(unix.SYS_MINCORE, r.start, r.end-r.start, uintptr(unsafe.Pointer(&vec[0]))); errno != 0 {
		t.Fatalf("mincore: %v", errno)
	}
	return vec
}

// coldRun returns the middle page of the first run of 2*around+1 pages
// none of which is cached, or -1.
func coldRun(vec []byte, around int) int {
	run := 0
	for i, v := range vec {
		if v&1 != 0 {
			run = 0
			continue
		}
		if run++; run == 2*around+1 {
			return i - around
		}
	}
	return -1
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
