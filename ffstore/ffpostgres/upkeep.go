package ffpostgres

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
)

// Upkeep: the store keeps the planner statistics and the visibility map of its own tables
// current, beside autovacuum.
//
// Autovacuum looks at a database about once a minute. A queue that grows from empty
// faster than that — a backlog submitted in bulk, a new store taking its first load — is
// planned meanwhile as if it were empty: with no statistics, Postgres estimates that one
// shard and one queue hold a handful of rows, scans a whole shard where it should look up
// a few keys, and sorts a whole queue where it should read the head of its index. Until
// the first vacuum, every read of a freshly inserted row also checks the inserting
// transaction's status and dirties the page to remember it. On the drain benchmark this
// made claims several times slower for the first half minute. So every upkeepEvery one
// process at a time (under an advisory lock) reads the store's table counters and
// vacuums or analyzes the tables that changed enough since autovacuum, or it, last did.
const (
	upkeepEvery = 2 * time.Second

	// A table is vacuumed once the rows inserted or left dead since its last vacuum
	// exceed upkeepMinRows plus upkeepFraction of its size. The fraction matches
	// autovacuum's defaults for vacuum; the floor spares the small, busy tables (the
	// event counters, the queue directory) that Postgres prunes in place anyway.
	//
	// It is analyzed once the rows changed since its last analyze exceed upkeepMinRows
	// plus upkeepAnalyzeFraction of its size. The size is as of the last vacuum, which
	// every fifth of growth brings, so a table that only grows is analyzed once it has
	// doubled since its last analyze, and one of steady size once a quarter of it was
	// replaced (an insert and a delete each count). That still catches a table grown
	// from empty, which is what upkeep is for; re-sampling every table each time a fifth
	// of it had changed cost a drain 2% of its throughput, and autovacuum still
	// analyzes on its own schedule.
	upkeepMinRows         = 1000
	upkeepFraction        = 0.2
	upkeepAnalyzeFraction = 0.5
)

// tableCounters is what pg_stat_user_tables and pg_class say about one table.
type tableCounters struct {
	name                 string
	rows                 float64 // reltuples: -1 before the first vacuum or analyze
	modifiedSinceAnalyze int64
	deadRows             int64
	insertedSinceVacuum  int64
}

// upkeepCommand returns the maintenance command t needs, "" for none. Both take
// SKIP_LOCKED, so that a table autovacuum (or another command) holds is left for later
// rather than waited for.
func upkeepCommand(t tableCounters) string {
	rows := max(t.rows, 0)
	vacuum := float64(t.deadRows+t.insertedSinceVacuum) > upkeepMinRows+upkeepFraction*rows
	analyze := float64(t.modifiedSinceAnalyze) > upkeepMinRows+upkeepAnalyzeFraction*rows
	switch {
	case vacuum && analyze:
		return "VACUUM (SKIP_LOCKED, ANALYZE)"
	case vacuum:
		return "VACUUM (SKIP_LOCKED)"
	case analyze:
		return "ANALYZE (SKIP_LOCKED)"
	}
	return ""
}

// upkeepLockKey is the advisory lock held by the process doing the upkeep of schema.
func upkeepLockKey(schema string) int64 { return advisoryKey(schema, "upkeep") }

// runUpkeep calls upkeep every upkeepEvery until Close.
func (s *Store) runUpkeep() {
	tick := time.NewTicker(upkeepEvery)
	defer tick.Stop()
	for {
		select {
		case <-s.stopCtx.Done():
			return
		case <-tick.C:
		}
		if err := s.upkeep(s.stopCtx); err != nil && s.stopCtx.Err() == nil {
			s.log.Debug("table upkeep", "error", err)
		}
	}
}

// upkeep prunes the queue directory and vacuums and analyzes the store's tables that
// need it, unless another process is doing so. A role that does not own the tables gets a
// warning from Postgres per table and vacuums nothing.
func (s *Store) upkeep(ctx context.Context) error {
	conn, err := s.pool.Acquire(ctx)
	if err != nil {
		return err
	}
	defer conn.Release()
	key := upkeepLockKey(s.schema)
	var mine bool
	if err := conn.QueryRow(ctx, "SELECT pg_try_advisory_lock($1)", key).Scan(&mine); err != nil || !mine {
		return err
	}
	defer s.undo(ctx, conn, "SELECT pg_advisory_unlock($1)", key)
	if s.timeout != "" {
		// New: the caller's pool does not carry the store's statement timeout; upkeep sets
		// it on the session it holds, until undone.
		restore, err := s.swapStatementTimeout(ctx, conn, s.timeout)
		if err != nil {
			return err
		}
		defer restore()
	}

	// A failed prune must not cost the tables their vacuum: both are tried.
	return errors.Join(s.pruneDirectory(ctx, conn), s.maintainTables(ctx, conn))
}

