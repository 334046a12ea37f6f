//go:build race

package bridge

// raceEnabled: the race detector's shadow memory makes RSS figures
// meaningless (the Go heap figures stay valid).
const raceEnabled = true
