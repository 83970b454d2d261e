package flowfabric_test

import (
	"context"
	"errors"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/flowfabric/flowfabric/ffstore"
	"github.com/flowfabric/flowfabric/ffstore/ffmem"
	"github.com/flowfabric/flowfabric/fftype"
)

// faultStore is the memory store failing on demand, as a store behind a flaky network
// does. A unit that appends an event of a chosen type can lose its reply (it commits, then
// answers an unavailable error) or fail before it commits (it writes nothing and answers
// the same error); EventBounds can fail; and once hung, every unit waits until its context
// ends, as on a store that stopped answering.
type faultStore struct {
	ffstore.Store

	mu      sync.Mutex
	lose    map[fftype.EventType]int // replies to lose, by event type
	fail    map[fftype.EventType]int // units to fail before they commit, by event type
	bounds  int                      // EventBounds reads to fail
	onFault func()                   // if set, called after a unit's injected failure

	hung    atomic.Bool
	waiting atomic.Int32 // units waiting on the hung store
}

func newFaultStore(shards int) *faultStore {
	return &faultStore{
		Store: ffmem.New(&ffmem.Options{Shards: shards}),
		lose:  map[fftype.EventType]int{},
		fail:  map[fftype.EventType]int{},
	}
}

// loseReplies makes the next n units appending an event of type typ commit and then
// answer an unavailable error.
func (s *faultStore) loseReplies(typ fftype.EventType, n int) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.lose[typ] += n
}

// failUnits makes the next n units appending an event of type typ write nothing and
// answer an unavailable error.
func (s *faultStore) failUnits(typ fftype.EventType, n int) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.fail[typ] += n
}

// failBounds makes the next n EventBounds reads fail (a subscription from the end of
// the log cannot open).
func (s *faultStore) failBounds(n int) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.bounds += n
}

// waitHung waits until n units wait on the hung store.
func (s *faultStore) waitHung(t *testing.T, n int32) {
	t.Helper()
	require.Eventually(t, func() bool { return s.waiting.Load() == n }, waitLimit, time.Millisecond)
}

// take consumes a rule of m for one of types.
func (s *faultStore) take(m map[fftype.EventType]int, types []fftype.EventType) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, typ := range types {
		if m[typ] > 0 {
			m[typ]--
			return true
		}
	}
	return false
}

// unitFault reports the injected failure of a unit.
func (s *faultStore) unitFault() error {
	s.mu.Lock()
	f := s.onFault
	s.mu.Unlock()
	if f != nil {
		f()
	}
	return errFault()
}

func errFault() error {
	return fftype.NewError(fftype.KindUnavailable, fftype.CodeStoreUnavailable, "injected fault")
}

// eventTx records the types of the events a unit appends.
type eventTx struct {
	ffstore.Tx
	types []fftype.EventType
}

func (t *eventTx) AppendEvent(ev fftype.Event) {
	t.types = append(t.types, ev.Type)
	t.Tx.AppendEvent(ev)
}

var errInjected = errors.New("injected failure before commit")

func (s *faultStore) Update(ctx context.Context, shard int, fn func(tx ffstore.Tx) error) error {
	if s.hung.Load() {
		s.waiting.Add(1)
		defer s.waiting.Add(-1)
		<-ctx.Done()
		return ctx.Err()
	}
	var types []fftype.EventType
	err := s.Store.Update(ctx, shard, func(tx ffstore.Tx) error {
		et := &eventTx{Tx: tx}
		if err := fn(et); err != nil {
			return err
		}
		types = et.types
		if s.take(s.fail, types) {
			return errInjected
		}
		return nil
	})
	if errors.Is(err, errInjected) || err == nil && s.take(s.lose, types) {
		return s.unitFault()
	}
	return err
}

func (s *faultStore) EventBounds(ctx context.Context, shard int) (uint64, uint64, error) {
	s.mu.Lock()
	fail := s.bounds > 0
	if fail {
		s.bounds--
	}
	s.mu.Unlock()
	if fail {
		return 0, 0, errFault()
	}
	return s.Store.EventBounds(ctx, shard)
}

func (s *faultStore) Changes(ctx context.Context) <-chan struct{} {
	return s.Store.(ffstore.ChangeNotifier).Changes(ctx)
}