// maintainTables vacuums and analyzes the store's tables that changed enough.
func (s *Store) maintainTables(ctx context.Context, conn *pgxpool.Conn) error {
	rows, err := conn.Query(ctx, `SELECT s.relname, c.reltuples, s.n_mod_since_analyze, s.n_dead_tup, s.n_ins_since_vacuum
		FROM pg_stat_user_tables s JOIN pg_class c ON c.oid = s.relid
		WHERE s.schemaname = $1 ORDER BY s.relname`, s.schema)
	if err != nil {
		return err
	}
	tables, err := pgx.CollectRows(rows, func(r pgx.CollectableRow) (t tableCounters, err error) {
		err = r.Scan(&t.name, &t.rows, &t.modifiedSinceAnalyze, &t.deadRows, &t.insertedSinceVacuum)
		return t, err
	})
	if err != nil {
		return err
	}
	var work []string
	for _, t := range tables {
		if cmd := upkeepCommand(t); cmd != "" {
			work = append(work, cmd+" "+pgx.Identifier{s.schema, t.name}.Sanitize())
		}
	}
	if len(work) == 0 {
		return nil
	}
	// VACUUM runs outside any transaction, so alone and on the simple protocol; a large
	// table may need longer than the store's statement timeout.
	restore, err := s.swapStatementTimeout(ctx, conn, "0")
	if err != nil {
		return err
	}
	defer restore()
	for _, sql := range work {
		if _, err := conn.Exec(ctx, sql, pgx.QueryExecModeSimpleProtocol); err != nil {
			return fmt.Errorf("%s: %w", sql, err)
		}
	}
	return nil
}

// pruneDirectory deletes the directory rows of the queues that are empty. Readers of
// queue heads skip empty queues, so a row pruned up to upkeepEvery late costs them a probe
// meanwhile; pruning at once, when a reader found the queue empty, cost a transaction
// each time a queue that empties and refills often (a shard's lease queue) did so.
func (s *Store) pruneDirectory(ctx context.Context, conn *pgxpool.Conn) error {
	rows, err := conn.Query(ctx, s.sql.emptyQueues)
	if err != nil {
		return err
	}
	type queueRef struct {
		queue string
		shard int
	}
	empty, err := pgx.CollectRows(rows, func(r pgx.CollectableRow) (q queueRef, err error) {
		err = r.Scan(&q.queue, &q.shard)
		return q, err
	})
	if err != nil {
		return err
	}
	for _, q := range empty {
		if err := s.pruneQueue(ctx, conn, q.shard, q.queue); err != nil {
			return err
		}
	}
	return nil
}

// swapStatementTimeout sets the statement_timeout of conn's session to value and returns
// a func that sets it back, through undo, to what it was. Setting back rather than
// RESET keeps what the session had set for itself (New's caller may, in AfterConnect),
// which RESET would turn into the value the session started with.
func (s *Store) swapStatementTimeout(ctx context.Context, conn *pgxpool.Conn, value string) (restore func(), err error) {
	const set = "SELECT set_config('statement_timeout', $1, false)"
	var old string
	if err := conn.QueryRow(ctx, "SELECT current_setting('statement_timeout')").Scan(&old); err != nil {
		return nil, err
	}
	if _, err := conn.Exec(ctx, set, value); err != nil {
		return nil, err
	}
	return func() { s.undo(ctx, conn, set, old) }, nil
}

// undo runs sql on conn to take back what upkeep set on its session (the advisory lock,
// the statement timeout) before the connection goes back to the pool, even when ctx has
// ended. If that fails the connection is closed, which the pool then drops, and a closed
// session keeps nothing.
func (s *Store) undo(ctx context.Context, conn *pgxpool.Conn, sql string, args ...any) {
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), s.opts.ConnectTimeout)
	defer cancel()
	if _, err := conn.Exec(ctx, sql, args...); err != nil {
		_ = conn.Conn().PgConn().Close(ctx)
	}
}
