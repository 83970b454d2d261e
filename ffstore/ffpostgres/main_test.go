package ffpostgres_test

import (
	"fmt"
	"os"
	"testing"

	"go.uber.org/goleak"

	"github.com/flowfabric/flowfabric/internal/testdb"
)

func TestMain(m *testing.M) {
	// A re-executed copy of this binary (see TestHelperProcess) runs only its helper and
	// exits there; testdb.Main stops the shared server once the tests are done.
	code := testdb.Main(m)
	if code == 0 {
		if err := goleak.Find(); err != nil {
			fmt.Fprintln(os.Stderr, "goleak:", err)
			code = 1
		}
	}
	os.Exit(code)
}
