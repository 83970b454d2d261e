package engine

import (
	"context"

	"github.com/flowfabric/flowfabric/ffstore"
)

// maxSweepReads bounds the events one sweep of one shard reads to find the age cutoff.
const maxSweepReads = 16 * eventBatch

// SweepEvents deletes, on every shard, the events that every registered durable consumer
// has passed and those older than the maximum age. It returns how many it deleted. The
// timer loop runs it on its shards; tests call it after moving a fake clock.
func (e *Engine) SweepEvents(ctx context.Context) (int, error) { return e.sweepEvents(ctx, nil) }

func (e *Engine) sweepEvents(ctx context.Context, only map[int]bool) (int, error) {
	total := 0
	for s := 0; s < e.shards; s++ {
		if only != nil && !only[s] {
			continue
		}
		n, err := e.sweepShard(ctx, s)
		total += n
		if err != nil {
			return total, err
		}
	}
	return total, nil
}

func (e *Engine) sweepShard(ctx context.Context, shard int) (int, error) {
	trimmed, last, err := e.store.EventBounds(ctx, shard)
	if err != nil || last == trimmed {
		return 0, err
	}
	// Everything every registered consumer has passed may go.
	through := uint64(0)
	err = e.store.View(ctx, shard, func(tx ffstore.ReadTx) error {
		slowest, err := tx.Range(queueCursors, nil, ffstore.MaxScore, 1)
		if err == nil && len(slowest) == 1 {
			through = uint64(slowest[0].Score)
		}
		return err
	})
	if err != nil {
		return 0, err
	}
	// So may everything older than the maximum age, consumers or not.
	cutoff := e.now().Add(-e.cfg.EventMaxAge)
	pos := max(trimmed, through)
	for read := 0; read < maxSweepReads && pos < last; read += eventBatch {
		evs, err := e.store.ReadEvents(ctx, shard, pos, eventBatch)
		if err != nil {
			return 0, err
		}
		stop := false
		for _, ev := range evs {
			if ev.Time.After(cutoff) {
				stop = true
				break
			}
			pos = ev.Seq
		}
		if stop || len(evs) < eventBatch {
			break
		}
	}
	through = max(through, pos)
	if through <= trimmed {
		return 0, nil
	}
	if err := e.store.TrimEvents(ctx, shard, through); err != nil {
		return 0, err
	}
	return int(through - trimmed), nil
}
