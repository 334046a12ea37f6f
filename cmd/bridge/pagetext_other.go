//go:build !linux

package main

// releaseStartupText is a no-op where MADV_PAGEOUT does not exist.
func releaseStartupText() (int, error) { return 0, nil }
