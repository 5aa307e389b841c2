//go:build !race

package graph_test

// raceEnabled tells the cost tests that the race detector is on: it slows building
// their 1 MiB documents a hundredfold and changes what a request allocates.
const raceEnabled = false
