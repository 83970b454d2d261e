// Package ffstoretest is the conformance suite every store passes. A store's test calls
// [Exercise] with a constructor; the suite checks each verb of [ffstore.Store] on its own
// and, as they land, the behaviour of the engine on top of the store. Stores prove their
// behaviour here rather than in store-specific tests, so that every store behaves alike.
//
// The suite never sleeps and works with any shard count of at least one. Like the
// contract, it is not stable.
package ffstoretest

import (
	"testing"

	"github.com/flowfabric/flowfabric/ffstore"
)

// ConflictInjector is an optional ability of a store used in tests: InjectConflicts makes
// the next n unit commits fail with an error matching fftype.ErrStoreConflict after fn ran,
// writing nothing, so that callers' retries can be tested. The suite finds it by type
// assertion and checks it when present.
type ConflictInjector interface {
	InjectConflicts(n int)
}

// Exercise runs the conformance suite against the store newStore returns. newStore is
// called once per subtest, which runs in parallel with the others, and must return a fresh,
// empty store of its own; it registers any cleanup with t. The suite may Close the store
// it was given, so a cleanup that closes it again must ignore the error.
func Exercise(t *testing.T, newStore func(t *testing.T) ffstore.Store) {
	t.Helper()

	t.Run("Verbs", func(t *testing.T) { exerciseVerbs(t, newStore) })
	t.Run("Create", func(t *testing.T) { exerciseCreate(t, newStore) })
	t.Run("Claim", func(t *testing.T) { exerciseClaim(t, newStore) })
	t.Run("Lease", func(t *testing.T) { exerciseLease(t, newStore) })
	t.Run("Timers", func(t *testing.T) { exerciseTimers(t, newStore) })
	t.Run("Admin", func(t *testing.T) { exerciseAdmin(t, newStore) })
	t.Run("Events", func(t *testing.T) { exerciseEvents(t, newStore) })
	t.Run("Workers", func(t *testing.T) { exerciseWorkers(t, newStore) })
}
