package flowfabric_test

import (
	"os"
	"testing"

	"go.uber.org/goleak"
)

func TestMain(m *testing.M) {
	// A re-executed copy of this binary (see startVictim) runs only its helper and exits.
	if os.Getenv(envHelper) != "" {
		os.Exit(victimMain())
	}
	goleak.VerifyTestMain(m)
}
