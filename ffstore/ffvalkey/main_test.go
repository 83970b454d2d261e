package ffvalkey_test

import (
	"fmt"
	"os"
	"testing"

	"go.uber.org/goleak"

	"github.com/flowfabric/flowfabric/internal/testdb"
)

func TestMain(m *testing.M) {
	// testdb.RedisMain stops the shared server and Cluster once the tests are done.
	code := testdb.RedisMain(m)
	if code == 0 {
		// rueidis's Cluster client closes connections its topology refresh replaced five
		// seconds later, in a goroutine of its own that outlives Close by design. A client
		// whose NewClient failed (a wrong password, SELECT refused) has also scheduled a
		// lazy topology refresh, which sleeps up to a second before it finds the client
		// closed.
		if err := goleak.Find(goleak.IgnoreAnyFunction("github.com/redis/rueidis.(*clusterClient)._refresh.func2"),
			goleak.IgnoreAnyFunction("github.com/redis/rueidis.(*call).DelayDo.func1")); err != nil {
			fmt.Fprintln(os.Stderr, "goleak:", err)
			code = 1
		}
	}
	os.Exit(code)
}
