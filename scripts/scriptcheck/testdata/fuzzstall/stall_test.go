// Fuzz targets for TestFuzzStepFailsOnStall: one whose worker hangs on every input but the seed, as
// FuzzUsersFile did on a bcrypt cost near 31, and a healthy one.
package fuzzfixture

import (
	"testing"
	"time"
)

func FuzzStall(f *testing.F) {
	f.Add([]byte("a"))
	f.Fuzz(func(t *testing.T, b []byte) {
		if len(b) > 1 {
			time.Sleep(time.Hour)
		}
	})
}

func FuzzFine(f *testing.F) {
	f.Add([]byte("a"))
	f.Fuzz(func(t *testing.T, b []byte) {})
}
