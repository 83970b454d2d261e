package fftype

import (
	"context"
	"time"
)

// Clock is the engine's source of time. Every timestamp the engine writes comes from it;
// no transition reads the store's time or time.Now directly.
type Clock interface {
	// Now returns the current time.
	Now() time.Time
	// SleepUntil blocks until the clock reads t or later, or ctx is done (returning
	// ctx.Err()). A value received on wake ends the sleep early and returns nil; wake may
	// be nil. Sleeping until an absolute time, rather than for a duration, means a clock
	// that moves between reading it and sleeping cannot make the sleeper oversleep.
	SleepUntil(ctx context.Context, t time.Time, wake <-chan struct{}) error
}
