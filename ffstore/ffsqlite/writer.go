package ffsqlite

import (
	"cmp"
	"context"
	"database/sql/driver"
	"fmt"
	"runtime/debug"
	"slices"
	"time"

	"github.com/flowfabric/flowfabric/ffstore"
)

// maxBatch bounds the units of one group commit, and the queue of units waiting for the
// writer.
const maxBatch = 256

// unit is one Update waiting for, or run by, the writer.
type unit struct {
	ctx   context.Context
	shard int
	fn    func(tx ffstore.Tx) error

	// started is set once fn has run, in a run of the batch that may have been rolled
	// back since: from then on the unit no longer heeds ctx (see cancelled).
	started bool

	// Set by the writer before done is closed. A unit with neither err nor panicked set
	// has not been answered yet: it succeeds if its batch commits.
	err        error
	panicked   bool
	panicValue any
	exited     bool // fn called runtime.Goexit
	done       chan struct{}
}

// reset forgets a run of the unit that was rolled back, so the batch can run it again.
// It keeps started: fn has run all the same.
func (u *unit) reset() {
	u.err, u.panicked, u.panicValue, u.exited = nil, false, nil, false
}

// cancelled returns the error of the unit's ctx if the unit is to be dropped for it,
// unrun: only while its fn has never started. Once fn has started, Update waits for the
// commit regardless of ctx, so a run of the batch again (after a batchmate failed) runs
// the unit again even if its ctx has ended since.
func (u *unit) cancelled() error {
	if u.started {
		return nil
	}
	return u.ctx.Err()
}

// bg is the context of the writer's statements. Units are not cancelled once started:
// the busy timeout bounds every wait, and an Update that returned an error must have
// written nothing.
var bg = context.Background() //nolint:gochecknoglobals // constant

// runWriter is the writer goroutine. It runs batch, the units that the writer goroutine
// before it left (see handOver), if any, then takes units in group commits until Close
// closes the unit channel and every queued unit has run. batch has room for maxBatch
// units.
func (s *Store) runWriter(batch []*unit) {
	idle := time.NewTimer(time.Hour)
	idle.Stop()
	dirty := false // commits since the last idle checkpoint
	for {
		if len(batch) == 0 {
			select {
			case u, ok := <-s.units:
				if !ok {
					close(s.writerDone)
					return
				}
				batch = append(batch, u)
			case <-idle.C:
				if dirty {
					s.idleCheckpoint()
					dirty = false
				}
				continue
			}
		}
		batch = s.runBatch(batch)
		clear(batch)
		batch = batch[:0]
		dirty = true
		idle.Reset(s.opts.idleCheckpointDelay)
	}
}

// checkDataVersion empties the record cache if another process committed since this
// connection's last transaction, and refuses to write, from then on, once such a commit
// has migrated the file past this binary's schema (a newer binary in a rolling upgrade).
// It runs inside the write transaction, so nothing can commit between the check and the
// batch's reads.
func (s *Store) checkDataVersion() error {
	if s.tooNew != nil {
		return s.tooNew
	}
	var dest [1]driver.Value
	if _, err := s.ws.dataVersion.row(dest[:]); err != nil {
		return translate(err, "read data_version")
	}
	v, _ := dest[0].(int64)
	if v == s.dataVersion {
		return nil
	}
	s.cache.clear()
	s.dataVersion = v
	if _, err := s.ws.schemaVersion.row(dest[:]); err != nil {
		return translate(err, "read the schema version")
	}
	if version, _ := dest[0].(int64); version > SchemaVersion {
		s.tooNew = errSchemaTooNew(int(version))
		return s.tooNew
	}
	return nil
}

// take adds queued units to batch without waiting, up to maxBatch.
func (s *Store) take(batch []*unit) []*unit {
	for len(batch) < maxBatch {
		select {
		case u, ok := <-s.units:
			if !ok {
				return batch
			}
			batch = append(batch, u)
		default:
			return batch
		}
	}
	return batch
}

