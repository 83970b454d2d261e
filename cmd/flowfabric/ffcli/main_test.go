package ffcli

import (
	"testing"

	"go.uber.org/goleak"
)

// TestMain fails the package if a test leaves a goroutine behind (the demo and the
// benchmarks start clients, stores and workers).
func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }
