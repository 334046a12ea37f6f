package storage

import (
	"errors"
	"os"
	"syscall"
)

// dirLocked reports whether another open database holds the directory
// lock Badger takes on dir (an exclusive flock on the directory itself).
// Badger's own error does not wrap the flock error (its y.Wrapf formats
// it unless built in debug mode), so Open asks the kernel after a failed
// open instead of matching Badger's message. The probe never blocks, and
// closing the file releases its shared lock at once.
func dirLocked(dir string) bool {
	f, err := os.Open(dir)
	if err != nil {
		return false
	}
	defer f.Close()
	return errors.Is(syscall.Flock(int(f.Fd()), syscall.LOCK_SH|syscall.LOCK_NB), syscall.EWOULDBLOCK)
}