// runBatch runs one group commit: the units in batch plus those that arrive while it
// runs, then one COMMIT, and only then reports every result.
//
// It first runs the units without savepoints, which costs two statements less per unit.
// If any unit fails (its fn returns an error, panics, hits an injected conflict or a
// failed statement), that attempt is rolled back whole and the batch runs again with a
// savepoint per unit, so that one unit's failure does not undo the others. Units' fns may
// therefore run twice; the contract allows it. A unit whose fn calls runtime.Goexit ends
// the writer goroutine: see handOver.
func (s *Store) runBatch(batch []*unit) []*unit {
	defer func() {
		if i := slices.IndexFunc(batch, func(u *unit) bool { return u.exited }); i >= 0 {
			batch = s.handOver(batch, i)
		}
		for _, u := range batch {
			close(u.done)
		}
	}()
	batch = s.take(batch)
	for _, savepoints := range []bool{false, true} {
		if _, err := s.ws.begin.exec(); err != nil {
			if code, ok := sqliteCode(err); !ok || code&0xff != sqliteBusy {
				// Not a lock held elsewhere: make sure no transaction is left open on the
				// connection, so the next batch can begin.
				_, _ = s.ws.rollback.exec()
			}
			err = translate(err, "begin write transaction")
			for _, u := range batch {
				u.err = err
			}
			return batch
		}
		if err := s.checkDataVersion(); err != nil {
			s.abort(batch, err)
			return batch
		}
		state := newBatchState()
		retry := false
		for i := 0; i < len(batch) && !retry; i++ {
			var err error
			if savepoints {
				err = s.runUnit(batch[i], state)
			} else {
				retry, err = s.runUnitFast(batch[i], state)
			}
			if err != nil {
				// The transaction is lost (SQLite rolls the whole transaction back on
				// some errors, such as a full disk) or in an unknown state: drop it and
				// fail every unit in it.
				s.abort(batch, err)
				return batch
			}
			if i == len(batch)-1 && !retry {
				// Units that arrived while this batch ran join it for free: the commit
				// has not happened yet.
				batch = s.take(batch)
			}
		}
		if retry {
			for _, u := range batch {
				u.reset()
			}
			continue
		}
		if err := s.finishBatch(state); err != nil {
			s.abort(batch, err)
			return batch
		}
		if _, err := s.ws.commit.exec(); err != nil {
			s.abort(batch, translate(err, "commit"))
			return batch
		}
		s.commits.Add(1)
		s.changes.Notify()
		return batch
	}
	panic("ffsqlite: unreachable: the savepoint pass never retries")
}

// runUnitFast runs one unit without a savepoint. If the unit fails, it rolls the whole
// transaction back and reports retry: the caller runs the batch again with savepoints.
// The returned error means the transaction itself failed; the unit's own outcome is left
// in u, for the case that the batch cannot run again.
func (s *Store) runUnitFast(u *unit, batch *batchState) (retry bool, err error) {
	if err := u.cancelled(); err != nil {
		u.err = err // never runs: nothing to undo
		return false, nil
	}
	tx := &writeTx{s: s, shard: u.shard, batch: batch}
	fnErr := s.call(u, tx)
	// A pending injected conflict is left for the savepoint pass to deliver.
	if fnErr == nil && !u.panicked && tx.err == nil && !s.conflicts.Pending() {
		batch.merge(tx)
		return false, nil
	}
	u.err = cmp.Or(fnErr, tx.err) // its answer should the batch not run again
	s.cache.clear()
	return true, rollBack(s.ws.rollback, "roll back", tx)
}

// rollBack runs st, a ROLLBACK or ROLLBACK TO, after the unit of tx failed. The rollback
// fails when SQLite has already rolled the whole transaction back, as it does when a
// statement finds the disk full or hits an I/O error; the error returned is then that
// statement's, the cause, rather than the rollback's ("no transaction is active").
func rollBack(st *wstmt, op string, tx *writeTx) error {
	if _, err := st.exec(); err != nil {
		if tx.err != nil {
			return tx.err
		}
		return translate(err, op)
	}
	return nil
}

// abort rolls the transaction back and fails with err every unit of the batch that has
// not been answered: those whose writes it held and those that did not run. A unit that
// failed on its own keeps its error.
func (s *Store) abort(batch []*unit, err error) {
	s.cache.clear()
	if _, rerr := s.ws.rollback.exec(); rerr != nil {
		s.log.Debug("rollback after failed batch", "error", rerr)
	}
	for _, u := range batch {
		if u.err == nil && !u.panicked {
			u.err = err
		}
	}
	s.log.Warn("write batch failed", "units", len(batch), "error", err)
}

