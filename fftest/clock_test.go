package fftest

import (
	"context"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

func TestClock(t *testing.T) {
	t.Parallel()
	start := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	c := NewClock(start)
	require.Equal(t, start, c.Now())
	c.Advance(time.Second)
	require.Equal(t, start.Add(time.Second), c.Now())
	require.Panics(t, func() { c.Advance(-1) })
	require.Panics(t, func() { c.Set(start) })

	require.NoError(t, c.SleepUntil(t.Context(), start, nil), "a time already passed returns at once")

	done := make(chan error, 1)
	go func() { done <- c.SleepUntil(t.Context(), start.Add(time.Minute), nil) }()
	require.Eventually(t, func() bool { c.mu.Lock(); defer c.mu.Unlock(); return len(c.sleepers) == 1 }, time.Second, time.Millisecond)
	c.Advance(30 * time.Second)
	select {
	case <-done:
		t.Fatal("woke before its time")
	default:
	}
	c.Set(start.Add(time.Minute))
	require.NoError(t, <-done)

	wake := make(chan struct{}, 1)
	wake <- struct{}{}
	require.NoError(t, c.SleepUntil(t.Context(), start.Add(time.Hour), wake))
	ctx, cancel := context.WithCancel(t.Context())
	cancel()
	require.ErrorIs(t, c.SleepUntil(ctx, start.Add(time.Hour), nil), context.Canceled)
}
