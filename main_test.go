package flowfabric_test

import (
	"fmt"
	"os"
	"testing"

	"go.uber.org/goleak"

	"github.com/flowfabric/flowfabric/internal/testdb"
)

func TestMain(m *testing.M) {
	// A re-executed copy of this binary (see startVictim) runs only its helper and exits.
	if os.Getenv(envHelper) != "" {
		os.Exit(victimMain())
	}
	// The Postgres and Redis stores' worker tests share one throw-away server each; both are
	// stopped once the tests are done.
	code := testdb.Main(m)
	testdb.RedisStopShared()
	if code == 0 {
		// rueidis closes connections a topology refresh replaced a few seconds later, in a
		// goroutine of its own that outlives Close by design.
		if err := goleak.Find(goleak.IgnoreAnyFunction("github.com/redis/rueidis.(*clusterClient)._refresh.func2")); err != nil {
			fmt.Fprintln(os.Stderr, "goleak:", err)
			code = 1
		}
	}
	os.Exit(code)
}
