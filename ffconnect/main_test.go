package ffconnect_test

import (
	"fmt"
	"os"
	"testing"

	"go.uber.org/goleak"

	"github.com/flowfabric/flowfabric/internal/testdb"
)

func TestMain(m *testing.M) {
	// Open's Postgres and Redis cases run against the shared throw-away servers, stopped
	// once the tests are done.
	code := testdb.Main(m)
	testdb.RedisStopShared()
	if code == 0 {
		if err := goleak.Find(); err != nil {
			fmt.Fprintln(os.Stderr, "goleak:", err)
			code = 1
		}
	}
	os.Exit(code)
}
