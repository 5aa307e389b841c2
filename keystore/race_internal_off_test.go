//go:build !race

package keystore

const raceDetector = false
