//go:build linux

package main

import (
	"bufio"
	"errors"
	"fmt"
	"os"
	"strconv"
	"strings"

	"golang.org/x/sys/unix"
)

// releaseStartupText gives the kernel back this process's resident pages of
// the executable's read-only mappings (code, read-only data, the pclntab)
// and keeps them from coming back in bulk. Start-up touches most of the
// binary: package initialisers and the start of the broker, storage and
// overlay are spread over all of it, and each fault maps a 64 KiB
// neighbourhood (fault-around) out of a readahead window. The running
// gateway uses a fraction of that. The file is synced first (a binary
// installed or copied moments ago has dirty pages, which neither step below
// can drop), then three steps, so only pages in use return:
//   - MADV_RANDOM: a later fault reads the one page it needs, no readahead
//     window that fault-around would then map as well;
//   - MADV_PAGEOUT: our resident pages are dropped (clean copies of the
//     file; pages another process maps too are left alone);
//   - POSIX_FADV_DONTNEED on the file, after: what no process maps any more
//     leaves the page cache, so fault-around finds no cached neighbours.
//
// Returns the bytes of the mappings advised.
func releaseStartupText() (int, error) {
	exe, err := os.Executable()
	if err != nil {
		return 0, fmt.Errorf("release start-up text: %w", err)
	}
	ranges, err := readOnlyMappings(exe)
	if err != nil {
		return 0, fmt.Errorf("release start-up text: %w", err)
	}
	f, err := os.Open(exe)
	if err != nil {
		return 0, fmt.Errorf("release start-up text: %w", err)
	}
	defer f.Close()
	if err := f.Sync(); err != nil {
		return 0, fmt.Errorf("release start-up text: %w", err)
	}
	total := 0
	for _, r := range ranges {
		for _, advice := range []int{unix.MADV_RANDOM, unix.MADV_PAGEOUT} {
			if _, _, errno := unix.Syscall(unix.SYS_MADVISE, r.start, r.end-r.start, uintptr(advice)); errno != 0 {
				return total, fmt.Errorf("release start-up text: madvise %d: %w", advice, errno)
			}
		}
		total += int(r.end - r.start)
	}
	if err := unix.Fadvise(int(f.Fd()), 0, 0, unix.FADV_DONTNEED); err != nil {
		return total, fmt.Errorf("release start-up text: fadvise %s: %w", exe, err)
	}
	return total, nil
}

type addrRange struct{ start, end uintptr }

// readOnlyMappings lists this process's mappings of path without write
// permission, from /proc/self/maps.
func readOnlyMappings(path string) ([]addrRange, error) {
	f, err := os.Open("/proc/self/maps")
	if err != nil {
		return nil, err
	}
	defer f.Close()
	var out []addrRange
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		if start, end, ok := readOnlyMapping(sc.Text(), path); ok {
			out = append(out, addrRange{start, end})
		}
	}
	if err := sc.Err(); err != nil {
		return nil, err
	}
	if len(out) == 0 {
		return nil, errors.New("no read-only mapping of the executable")
	}
	return out, nil
}

// readOnlyMapping parses one /proc/self/maps line and reports whether it
// maps path without write permission.
func readOnlyMapping(line, path string) (start, end uintptr, ok bool) {
	fields := strings.Fields(line)
	if len(fields) < 6 || fields[5] != path || strings.Contains(fields[1], "w") {
		return 0, 0, false
	}
	lo, hi, found := strings.Cut(fields[0], "-")
	if !found {
		return 0, 0, false
	}
	s, err1 := strconv.ParseUint(lo, 16, 64)
	e, err2 := strconv.ParseUint(hi, 16, 64)
	if err1 != nil || err2 != nil || e <= s {
		return 0, 0, false
	}
	return uintptr(s), uintptr(e), true
}
