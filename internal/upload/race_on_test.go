//go:build race

package upload

// raceEnabled: the race detector changes what allocation counters report.
const raceEnabled = true
