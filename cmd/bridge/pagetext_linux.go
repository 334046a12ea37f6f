//go:build linux

package main

import (
	"bufio"
	"fmt"
	"os"
	"strconv"
	"strings"

	"golang.org/x/sys/unix"
)

// releaseStartupText asks the kernel to drop this process's resident pages
// of the executable's read-only mappings (code, read-only data, symbol
// tables). Start-up touches most of them: package initialisers are spread
// over the whole binary and every page fault maps 64 KiB around it, so ~35
// of the binary's 38 MB stay resident although the running gateway uses a
// fraction. The pages are clean copies of the file: the ones still in use
// fault back in from the page cache, the rest the kernel would reclaim
// under pressure anyway. Returns the bytes advised.
func releaseStartupText() (int, error) {
	exe, err := os.Executable()
	if err != nil {
		return 0, fmt.Errorf("release start-up text: %w", err)
	}
	f, err := os.Open("/proc/self/maps")
	if err != nil {
		return 0, fmt.Errorf("release start-up text: %w", err)
	}
	defer f.Close()
	total := 0
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		start, end, ok := readOnlyMapping(sc.Text(), exe)
		if !ok {
			continue
		}
		if _, _, errno := unix.Syscall(unix.SYS_MADVISE, start, end-start, unix.MADV_PAGEOUT); errno != 0 {
			return total, fmt.Errorf("release start-up text: madvise: %w", errno)
		}
		total += int(end - start)
	}
	return total, sc.Err()
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
