//go:build !race

package server_test

// chaosRace: the suite runs under the race detector (said in the report).
const chaosRace = false
