//go:build race

package keystore

// raceDetector tells heavy internal tests that the race detector slows them several
// times over.
const raceDetector = true