// runUnit runs one unit inside a savepoint. The returned error means the transaction
// itself failed; the unit's own outcome is left in u.
func (s *Store) runUnit(u *unit, batch *batchState) error {
	if err := u.cancelled(); err != nil {
		u.err = err
		return nil
	}
	if _, err := s.ws.savepoint.exec(); err != nil {
		u.err = translate(err, "savepoint")
		return u.err
	}
	tx := &writeTx{s: s, shard: u.shard, batch: batch}
	err := s.call(u, tx)
	if err == nil && !u.panicked && tx.err == nil && !s.conflicts.Take() {
		if _, err := s.ws.release.exec(); err != nil {
			u.err = translate(err, "release savepoint")
			return u.err
		}
		batch.merge(tx)
		return nil
	}
	switch {
	case u.panicked:
	case err != nil:
		u.err = err // fn's error, unchanged
	case tx.err != nil:
		u.err = tx.err
	default:
		u.err = ffstore.Conflict("ffsqlite", u.shard)
	}
	for _, k := range tx.written {
		s.cache.drop(k)
	}
	if err := rollBack(s.ws.rollbackTo, "roll back savepoint", tx); err != nil {
		return err
	}
	if _, rerr := s.ws.release.exec(); rerr != nil {
		return translate(rerr, "release savepoint")
	}
	return nil
}

// call runs fn and ends tx. It catches a panic of fn, so that the writer survives it, and
// notes a runtime.Goexit, which ends the writer goroutine all the same (see handOver).
// Update re-raises either in its caller.
func (s *Store) call(u *unit, tx *writeTx) (err error) {
	returned := false
	defer func() {
		tx.done.Store(true)
		if returned {
			return
		}
		if v := recover(); v != nil {
			u.panicked, u.panicValue = true, v
			s.log.Error("unit panicked; re-raising it in the caller", "panic", fmt.Sprint(v), "stack", string(debug.Stack()))
			return
		}
		u.exited = true
		s.log.Error("unit called runtime.Goexit; calling it in the caller", "stack", string(debug.Stack()))
	}()
	u.started = true
	err = u.fn(tx)
	returned = true
	return err
}

// handOver ends the batch of a writer goroutine that is ending because the fn of
// batch[i] called runtime.Goexit, which nothing can stop. It rolls the batch's
// transaction back, starts a new writer goroutine that runs the batch again without that
// unit, as if the unit had panicked, and returns that unit alone, for runBatch to answer.
// If the rollback fails, the new writer's BEGIN reports the connection's state.
func (s *Store) handOver(batch []*unit, i int) []*unit {
	s.cache.clear()
	if _, err := s.ws.rollback.exec(); err != nil {
		s.log.Debug("rollback after a unit called runtime.Goexit", "error", err)
	}
	rest := make([]*unit, 0, maxBatch)
	for j, u := range batch {
		if j != i {
			u.reset()
			rest = append(rest, u)
		}
	}
	go s.runWriter(rest)
	return batch[i : i+1]
}

// idleCheckpoint empties the write-ahead log while nothing is being written. It does not
// wait: if a reader still uses the log, the log stays and is checkpointed later.
func (s *Store) idleCheckpoint() {
	if err := s.setBusyTimeout(0); err != nil {
		s.log.Warn("idle checkpoint", "error", err)
		return
	}
	dest := make([]driver.Value, 3)
	if _, err := s.ws.checkpoint.row(dest); err != nil {
		s.log.Debug("idle checkpoint", "error", err)
	} else {
		s.log.Debug("idle checkpoint", "busy", dest[0] == int64(1), "log_frames", dest[1], "checkpointed", dest[2])
	}
	if err := s.setBusyTimeout(s.opts.BusyTimeout); err != nil {
		s.log.Warn("idle checkpoint: restore busy timeout", "error", err)
	}
}

// setBusyTimeout sets the writer connection's busy timeout. The pragma is run from its
// text each time: SQLite applies PRAGMA busy_timeout when the statement is prepared, so a
// prepared one would keep the value of whichever was prepared last.
func (s *Store) setBusyTimeout(d time.Duration) error {
	_, err := s.wconn.(driver.ExecerContext).ExecContext(context.Background(),
		fmt.Sprintf("PRAGMA busy_timeout = %d", d.Milliseconds()), nil)
	return err
}
