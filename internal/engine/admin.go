package engine

import (
	"context"
	"encoding/json"
	"sort"
	"strconv"
	"time"

	"github.com/flowfabric/flowfabric/ffstore"
	"github.com/flowfabric/flowfabric/fftype"
)

// operatorUnit runs fn in a unit on execution id.
func (e *Engine) operatorUnit(ctx context.Context, id fftype.ExecutionID,
	fn func(tx ffstore.Tx, x *fftype.Execution, before placement, now time.Time) error) error {
	shard, err := e.checkID(id)
	if err != nil {
		return err
	}
	err = e.update(ctx, shard, func(tx ffstore.Tx) error {
		x, err := getExec(tx, id)
		if err != nil {
			return err
		}
		return fn(tx, x, placementOf(x), e.now())
	})
	if err == nil {
		e.notifyTimers()
	}
	return err
}

// ChangePriority sets the priority of a non-terminal execution. An eligible execution
// moves to its new place in the queue at once, keeping its age; others use it from their
// next time in the queue.
func (e *Engine) ChangePriority(ctx context.Context, id fftype.ExecutionID, priority int) error {
	if priority < 0 || priority > fftype.MaxPriority {
		return fftype.Validationf(fftype.CodeInvalidPriority, "priority %d is outside 0..%d", priority, fftype.MaxPriority)
	}
	return e.operatorUnit(ctx, id, func(tx ffstore.Tx, x *fftype.Execution, before placement, now time.Time) error {
		if x.Phase == fftype.PhaseTerminal {
			return fftype.Statef(fftype.CodeExecutionTerminal, "execution %s already ended as %s", id, x.PublicState())
		}
		old := x.Priority
		if old == priority {
			return nil
		}
		x.Priority, x.UpdatedAt = priority, now
		e.save(tx, before, x)
		appendEvent(tx, fftype.EventPriorityChanged, x, now, map[string]any{"from": old, "to": priority})
		return nil
	})
}

// SetTags merges tags into the execution's tags; a tag set to "" is removed.
func (e *Engine) SetTags(ctx context.Context, id fftype.ExecutionID, tags map[string]string) error {
	if len(tags) == 0 {
		return fftype.Validationf(fftype.CodeInvalidInput, "give 1 to %d tags to set or (with \"\") remove", 2*fftype.MaxTags)
	}
	// At most 64 tags set here; the count that matters is checked on the merged tags.
	if err := fftype.ValidateTags(tags); err != nil {
		return err
	}
	return e.operatorUnit(ctx, id, func(tx ffstore.Tx, x *fftype.Execution, before placement, now time.Time) error {
		merged := make(map[string]string, len(x.Tags)+len(tags))
		for k, v := range x.Tags {
			merged[k] = v
		}
		for k, v := range tags {
			if v == "" {
				delete(merged, k)
			} else {
				merged[k] = v
			}
		}
		if err := fftype.ValidateTags(merged); err != nil {
			return err
		}
		if len(merged) == 0 {
			merged = nil
		}
		x.Tags, x.UpdatedAt = merged, now
		e.save(tx, before, x)
		keys := make([]string, 0, len(tags))
		for k := range tags {
			keys = append(keys, k)
		}
		sort.Strings(keys)
		appendEvent(tx, fftype.EventTagsChanged, x, now, map[string]any{"keys": keys})
		return nil
	})
}

// Replay sends a terminal execution round again: it becomes eligible at once with fresh
// retry and reclaim budgets (RetryCount and ReclaimCount start again from 0), and its next
// claim starts a replay attempt. Replays are capped by the policy's MaxReplays. A
// deadline, if the policy has one, starts again from the replay.
func (e *Engine) Replay(ctx context.Context, id fftype.ExecutionID) error {
	return e.replay(ctx, id, false)
}

// ReplayFailed is Replay for an execution of the dead letter only: one that ended failed.
// Any other is refused with a state error coded execution_not_failed, in the same unit
// that would replay it.
func (e *Engine) ReplayFailed(ctx context.Context, id fftype.ExecutionID) error {
	return e.replay(ctx, id, true)
}

func (e *Engine) replay(ctx context.Context, id fftype.ExecutionID, onlyFailed bool) error {
	return e.operatorUnit(ctx, id, func(tx ffstore.Tx, x *fftype.Execution, before placement, now time.Time) error {
		if onlyFailed && x.PublicState() != fftype.StateFailed {
			return fftype.Statef(fftype.CodeExecutionNotFailed, "execution %s is %s, not in the dead letter", id, x.PublicState())
		}
		if x.Phase != fftype.PhaseTerminal {
			return fftype.Statef(fftype.CodeExecutionNotTerminal, "execution %s is %s; only ended executions can be replayed", id, x.PublicState())
		}
		if x.ReplayCount >= x.Policy.MaxReplays {
			return &fftype.Error{Kind: fftype.KindLimited, Code: fftype.CodeMaxReplaysExhausted,
				Message: "execution " + string(id) + " was replayed " + strconv.Itoa(x.ReplayCount) + " times, its cap"}
		}
		x.ReplayCount++
		x.RetryCount, x.ReclaimCount = 0, 0
		x.Outcome = fftype.OutcomeNone
		x.CompletedAt = time.Time{}
		x.PendingReason = "replay"
		x.LastLeaseEnd = ""
		if d := x.Policy.Deadline; d != 0 {
			x.DeadlineAt = now.Add(d.D())
		}
		next := fftype.AttemptStatePendingReplay
		if x.TotalAttempts == 0 {
			next = fftype.AttemptStatePendingFirst // it never ran: its first attempt is still to come
		}
		toRunnable(x, next, now, fftype.BlockingWaitingForWorker, now)
		e.save(tx, before, x)
		tx.Delete(resultKey(x.ID))
		tx.Delete(binaryResultKey(x.ID))
		appendEvent(tx, fftype.EventReplayed, x, now, map[string]any{"replay_count": x.ReplayCount})
		return nil
	})
}

