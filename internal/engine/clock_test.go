package engine

import (
	"context"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/flowfabric/flowfabric/ffstore"
	"github.com/flowfabric/flowfabric/ffstore/ffmem"
)

// steppedClockStore answers Now from a list of times, as a store whose clock is stepped.
type steppedClockStore struct {
	ffstore.Store
	mu    sync.Mutex
	times []time.Time
}

func (s *steppedClockStore) Now(context.Context) (time.Time, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	t := s.times[0]
	s.times = s.times[1:]
	return t, nil
}

// TestStoreClockNeverRunsBackwards: a sample behind what the clock already returned (the
// store's clock stepped back, or a slow reply) leaves the clock standing until the store's
// time passes it, rather than taking it back.
func TestStoreClockNeverRunsBackwards(t *testing.T) {
	t.Parallel()
	t0 := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	s := &steppedClockStore{Store: ffmem.New(nil), times: []time.Time{t0, t0.Add(-4 * time.Second), t0.Add(time.Minute)}}
	c := NewStoreClock(s)
	c.interval = 0 // every read samples the store

	first := c.Now()
	require.WithinDuration(t, t0, first, time.Second)
	second := c.Now()
	require.False(t, second.Before(first), "the clock went back by %s", first.Sub(second))
	require.WithinDuration(t, t0.Add(time.Minute), c.Now(), time.Second, "and goes on once the store's time passes it")
}
