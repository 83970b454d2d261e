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
	// Sleep blocks until d has passed on this clock, or ctx is done (returning ctx.Err()).
	// A wake-up sent on wake ends the sleep early and returns nil; wake may be nil.
	Sleep(ctx context.Context, d time.Duration, wake <-chan struct{}) error
}
