package bridge

import (
	"time"

	"golang.org/x/sys/unix"
)

// KernelClock reads the system clock and the kernel's NTP sync state.
type KernelClock struct{}

// Now returns the wall clock.
func (KernelClock) Now() time.Time { return time.Now() }

// BootNanos returns CLOCK_BOOTTIME in nanoseconds.
func (KernelClock) BootNanos() int64 {
	var ts unix.Timespec
	if err := unix.ClockGettime(unix.CLOCK_BOOTTIME, &ts); err != nil {
		return 0
	}
	return ts.Nano()
}

// Synced reports whether the kernel considers the clock synchronised,
// which timesyncd and chrony signal through adjtimex.
func (KernelClock) Synced() bool {
	s, err := ReadClockSync()
	return err == nil && s.Synced
}

// ClockSync is the kernel's view of clock synchronisation.
type ClockSync struct {
	Synced   bool
	MaxError time.Duration // worst-case error the kernel assumes
	EstError time.Duration // estimated error
}

// ReadClockSync queries adjtimex without changing anything.
func ReadClockSync() (ClockSync, error) {
	var tx unix.Timex // Modes 0: read only
	state, err := unix.Adjtimex(&tx)
	if err != nil {
		return ClockSync{}, err
	}
	return ClockSync{
		Synced:   state != unix.TIME_ERROR && tx.Status&unix.STA_UNSYNC == 0,
		MaxError: time.Duration(tx.Maxerror) * time.Microsecond,
		EstError: time.Duration(tx.Esterror) * time.Microsecond,
	}, nil
}
