//go:build race

package federate

// raceEnabled skips measurements the race detector distorts.
const raceEnabled = true
