package ffsqlite

import (
	"context"
	"database/sql"
	"database/sql/driver"
	"errors"
	"io"
)

// All SQL of the store, prepared once: the writer's statements on the writer connection,
// the readers' on the read pool (database/sql prepares them per connection on first use).

// A LIMIT is written `LIMIT ?n + 0`, never `LIMIT ?n`: SQLite plans a bare bound LIMIT as
// the constant it is bound to and re-prepares the statement whenever the binding changes,
// which tripled the cost of a pop whose count varies from call to call.
const (
	sqlGet        = `SELECT value FROM records WHERE shard = ? AND key = ?`
	sqlPut        = `INSERT INTO records (shard, key, value) VALUES (?1, ?2, ?3) ON CONFLICT (shard, key) DO UPDATE SET value = ?3`
	sqlDelete     = `DELETE FROM records WHERE shard = ? AND key = ?`
	sqlRangeFirst = `SELECT member, score FROM queue_items
		WHERE shard = ?1 AND queue = ?2 AND score <= ?3
		ORDER BY score, member LIMIT ?4 + 0`
	sqlRangeAfter = `SELECT member, score FROM queue_items
		WHERE shard = ?1 AND queue = ?2 AND score <= ?3 AND (score, member) > (?5, ?6)
		ORDER BY score, member LIMIT ?4 + 0`
	sqlQueueAdd = `INSERT INTO queue_items (shard, queue, member, score) VALUES (?1, ?2, ?3, ?4)
		ON CONFLICT (shard, queue, member) DO UPDATE SET score = ?4`
	sqlQueueDir    = `INSERT INTO queues (queue, shard) VALUES (?2, ?1) ON CONFLICT DO NOTHING`
	sqlQueueRemove = `DELETE FROM queue_items WHERE shard = ? AND queue = ? AND member = ?`
	sqlQueuePrune  = `DELETE FROM queues WHERE queue = ?2 AND shard = ?1
		AND NOT EXISTS (SELECT 1 FROM queue_items WHERE shard = ?1 AND queue = ?2)`
	sqlLastSeq  = `SELECT last_seq FROM event_seqs WHERE shard = ?`
	sqlStoreSeq = `INSERT INTO event_seqs (shard, last_seq) VALUES (?1, ?2)
		ON CONFLICT (shard) DO UPDATE SET last_seq = ?2`
	// PopDue in one statement; RETURNING has no order, so the caller sorts.
	sqlPop = `DELETE FROM queue_items WHERE shard = ?1 AND queue = ?2 AND member IN (
		SELECT member FROM queue_items WHERE shard = ?1 AND queue = ?2 AND score <= ?3
		ORDER BY score, member LIMIT ?4 + 0) RETURNING member, score`
	sqlAppendEvent = `INSERT INTO events
		(shard, seq, version, type, time_unix, time_nsec, execution_id, flow_id, namespace, lane, data)
		VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)`
	sqlReadEvents = `SELECT seq, version, type, time_unix, time_nsec, execution_id, flow_id, namespace, lane, data
		FROM events WHERE shard = ?1 AND seq > ?2 ORDER BY seq LIMIT ?3 + 0`
	sqlTrimPoint   = `SELECT trimmed FROM event_seqs WHERE shard = ?`
	sqlEventBounds = `SELECT trimmed, last_seq FROM event_seqs WHERE shard = ?`
	sqlTrimMark    = `UPDATE event_seqs SET trimmed = max(trimmed, min(?2, last_seq)) WHERE shard = ?1`
	sqlTrim        = `DELETE FROM events WHERE shard = ?1
		AND seq <= (SELECT trimmed FROM event_seqs WHERE shard = ?1)`
	// The head of each queue in the directory whose name is in [?1, ?2), one index seek
	// per queue.
	sqlHeadsSelect = `SELECT q.shard, q.queue, i.member, i.score FROM queues q
		JOIN queue_items i ON i.shard = q.shard AND i.queue = q.queue AND i.member = (
			SELECT member FROM queue_items h WHERE h.shard = q.shard AND h.queue = q.queue
			ORDER BY score, member LIMIT 1)`
	sqlHeadsRange = sqlHeadsSelect + ` WHERE q.queue >= ?1 AND q.queue < ?2 ORDER BY q.queue, q.shard`
	sqlHeadsFrom  = sqlHeadsSelect + ` WHERE q.queue >= ?1 ORDER BY q.queue, q.shard`
)

// writerStmts are prepared on the writer connection.
type writerStmts struct {
	begin, commit, rollback        *wstmt
	savepoint, release, rollbackTo *wstmt

	get, put, del          *wstmt
	rangeFirst, rangeAfter *wstmt
	queueAdd, queueDir     *wstmt
	queueRemove, prune     *wstmt
	lastSeq, storeSeq      *wstmt
	pop, appendEvent       *wstmt
	trimMark, trim         *wstmt
	dataVersion            *wstmt
	checkpoint             *wstmt
	schemaVersion          *wstmt
}

