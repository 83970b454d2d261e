// Package fftest helps users test code built on FlowFabric.
package fftest

import (
	"context"
	"sync"
	"time"

	"github.com/flowfabric/flowfabric/fftype"
)

// Clock is a fake fftype.Clock for tests. Time stands still until Advance or Set moves it;
// sleepers wake when the time they wait for is reached. It is safe for concurrent use.
type Clock struct {
	mu       sync.Mutex
	now      time.Time
	sleepers map[chan struct{}]time.Time
}

var _ fftype.Clock = (*Clock)(nil)

// NewClock returns a fake clock reading start.
func NewClock(start time.Time) *Clock {
	return &Clock{now: start, sleepers: map[chan struct{}]time.Time{}}
}

// Now returns the clock's current time.
func (c *Clock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.now
}

// Advance moves the clock forward by d and wakes sleepers whose time has come.
// It panics if d is negative.
func (c *Clock) Advance(d time.Duration) {
	if d < 0 {
		panic("fftest: Clock.Advance with a negative duration")
	}
	c.mu.Lock()
	c.set(c.now.Add(d))
	c.mu.Unlock()
}

// Set moves the clock to t, which must not be before the current time, and wakes sleepers
// whose time has come. It panics if t is in the clock's past.
func (c *Clock) Set(t time.Time) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if t.Before(c.now) {
		panic("fftest: Clock.Set into the past")
	}
	c.set(t)
}

func (c *Clock) set(t time.Time) {
	c.now = t
	for ch, at := range c.sleepers {
		if !at.After(t) {
			close(ch)
			delete(c.sleepers, ch)
		}
	}
}

// SleepUntil blocks until the clock reads t or later, wake fires, or ctx is done.
func (c *Clock) SleepUntil(ctx context.Context, t time.Time, wake <-chan struct{}) error {
	c.mu.Lock()
	if !t.After(c.now) {
		c.mu.Unlock()
		return ctx.Err()
	}
	ch := make(chan struct{})
	c.sleepers[ch] = t
	c.mu.Unlock()
	defer func() {
		c.mu.Lock()
		delete(c.sleepers, ch)
		c.mu.Unlock()
	}()
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-wake:
		return nil
	case <-ch:
		return nil
	}
}
