package ffmem_test

import (
	"testing"

	"go.uber.org/goleak"
)

// TestMain fails the package's tests if a goroutine outlives them: the conformance suite
// starts many, and every one must end.
func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}