// PauseLane stops claims from handing out the lane's executions until ResumeLane. Creates
// and everything else go on. It takes effect at once in this process and within a second
// in others (each trusts a lane it read as not paused that long, to spare the store a
// read per claim).
func (e *Engine) PauseLane(ctx context.Context, lane string) error { return e.setLane(ctx, lane, true) }

// ResumeLane undoes PauseLane. It takes effect at the next claim in every process: a
// process reads a lane it holds as paused again whenever a claim asks for it, so the
// claim of a worker woken by the lane_resumed event finds the lane's work.
func (e *Engine) ResumeLane(ctx context.Context, lane string) error {
	return e.setLane(ctx, lane, false)
}

func (e *Engine) setLane(ctx context.Context, lane string, paused bool) error {
	if err := fftype.ValidateLane(lane); err != nil {
		return err
	}
	err := e.update(ctx, laneShard, func(tx ffstore.Tx) error {
		now := e.now()
		info, err := readLane(tx, lane)
		if err != nil {
			return err
		}
		if info.Paused == paused && !info.UpdatedAt.IsZero() {
			return nil
		}
		info.Paused, info.UpdatedAt = paused, now
		putJSON(tx, laneKey(lane), info)
		ev := fftype.EventLaneResumed
		if paused {
			ev = fftype.EventLanePaused
		}
		tx.AppendEvent(fftype.Event{Version: fftype.EventVersion, Type: ev, Time: now, Lane: lane})
		return nil
	})
	if err != nil {
		return err
	}
	// The store now has the lane as asked, whoever set it so: this process takes it at
	// once, ahead of any read of the lane that began before.
	e.laneMu.Lock()
	e.lanes[lane] = laneState{paused: paused, read: e.clock.Now(), gen: e.laneGen.Add(1)}
	e.laneMu.Unlock()
	return nil
}

func readLane(tx ffstore.ReadTx, lane string) (fftype.LaneInfo, error) {
	info := fftype.LaneInfo{Name: lane}
	b, ok, err := tx.Get(laneKey(lane))
	if err != nil || !ok {
		return info, err
	}
	if err := json.Unmarshal(b, &info); err != nil {
		return info, corrupt("lane "+lane, err)
	}
	return info, nil
}

// Lane returns the state of one lane. A lane never paused reads as not paused.
func (e *Engine) Lane(ctx context.Context, lane string) (fftype.LaneInfo, error) {
	if err := fftype.ValidateLane(lane); err != nil {
		return fftype.LaneInfo{}, err
	}
	var info fftype.LaneInfo
	err := e.store.View(ctx, laneShard, func(tx ffstore.ReadTx) error {
		var err error
		info, err = readLane(tx, lane)
		return err
	})
	return info, err
}

// laneStateTTL is how long a process trusts a lane it read as not paused: a pause made by
// another process takes effect there within it (in the process that made it, at once). A
// lane read or set as paused is not trusted at all, so that a resume takes effect
// everywhere at the next claim; only claims that ask for a paused lane pay the read.
const laneStateTTL = time.Second

// laneState is a lane's pause state as this engine last read or set it.
type laneState struct {
	paused bool
	read   time.Time
	gen    uint64 // Engine.laneGen when this process set it; 0 when read
}

// unpausedLanes returns the lanes of ls that are not paused, without duplicates. "Not
// paused" states younger than laneStateTTL come from the engine's cache; the rest,
// paused lanes included, are read in one View.
func (e *Engine) unpausedLanes(ctx context.Context, ls []string) ([]string, error) {
	now := e.clock.Now()
	var lanes, stale []string
	seen := map[string]bool{}
	e.laneMu.Lock()
	gen := e.laneGen.Load() // states this process sets from here on are newer than the read below
	for _, l := range ls {
		if seen[l] {
			continue
		}
		seen[l] = true
		lanes = append(lanes, l)
		if st, ok := e.lanes[l]; !ok || st.paused || now.Sub(st.read) >= laneStateTTL || now.Before(st.read) {
			stale = append(stale, l)
		}
	}
	e.laneMu.Unlock()
	if len(stale) > 0 {
		keys := make([]string, len(stale))
		for i, l := range stale {
			keys[i] = laneKey(l)
		}
		fresh := make(map[string]bool, len(stale))
		err := e.store.View(ctx, laneShard, func(tx ffstore.ReadTx) error {
			if err := tx.Prefetch(keys...); err != nil {
				return err
			}
			for _, l := range stale {
				info, err := readLane(tx, l)
				if err != nil {
					return err
				}
				fresh[l] = info.Paused
			}
			return nil
		})
		if err != nil {
			return nil, err
		}
		e.laneMu.Lock()
		for l, p := range fresh {
			if e.lanes[l].gen <= gen {
				e.lanes[l] = laneState{paused: p, read: now}
			}
		}
		e.laneMu.Unlock()
	}
	var out []string
	e.laneMu.Lock()
	defer e.laneMu.Unlock()
	for _, l := range lanes {
		if !e.lanes[l].paused {
			out = append(out, l)
		}
	}
	return out, nil
}
