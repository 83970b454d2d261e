package engine_test

import (
	"context"
	"errors"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/flowfabric/flowfabric/ffstore"
	"github.com/flowfabric/flowfabric/ffstore/ffmem"
	"github.com/flowfabric/flowfabric/fftest"
	"github.com/flowfabric/flowfabric/fftype"
	"github.com/flowfabric/flowfabric/internal/engine"
)

// hookStore runs afterView once, right after a View on shard 0 returned (the moment a
// claim has read the lane registry and not yet cached what it read), and can make the
// next Update fail after its fn ran (a commit that did not land).
type hookStore struct {
	ffstore.Store
	mu         sync.Mutex
	afterView  func()
	failUpdate bool
}

func (s *hookStore) View(ctx context.Context, shard int, fn func(tx ffstore.ReadTx) error) error {
	err := s.Store.View(ctx, shard, fn)
	s.mu.Lock()
	h := s.afterView
	if shard == 0 {
		s.afterView = nil
	} else {
		h = nil
	}
	s.mu.Unlock()
	if h != nil {
		h()
	}
	return err
}

var errCommitLost = errors.New("commit failed")

func (s *hookStore) Update(ctx context.Context, shard int, fn func(tx ffstore.Tx) error) error {
	s.mu.Lock()
	fail := s.failUpdate
	s.failUpdate = false
	s.mu.Unlock()
	if !fail {
		return s.Store.Update(ctx, shard, fn)
	}
	return s.Store.Update(ctx, shard, func(tx ffstore.Tx) error {
		if err := fn(tx); err != nil {
			return err
		}
		return errCommitLost // roll back: the unit ran but did not commit
	})
}

// newHookedEngine returns an engine on a one-shard memory store behind a hookStore, with
// a fake clock.
func newHookedEngine(t *testing.T) (*hookStore, *engine.Engine) {
	t.Helper()
	st := &hookStore{Store: ffmem.New(&ffmem.Options{Shards: 1})}
	e, err := engine.New(st, &engine.Config{Clock: fftest.NewClock(time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC))})
	require.NoError(t, err)
	return st, e
}

func claimLane(t *testing.T, e *engine.Engine, lane string) []*fftype.Lease {
	t.Helper()
	ls, err := e.Claim(t.Context(), fftype.ClaimParams{WorkerID: "w", WorkerInstanceID: "w-1", Lanes: []string{lane}})
	require.NoError(t, err)
	return ls
}

// TestPauseWinsOverAConcurrentClaimsRead: a claim that read the lane registry before a
// PauseLane of the same process committed does not cache its older "not paused" over the
// pause: claims made after PauseLane returned hand out nothing.
func TestPauseWinsOverAConcurrentClaimsRead(t *testing.T) {
	t.Parallel()
	ctx := t.Context()
	st, e := newHookedEngine(t)
	for range 3 {
		_, err := e.Create(ctx, fftype.CreateParams{Lane: "l", Kind: "k"})
		require.NoError(t, err)
	}
	paused := false
	st.mu.Lock()
	st.afterView = func() { // another goroutine pauses the lane while this claim is mid-way
		require.NoError(t, e.PauseLane(ctx, "l"))
		paused = true
	}
	st.mu.Unlock()
	claimLane(t, e, "l") // started before the pause: may take one
	require.True(t, paused)
	info, err := e.Lane(ctx, "l")
	require.NoError(t, err)
	require.True(t, info.Paused)
	require.Empty(t, claimLane(t, e, "l"), "a claim started after PauseLane returned must hand out nothing")
}

// TestPauseTakesEffectHereWhenPausedElsewhere: PauseLane takes effect at once in the
// calling process, also when another process paused the lane first.
func TestPauseTakesEffectHereWhenPausedElsewhere(t *testing.T) {
	t.Parallel()
	ctx := t.Context()
	clock := fftest.NewClock(time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC))
	store := ffmem.New(&ffmem.Options{Shards: 1})
	a, err := engine.New(store, &engine.Config{Clock: clock})
	require.NoError(t, err)
	b, err := engine.New(store, &engine.Config{Clock: clock})
	require.NoError(t, err)
	for range 3 {
		_, err := a.Create(ctx, fftype.CreateParams{Lane: "l", Kind: "k"})
		require.NoError(t, err)
	}
	require.Len(t, claimLane(t, a, "l"), 1) // a caches "not paused"
	require.NoError(t, b.PauseLane(ctx, "l"))
	require.NoError(t, a.PauseLane(ctx, "l"))
	require.Empty(t, claimLane(t, a, "l"), "PauseLane in this process must take effect here at once")
}

// TestResumeElsewhereTakesEffectAtTheNextClaim: a process re-reads a lane it holds as
// paused whenever a claim asks for it, so a ResumeLane made in another process takes
// effect at the next claim (a worker woken by the lane_resumed event finds the work),
// while a lane it holds as not paused is not read again for a second.
func TestResumeElsewhereTakesEffectAtTheNextClaim(t *testing.T) {
	t.Parallel()
	ctx := t.Context()
	clock := fftest.NewClock(time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC))
	st := &hookStore{Store: ffmem.New(&ffmem.Options{Shards: 1})}
	here, err := engine.New(st, &engine.Config{Clock: clock})
	require.NoError(t, err)
	there, err := engine.New(st, &engine.Config{Clock: clock})
	require.NoError(t, err)
	for range 2 {
		_, err := there.Create(ctx, fftype.CreateParams{Lane: "l", Kind: "k"})
		require.NoError(t, err)
	}
	require.NoError(t, there.PauseLane(ctx, "l"))
	require.Empty(t, claimLane(t, here, "l"), "here caches the lane as paused")
	require.NoError(t, there.ResumeLane(ctx, "l"))
	require.Len(t, claimLane(t, here, "l"), 1, "the clock stood still, yet the resume took effect here")

	read := false
	st.mu.Lock()
	st.afterView = func() { read = true }
	st.mu.Unlock()
	require.Len(t, claimLane(t, here, "l"), 1)
	require.False(t, read, "a lane cached as not paused is not read again within a second")
}

// TestFailedResumeLeavesTheLanePaused: a ResumeLane whose unit does not commit leaves
// the lane paused in this process as in the store.
func TestFailedResumeLeavesTheLanePaused(t *testing.T) {
	t.Parallel()
	ctx := t.Context()
	st, e := newHookedEngine(t)
	_, err := e.Create(ctx, fftype.CreateParams{Lane: "l", Kind: "k"})
	require.NoError(t, err)
	require.NoError(t, e.PauseLane(ctx, "l"))
	st.mu.Lock()
	st.failUpdate = true
	st.mu.Unlock()
	require.ErrorIs(t, e.ResumeLane(ctx, "l"), errCommitLost)
	info, err := e.Lane(ctx, "l")
	require.NoError(t, err)
	require.True(t, info.Paused, "the store still has the lane paused")
	require.Empty(t, claimLane(t, e, "l"), "a paused lane hands out nothing")
}
