package ffcli

import (
	"context"
	"os"
	"os/signal"
	"sync"
	"syscall"
	"time"
)

// repeatSignalGap is how soon after the first stop signal another one is taken for the
// same: a single Ctrl-C can arrive twice (a terminal sends it to the whole foreground
// group, a command just started included), and no one presses Ctrl-C twice faster.
const repeatSignalGap = 250 * time.Millisecond

// stopSignals are the signals that stop the worker: a terminal's Ctrl-C, and what a
// service manager sends.
var stopSignals = []os.Signal{os.Interrupt, syscall.SIGTERM} //nolint:gochecknoglobals // a constant list

// NotifyStop returns a copy of ctx that the first SIGINT or SIGTERM cancels, which starts a
// graceful stop, and calls exit on another signal that arrives at least 250 ms after the
// first (one sooner counts as the same). stop releases the signals and cancels the
// context; it may be called more than once.
func NotifyStop(ctx context.Context, exit func()) (_ context.Context, stop func()) {
	ctx, cancel := context.WithCancel(ctx)
	sigs := make(chan os.Signal, 1)
	signal.Notify(sigs, stopSignals...)
	quit := make(chan struct{})
	go watchStopSignals(sigs, quit, cancel, exit)
	var once sync.Once
	return ctx, func() {
		once.Do(func() {
			signal.Stop(sigs)
			close(quit)
			cancel()
		})
	}
}

// watchStopSignals calls stop on the first signal from sigs and exit on a later one at
// least repeatSignalGap after it, then returns; it returns as well once quit is closed.
func watchStopSignals(sigs <-chan os.Signal, quit <-chan struct{}, stop, exit func()) {
	var first time.Time
	for {
		select {
		case <-quit:
			return
		case <-sigs:
		}
		switch {
		case first.IsZero():
			first = time.Now()
			stop()
		case time.Since(first) >= repeatSignalGap:
			exit()
			return
		}
	}
}
