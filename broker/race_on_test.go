//go:build race

package broker

// raceEnabled: the race detector slows bcrypt and the network path several times over.
const raceEnabled = true
