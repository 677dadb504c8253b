//go:build race

package detect_test

// raceEnabled: the race detector is on. The simulated scenarios then run
// ten times slower, so they are skipped: scripts/test runs them apart,
// without it.
const raceEnabled = true
