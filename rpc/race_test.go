//go:build race

package rpc

// raceEnabled says the race detector is on: it inflates what memory
// costs, so memory bounds are not asserted under it.
const raceEnabled = true