func (w *writerStmts) prepare(ctx context.Context, conn driver.Conn) error {
	pc, ok := conn.(driver.ConnPrepareContext)
	if !ok {
		return errors.New("ffsqlite: the driver cannot prepare with a context")
	}
	for _, p := range []struct {
		dst **wstmt
		sql string
	}{
		{&w.begin, "BEGIN IMMEDIATE"},
		{&w.commit, "COMMIT"},
		{&w.rollback, "ROLLBACK"},
		{&w.savepoint, "SAVEPOINT unit"},
		{&w.release, "RELEASE unit"},
		{&w.rollbackTo, "ROLLBACK TO unit"},
		{&w.get, sqlGet},
		{&w.put, sqlPut},
		{&w.del, sqlDelete},
		{&w.rangeFirst, sqlRangeFirst},
		{&w.rangeAfter, sqlRangeAfter},
		{&w.queueAdd, sqlQueueAdd},
		{&w.queueDir, sqlQueueDir},
		{&w.queueRemove, sqlQueueRemove},
		{&w.prune, sqlQueuePrune},
		{&w.appendEvent, sqlAppendEvent},
		{&w.lastSeq, sqlLastSeq},
		{&w.storeSeq, sqlStoreSeq},
		{&w.pop, sqlPop},
		{&w.trimMark, sqlTrimMark},
		{&w.trim, sqlTrim},
		{&w.dataVersion, "PRAGMA data_version"},
		{&w.checkpoint, "PRAGMA wal_checkpoint(TRUNCATE)"},
		{&w.schemaVersion, "SELECT value FROM meta WHERE name = '" + metaSchemaVersion + "'"},
	} {
		st, err := pc.PrepareContext(ctx, p.sql)
		if err != nil {
			return translate(err, "prepare")
		}
		*p.dst = &wstmt{st: st}
	}
	return nil
}

func (w *writerStmts) close() {
	for _, st := range []*wstmt{
		w.begin, w.commit, w.rollback, w.savepoint, w.release, w.rollbackTo,
		w.get, w.put, w.del, w.rangeFirst, w.rangeAfter, w.queueAdd, w.queueDir,
		w.queueRemove, w.prune, w.lastSeq, w.storeSeq, w.pop, w.appendEvent, w.trimMark, w.trim,
		w.dataVersion, w.checkpoint, w.schemaVersion,
	} {
		if st != nil {
			_ = st.st.Close()
		}
	}
}

// wstmt is a statement prepared on the writer's connection. The writer goroutine is the
// connection's only user for the store's whole life, so it calls the driver directly,
// without database/sql's pool, locks and argument conversion, which cost the writer, the
// store's bottleneck, a few percent of a drain.
type wstmt struct{ st driver.Stmt }

// named turns arguments into the driver's form; the only conversion they need is int to
// int64.
func named(args []any) []driver.NamedValue {
	nv := make([]driver.NamedValue, len(args))
	for i, a := range args {
		if n, ok := a.(int); ok {
			a = int64(n)
		}
		nv[i] = driver.NamedValue{Ordinal: i + 1, Value: a}
	}
	return nv
}

// exec runs the statement.
func (w *wstmt) exec(args ...any) (driver.Result, error) {
	return w.st.(driver.StmtExecContext).ExecContext(bg, named(args))
}

// query runs the statement and returns its rows, which the caller must close.
func (w *wstmt) query(args ...any) (driver.Rows, error) {
	return w.st.(driver.StmtQueryContext).QueryContext(bg, named(args))
}

// row runs the statement and fills dest with its first row; ok is false if it returned
// none.
func (w *wstmt) row(dest []driver.Value, args ...any) (ok bool, err error) {
	rows, err := w.query(args...)
	if err != nil {
		return false, err
	}
	err = rows.Next(dest)
	cerr := rows.Close()
	if errors.Is(err, io.EOF) {
		return false, cerr
	}
	if err != nil {
		return false, err
	}
	return true, cerr
}

// readerStmts are prepared on the read pool.
type readerStmts struct {
	get, rangeFirst, rangeAfter *sql.Stmt
	headsRange, headsFrom       *sql.Stmt
	events, trimPoint, bounds   *sql.Stmt
}

func (r *readerStmts) prepare(ctx context.Context, db *sql.DB) error {
	for _, p := range []struct {
		dst **sql.Stmt
		sql string
	}{
		{&r.get, sqlGet},
		{&r.rangeFirst, sqlRangeFirst},
		{&r.rangeAfter, sqlRangeAfter},
		{&r.headsRange, sqlHeadsRange},
		{&r.headsFrom, sqlHeadsFrom},
		{&r.events, sqlReadEvents},
		{&r.trimPoint, sqlTrimPoint},
		{&r.bounds, sqlEventBounds},
	} {
		st, err := db.PrepareContext(ctx, p.sql)
		if err != nil {
			return translate(err, "prepare")
		}
		*p.dst = st
	}
	return nil
}

func (r *readerStmts) close() {
	for _, st := range []*sql.Stmt{r.get, r.rangeFirst, r.rangeAfter, r.headsRange, r.headsFrom, r.events, r.trimPoint, r.bounds} {
		if st != nil {
			_ = st.Close()
		}
	}
}
