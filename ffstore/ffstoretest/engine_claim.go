package ffstoretest

import (
	"context"
	"fmt"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/flowfabric/flowfabric/ffstore"
	"github.com/flowfabric/flowfabric/fftype"
	"github.com/flowfabric/flowfabric/internal/engine"
)

func exerciseClaim(t *testing.T, newStore func(t *testing.T) ffstore.Store) {
	t.Parallel()
	setup := func(t *testing.T) *engineBundle { return newEngineBundle(t, newStore) }

	t.Run("Basic", func(t *testing.T) {
		t.Parallel()
		b := setup(t)
		id := b.create(t, fftype.CreateParams{Payload: []byte(`"hello"`), Tags: map[string]string{"a": "b"}})
		l := b.claimOne(t, id)
		require.Equal(t, `"hello"`, string(l.Payload))
		require.Equal(t, fftype.EncodingJSON, l.Encoding)
		require.Equal(t, uint64(1), l.Fence.Epoch)
		require.True(t, l.Fence.Complete())
		require.Equal(t, 0, l.AttemptIndex)
		require.Equal(t, fftype.AttemptInitial, l.AttemptType)
		require.False(t, l.Resumed)
		require.Equal(t, suiteStart.Add(fftype.DefaultLeaseTTL), l.ExpiresAt.UTC())
		require.Equal(t, "b", l.Tags["a"])
		x := b.get(t, id)
		require.Equal(t, fftype.StateActive, x.PublicState())
		require.Equal(t, "w", x.WorkerID)
		require.Equal(t, "w-1", x.WorkerInstanceID)
		atts, err := b.engine.Attempts(b.ctx, id)
		require.NoError(t, err)
		require.Len(t, atts, 1)
		require.Equal(t, fftype.AttemptStarted, atts[0].Status)
		require.Equal(t, l.Fence.AttemptID, atts[0].ID)
		require.Empty(t, b.claim(t, "w", 1), "a claimed execution is not claimed twice")
	})

	t.Run("PriorityThenFIFO", func(t *testing.T) {
		t.Parallel()
		b := setup(t)
		low1 := b.create(t, fftype.CreateParams{Priority: 1})
		b.clock.Advance(time.Millisecond)
		high := b.create(t, fftype.CreateParams{Priority: 500})
		b.clock.Advance(time.Millisecond)
		low2 := b.create(t, fftype.CreateParams{Priority: 1})
		b.clock.Advance(time.Millisecond)
		top := b.create(t, fftype.CreateParams{Priority: fftype.MaxPriority})
		var order []fftype.ExecutionID
		for range 4 {
			order = append(order, b.claimOne(t, "").ExecutionID)
		}
		require.Equal(t, []fftype.ExecutionID{top, high, low1, low2}, order)
	})

	t.Run("Batch", func(t *testing.T) {
		t.Parallel()
		b := setup(t)
		for range 25 {
			b.create(t, fftype.CreateParams{})
		}
		require.Len(t, b.claim(t, "w", 10), 10)
		require.Len(t, b.claim(t, "w", 100), 15)
		require.Empty(t, b.claim(t, "w", 100))
	})

	t.Run("Capabilities", func(t *testing.T) {
		t.Parallel()
		b := setup(t)
		gpu := b.create(t, fftype.CreateParams{Capabilities: []string{"gpu", "cuda"}})
		plain := b.create(t, fftype.CreateParams{})
		p := claimParams("cpu", 10)
		p.Capabilities = []string{"gpu"}
		leases, err := b.engine.Claim(b.ctx, p)
		require.NoError(t, err)
		require.Len(t, leases, 1, "a worker lacking cuda must not see the gpu execution")
		require.Equal(t, plain, leases[0].ExecutionID)
		p = claimParams("gpu", 10)
		p.Capabilities = []string{"cuda", "gpu", "ssd"}
		leases, err = b.engine.Claim(b.ctx, p)
		require.NoError(t, err)
		require.Len(t, leases, 1)
		require.Equal(t, gpu, leases[0].ExecutionID)
		require.Equal(t, []string{"cuda", "gpu"}, b.get(t, gpu).Capabilities, "required capabilities are stored sorted")
	})

	t.Run("LongCapabilities", func(t *testing.T) {
		t.Parallel()
		b := setup(t)
		need := longCapabilities(100) // 3,899 bytes joined: too long for a Postgres index row
		id := b.create(t, fftype.CreateParams{Capabilities: need})
		refused := [][]string{nil, {"gpu"}, need[1:], append(slices.Clone(need[:99]), "model-zz")}
		for _, caps := range refused {
			p := claimParams("w", 10)
			p.Capabilities = caps
			leases, err := b.engine.Claim(b.ctx, p)
			require.NoError(t, err)
			require.Empty(t, leases, "a worker lacking one of the capabilities must not see the execution")
		}
		p := claimParams("w", 10)
		p.Capabilities = append(slices.Clone(need), "ssd")
		leases, err := b.engine.Claim(b.ctx, p)
		require.NoError(t, err)
		require.Len(t, leases, 1)
		require.Equal(t, id, leases[0].ExecutionID)
		require.Equal(t, need, b.get(t, id).Capabilities)

		// Released, it is eligible again, and an engine that never saw the set (an empty
		// cache) hands it out only to a worker covering it.
		require.NoError(t, b.engine.Release(b.ctx, id, leases[0].Fence))
		b.check(t, id)
		fresh, err := engine.New(b.store, &engine.Config{Clock: b.clock, Retention: suiteRetention})
		require.NoError(t, err)
		p.Capabilities = need[1:]
		leases, err = fresh.Claim(b.ctx, p)
		require.NoError(t, err)
		require.Empty(t, leases)
		p.Capabilities = need
		leases, err = fresh.Claim(b.ctx, p)
		require.NoError(t, err)
		require.Len(t, leases, 1)
		require.Equal(t, id, leases[0].ExecutionID)
		b.check(t, id)
	})

	t.Run("Validation", func(t *testing.T) {
		t.Parallel()
		b := setup(t)
		b.create(t, fftype.CreateParams{})
		cases := []struct {
			name string
			edit func(p *fftype.ClaimParams)
			code string
		}{
			{"NoWorker", func(p *fftype.ClaimParams) { p.WorkerID = "" }, fftype.CodeInvalidInput},
			{"NoInstance", func(p *fftype.ClaimParams) { p.WorkerInstanceID = "" }, fftype.CodeInvalidInput},
			{"NoLanes", func(p *fftype.ClaimParams) { p.Lanes = nil }, fftype.CodeInvalidLane},
			{"BadLane", func(p *fftype.ClaimParams) { p.Lanes = []string{"a\x00"} }, fftype.CodeInvalidLane},
			{"BadCaps", func(p *fftype.ClaimParams) { p.Capabilities = []string{"a b"} }, fftype.CodeInvalidCapabilities},
			{"CountHigh", func(p *fftype.ClaimParams) { p.Count = fftype.MaxClaimCount + 1 }, fftype.CodeInvalidInput},
			{"CountNegative", func(p *fftype.ClaimParams) { p.Count = -1 }, fftype.CodeInvalidInput},
			{"TTLShort", func(p *fftype.ClaimParams) { p.LeaseTTL = fftype.Duration(time.Millisecond) }, fftype.CodeInvalidInput},
		}
		for _, tc := range cases {
			p := claimParams("w", 1)
			tc.edit(&p)
			_, err := b.engine.Claim(b.ctx, p)
			requireCode(t, err, fftype.KindValidation, tc.code)
		}
		require.Len(t, b.claim(t, "w", 1), 1, "refused claims took nothing")
	})

	t.Run("Fairness", func(t *testing.T) {
		t.Parallel()
		b := setup(t)
		// Two busy namespaces, then one with a single execution created last.
		for i := range 40 {
			b.create(t, fftype.CreateParams{Namespace: "busy-a"})
			b.create(t, fftype.CreateParams{Namespace: "busy-c"})
			if i == 0 {
				b.clock.Advance(time.Millisecond)
			}
		}
		b.clock.Advance(time.Millisecond)
		lone := b.create(t, fftype.CreateParams{Namespace: "lone-b"})
		for i := 0; ; i++ {
			require.Less(t, i, 3, "a namespace with one execution is served within as many claims as there are namespaces")
			if b.claimOne(t, "").ExecutionID == lone {
				break
			}
		}
		// Among the rest the two busy namespaces alternate.
		counts := map[string]int{}
		for range 20 {
			counts[b.claimOne(t, "").Namespace]++
		}
		require.InDelta(t, 10, counts["busy-a"], 1)
		require.InDelta(t, 10, counts["busy-c"], 1)
	})

	t.Run("PausedLane", func(t *testing.T) {
		t.Parallel()
		b := setup(t)
		id := b.create(t, fftype.CreateParams{})
		require.NoError(t, b.engine.PauseLane(b.ctx, suiteLane))
		info, err := b.engine.Lane(b.ctx, suiteLane)
		require.NoError(t, err)
		require.True(t, info.Paused)
		require.Empty(t, b.claim(t, "w", 1))
		require.NoError(t, b.engine.PauseLane(b.ctx, suiteLane), "pausing twice is fine")
		require.NoError(t, b.engine.ResumeLane(b.ctx, suiteLane))
		b.claimOne(t, id)
		requireCode(t, b.engine.PauseLane(b.ctx, ""), fftype.KindValidation, fftype.CodeInvalidLane)

		// Another process sees a pause within a second of its own clock.
		other, err := engine.New(b.store, &engine.Config{Clock: b.clock})
		require.NoError(t, err)
		b.create(t, fftype.CreateParams{})
		b.create(t, fftype.CreateParams{})
		got, err := other.Claim(b.ctx, claimParams("o", 1))
		require.NoError(t, err)
		require.Len(t, got, 1, "the other process read the lane as running")
		require.NoError(t, b.engine.PauseLane(b.ctx, suiteLane))
		b.clock.Advance(time.Second)
		got, err = other.Claim(b.ctx, claimParams("o", 1))
		require.NoError(t, err)
		require.Empty(t, got, "a second later the other process sees the pause")
		require.NoError(t, b.engine.ResumeLane(b.ctx, suiteLane))
		got, err = other.Claim(b.ctx, claimParams("o", 1))
		require.NoError(t, err)
		require.Len(t, got, 1, "the other process sees a resume at its next claim, with no time passed")
	})

	t.Run("ConcurrentClaimers", func(t *testing.T) {
		t.Parallel()
		b := setup(t)
		const total = 300
		var ps []fftype.CreateParams
		for range total {
			ps = append(ps, fftype.CreateParams{Lane: suiteLane, Kind: suiteKind})
		}
		for _, r := range b.engine.CreateMany(b.ctx, ps) {
			require.NoError(t, r.Err)
		}
		var mu sync.Mutex
		seen := map[fftype.ExecutionID]int{}
		var wg sync.WaitGroup
		errs := make(chan error, 50)
		for g := range 50 {
			wg.Add(1)
			go func() {
				defer wg.Done()
				w := fmt.Sprintf("w%d", g)
				for {
					leases, err := b.engine.Claim(b.ctx, claimParams(w, 1+g%3))
					if err != nil {
						errs <- err
						return
					}
					if len(leases) == 0 {
						return
					}
					if len(leases) > 1+g%3 {
						errs <- fmt.Errorf("%s asked for %d and got %d", w, 1+g%3, len(leases))
						return
					}
					// Calls are served together; each lease is still in its caller's name.
					for _, l := range leases {
						x, err := b.engine.Get(b.ctx, l.ExecutionID)
						if err != nil {
							errs <- err
							return
						}
						if x.WorkerID != w || x.LeaseID != l.Fence.LeaseID {
							errs <- fmt.Errorf("%s got a lease held by %s", w, x.WorkerID)
							return
						}
					}
					mu.Lock()
					for _, l := range leases {
						seen[l.ExecutionID]++
					}
					mu.Unlock()
					for _, l := range leases {
						if err := b.engine.Complete(b.ctx, l.ExecutionID, l.Fence, nil, ""); err != nil {
							errs <- err
							return
						}
					}
				}
			}()
		}
		wg.Wait()
		close(errs)
		for err := range errs {
			require.NoError(t, err)
		}
		require.Len(t, seen, total)
		for id, n := range seen {
			require.Equal(t, 1, n, "execution %s claimed %d times", id, n)
		}
	})

	t.Run("CancelledClaimTakesNothing", func(t *testing.T) {
		t.Parallel()
		b := setup(t)
		id := b.create(t, fftype.CreateParams{})
		ctx, cancel := context.WithCancel(b.ctx)
		cancel()
		leases, err := b.engine.Claim(ctx, claimParams("w", 1))
		require.ErrorIs(t, err, context.Canceled)
		require.Empty(t, leases)
		require.Equal(t, fftype.StateWaiting, b.state(t, id))
	})

	t.Run("ConflictRetries", func(t *testing.T) {
		t.Parallel()
		b := setup(t)
		inj, ok := b.store.(ConflictInjector)
		if !ok {
			t.Logf("store cannot inject conflicts; the engine's retry path is exercised on stores that can")
			return
		}
		inj.InjectConflicts(3)
		id := b.create(t, fftype.CreateParams{})
		inj.InjectConflicts(3)
		l := b.claimOne(t, id)
		inj.InjectConflicts(3)
		require.NoError(t, b.engine.Complete(b.ctx, id, l.Fence, []byte(`1`), ""))
		require.Equal(t, fftype.StateCompleted, b.state(t, id))
		require.Equal(t, []fftype.EventType{fftype.EventCreated, fftype.EventClaimed, fftype.EventCompleted}, b.events(t, id),
			"a retried unit applies once")
	})
}
