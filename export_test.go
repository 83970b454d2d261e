package flowfabric

import "time"

// WorkerSignals are a worker's test hooks.
type WorkerSignals = workerSignals

// EnableSignals turns on w's test hooks and returns them. Call it before the worker claims.
func EnableSignals(w *Worker) *WorkerSignals {
	s := &workerSignals{
		Renewed:   make(chan ExecutionID, 1000),
		Heartbeat: make(chan ExecutionID, 1000),
		Settled:   make(chan ExecutionID, 1000),
		Claimed:   make(chan ExecutionID, 1000),
		Idle:      make(chan ExecutionID, 1000),
		Full:      make(chan ExecutionID, 1000),
		Unclaimed: make(chan ExecutionID, 1),
	}
	w.signals.Store(s)
	return s
}

// WakeClaimLoop wakes w's Run waiting for a slot, as a freed slot does.
func WakeClaimLoop(w *Worker) { signal(w.freed) }

// SetIdleBackoff sets the first idle wait of w's Run. Call it before Run.
func SetIdleBackoff(w *Worker, d time.Duration) { w.idleBackoff = d }

// SetCleanupWindow sets w's clean-up window (10s by default). Call it before Run.
func SetCleanupWindow(w *Worker, d time.Duration) { w.cleanupTime = d }
