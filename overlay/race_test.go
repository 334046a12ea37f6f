//go:build race

package overlay

// raceEnabled shrinks the mocknet tests under the race detector, which
// multiplies their memory (over 10 GB at 100 nodes) and time by ~10.
const raceEnabled = true
