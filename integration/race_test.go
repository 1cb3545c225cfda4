//go:build integration && race

package integration

// raceEnabled is true when the tests run with -race: the milter is then
// built with the race detector too.
const raceEnabled = true
