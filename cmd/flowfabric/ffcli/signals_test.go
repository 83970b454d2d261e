package ffcli

import (
	"os"
	"sync/atomic"
	"testing"
	"testing/synctest"
	"time"

	"github.com/stretchr/testify/require"
)

// TestSecondSignalCountsOnlyAfterAGap pins that a signal arriving within repeatSignalGap
// of the first is the same Ctrl-C (a terminal's reaches a command just started as well,
// and one was seen to arrive twice), not a second one that ends the process at once.
func TestSecondSignalCountsOnlyAfterAGap(t *testing.T) {
	t.Parallel()
	synctest.Test(t, func(t *testing.T) {
		sigs, quit := make(chan os.Signal), make(chan struct{})
		var stops, exits atomic.Int32
		done := make(chan struct{})
		go func() {
			defer close(done)
			watchStopSignals(sigs, quit, func() { stops.Add(1) }, func() { exits.Add(1) })
		}()

		sigs <- os.Interrupt
		synctest.Wait()
		require.Equal(t, int32(1), stops.Load(), "the first signal starts the stop")
		time.Sleep(repeatSignalGap / 2)
		sigs <- os.Interrupt
		synctest.Wait()
		require.Zero(t, exits.Load(), "a repeat within the gap is the same Ctrl-C")
		time.Sleep(repeatSignalGap / 2)
		sigs <- os.Interrupt
		<-done
		require.Equal(t, int32(1), exits.Load(), "a signal the gap after the first is a second Ctrl-C")
		require.Equal(t, int32(1), stops.Load())
	})
}
