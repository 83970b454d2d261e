package engine

import (
	"context"
	"sync"
	"time"

	"github.com/flowfabric/flowfabric/ffstore"
)

// StoreClock is the production clock: it samples the store's clock at most about once a
// second and adds the local monotonic time elapsed since the sample, so every process on
// one store agrees on the time without asking the store on every call.
type StoreClock struct {
	store    ffstore.Store
	interval time.Duration

	mu        sync.Mutex
	base      time.Time // store time at the last sample
	sampledAt time.Time // local time (with monotonic reading) of the last sample
	sampling  bool      // a caller is sampling the store; the others extrapolate meanwhile
	last      time.Time // the latest time Now returned
}

// NewStoreClock returns a clock that follows store's clock.
func NewStoreClock(store ffstore.Store) *StoreClock {
	return &StoreClock{store: store, interval: time.Second}
}

// Now returns the store's time as of the last sample plus the local elapsed time. When a
// new sample is due, one caller takes it (outside the lock) while the others keep
// extrapolating, so a slow store delays no one else. If the store cannot be reached the
// clock keeps extrapolating from the last good sample, or uses the local clock if there
// never was one.
func (c *StoreClock) Now() time.Time {
	c.mu.Lock()
	local := time.Now()
	due := c.base.IsZero() || local.Sub(c.sampledAt) >= c.interval
	if !due || c.sampling {
		defer c.mu.Unlock()
		return c.ahead(c.extrapolate(local))
	}
	c.sampling = true
	c.mu.Unlock()

	ctx, cancel := context.WithTimeout(context.Background(), time.Second)
	sent := time.Now()
	t, err := c.store.Now(ctx)
	cancel()
	now := time.Now()

	c.mu.Lock()
	defer c.mu.Unlock()
	c.sampling = false
	if err == nil {
		// The store read its clock somewhere in the round trip: take its middle.
		c.base, c.sampledAt = t, sent.Add(now.Sub(sent)/2)
	}
	return c.ahead(c.extrapolate(now))
}

// extrapolate returns the store's time at local time local, from the last sample (the
// local clock if there never was one). c.mu is held.
func (c *StoreClock) extrapolate(local time.Time) time.Time {
	if c.base.IsZero() {
		return local
	}
	return c.base.Add(local.Sub(c.sampledAt))
}

// ahead returns t, or the latest time the clock returned if t is before it: the clock never
// runs backwards, though a new sample may be behind what it extrapolated (a slow reply, the
// store's clock stepped back); it then stands still until the store's time passes it. c.mu
// is held.
func (c *StoreClock) ahead(t time.Time) time.Time {
	if t.Before(c.last) {
		return c.last
	}
	c.last = t
	return t
}

// SleepUntil waits until the clock reads t, or until wake fires or ctx is done.
func (c *StoreClock) SleepUntil(ctx context.Context, until time.Time, wake <-chan struct{}) error {
	t := time.NewTimer(until.Sub(c.Now()))
	defer t.Stop()
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-wake:
		return nil
	case <-t.C:
		return nil
	}
}
