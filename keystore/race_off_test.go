//go:build !race

package keystore_test

// raceEnabled tells heavy tests that the race detector slows them several times over.
const raceEnabled = false
