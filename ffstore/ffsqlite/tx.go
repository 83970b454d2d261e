package ffsqlite

import (
	"context"
	"database/sql"
	"database/sql/driver"
	"errors"
	"fmt"
	"io"
	"math"
	"slices"
	"sync/atomic"

	"github.com/flowfabric/flowfabric/ffstore"
	"github.com/flowfabric/flowfabric/fftype"
)

func errTxDone() error {
	return fftype.Validationf(fftype.CodeInvalidInput, "ffsqlite: transaction used after its unit ended")
}

// writeTx is a unit. It runs on the writer goroutine and executes every statement in
// place on the writer connection, inside the unit's savepoint, so its reads see its own
// writes. Writes have no error result in the contract: the first failure is kept in err,
// fails every later call, and makes the unit roll back and return it.
type writeTx struct {
	s     *Store
	shard int
	err   error
	done  atomic.Bool

	// What the unit adds to its batch's knowledge; merged into the batch when the unit's
	// savepoint is released, dropped when it is rolled back.
	batch   *batchState
	written []cacheKey      // records this unit wrote, dropped from the cache if it rolls back
	dirs    map[dirKey]bool // directory rows this unit inserted
	prune   map[dirKey]bool // queues this unit removed items from
	seqs    map[int]int64   // the last event Seq this unit handed out, per shard
}

// dirKey names one queue of one shard.
type dirKey struct {
	shard int
	queue string
}

// batchState is what the writer knows across the units of one write transaction. The
// transaction holds the file's write lock from BEGIN IMMEDIATE to COMMIT, so nothing else
// changes these facts meanwhile. It saves statements: a queue's directory row is inserted
// once per batch, emptied queues are pruned once before COMMIT, and each shard's event
// counter is read once and written once.
type batchState struct {
	dirs  map[dirKey]bool
	prune map[dirKey]bool
	seqs  map[int]int64
}

func newBatchState() *batchState {
	return &batchState{dirs: map[dirKey]bool{}, prune: map[dirKey]bool{}, seqs: map[int]int64{}}
}

// merge takes in what a committed unit learned.
func (b *batchState) merge(t *writeTx) {
	for k := range t.dirs {
		b.dirs[k] = true
	}
	for k := range t.prune {
		b.prune[k] = true
	}
	for s, v := range t.seqs {
		b.seqs[s] = v
	}
}

// finish writes what the batch deferred: prunes and event counters. It runs after the last
// unit, before COMMIT.
func (s *Store) finishBatch(b *batchState) error {
	for k := range b.prune {
		if _, err := s.ws.prune.exec(k.shard, k.queue); err != nil {
			return translate(err, "prune queue directory")
		}
	}
	for shard, seq := range b.seqs {
		if _, err := s.ws.storeSeq.exec(shard, seq); err != nil {
			return translate(err, "store event counter")
		}
	}
	return nil
}

var _ ffstore.Tx = (*writeTx)(nil)

// usable reports whether the unit can still run statements.
func (t *writeTx) usable() error {
	if t.done.Load() {
		return errTxDone()
	}
	return t.err
}

func (t *writeTx) fail(err error, op string) {
	if t.err == nil {
		t.err = translate(err, op)
	}
}

// Prefetch does nothing: every Get is an in-process B-tree lookup on the writer
// connection, so there is no round trip to save.
func (t *writeTx) Prefetch(keys ...string) error { return t.usable() }

func (t *writeTx) Get(key string) ([]byte, bool, error) {
	if err := t.usable(); err != nil {
		return nil, false, err
	}
	k := cacheKey{t.shard, key}
	if v, ok, hit := t.s.cache.get(k); hit {
		return v, ok, nil
	}
	var dest [1]driver.Value
	ok, err := t.s.ws.get.row(dest[:], t.shard, key)
	v := blob(dest[0], ok)
	if err != nil {
		t.fail(err, "get")
		return nil, false, t.err
	}
	t.s.cache.set(k, v, ok)
	return v, ok, nil
}

func (t *writeTx) Range(queue string, after *ffstore.QueueItem, maxScore int64, n int) ([]ffstore.QueueItem, error) {
	if err := t.usable(); err != nil {
		return nil, err
	}
	if n <= 0 {
		return nil, nil
	}
	st, args := t.s.ws.rangeFirst, rangeArgs(t.shard, queue, after, maxScore, n)
	if after != nil {
		st = t.s.ws.rangeAfter
	}
	rows, err := st.query(args...)
	if err == nil {
		var items []ffstore.QueueItem
		if items, err = scanItems(rows); err == nil {
			return items, nil
		}
	}
	t.fail(err, "range")
	return nil, t.err
}

func (t *writeTx) exec(op string, st *wstmt, args ...any) driver.Result {
	if t.done.Load() {
		panic("ffsqlite: " + op + " on a transaction whose unit has ended")
	}
	if t.err != nil {
		return nil
	}
	res, err := st.exec(args...)
	if err != nil {
		t.fail(err, op)
		return nil
	}
	return res
}

func (t *writeTx) Put(key string, value []byte) {
	if value == nil {
		value = []byte{}
	}
	t.write("put", key, value, true, t.s.ws.put, t.shard, key, value)
}

func (t *writeTx) Delete(key string) {
	t.write("delete", key, nil, false, t.s.ws.del, t.shard, key)
}

// write runs the statement that stores value under key (ok) or deletes key (!ok), and
// keeps the writer's cache in step with it.
func (t *writeTx) write(op, key string, value []byte, ok bool, st *wstmt, args ...any) {
	k := cacheKey{t.shard, key}
	t.s.cache.drop(k)
	t.written = append(t.written, k)
	if t.exec(op, st, args...) != nil {
		t.s.cache.keep(k, value, ok)
	}
}

func (t *writeTx) QueueAdd(queue, member string, score int64) {
	t.exec("queue add", t.s.ws.queueAdd, t.shard, queue, member, score)
	k := dirKey{t.shard, queue}
	if !t.batch.dirs[k] && !t.dirs[k] {
		t.exec("queue add", t.s.ws.queueDir, t.shard, queue)
		if t.err == nil {
			t.note(&t.dirs, k)
		}
	}
}

// note records k in the unit's set *m.
func (t *writeTx) note(m *map[dirKey]bool, k dirKey) {
	if *m == nil {
		*m = map[dirKey]bool{}
	}
	(*m)[k] = true
}

func (t *writeTx) QueueRemove(queue, member string) {
	res := t.exec("queue remove", t.s.ws.queueRemove, t.shard, queue, member)
	if res == nil {
		return
	}
	if n, err := res.RowsAffected(); err == nil && n > 0 {
		t.note(&t.prune, dirKey{t.shard, queue})
	}
}

func (t *writeTx) PopDue(queue string, maxScore int64, n int) ([]ffstore.QueueItem, error) {
	if err := t.usable(); err != nil {
		return nil, err
	}
	if n <= 0 {
		return nil, nil
	}
	rows, err := t.s.ws.pop.query(t.shard, queue, maxScore, min(n, math.MaxInt32))
	var items []ffstore.QueueItem
	if err == nil {
		items, err = scanItems(rows)
	}
	if err != nil {
		t.fail(err, "pop")
		return nil, t.err
	}
	if len(items) == 0 {
		return nil, nil
	}
	slices.SortFunc(items, func(a, b ffstore.QueueItem) int {
		if a.Less(b) {
			return -1
		}
		if b.Less(a) {
			return 1
		}
		return 0
	})
	t.note(&t.prune, dirKey{t.shard, queue})
	return items, nil
}

func (t *writeTx) AppendEvent(ev fftype.Event) {
	if t.done.Load() {
		panic("ffsqlite: AppendEvent on a transaction whose unit has ended")
	}
	if t.err != nil {
		return
	}
	seq, ok := t.seqs[t.shard]
	if !ok {
		seq, ok = t.batch.seqs[t.shard]
	}
	if !ok {
		var dest [1]driver.Value
		found, err := t.s.ws.lastSeq.row(dest[:], t.shard)
		if err != nil {
			t.fail(err, "append event")
			return
		}
		if found {
			seq, _ = dest[0].(int64)
		}
	}
	seq++
	if t.seqs == nil {
		t.seqs = map[int]int64{}
	}
	t.seqs[t.shard] = seq
	var data any
	if ev.Data != nil {
		data = []byte(ev.Data)
	}
	t.exec("append event", t.s.ws.appendEvent, t.shard, seq, ev.Version, string(ev.Type),
		ev.Time.Unix(), int64(ev.Time.Nanosecond()), string(ev.ExecutionID), ev.FlowID, ev.Namespace, ev.Lane, data)
}

// readTx is a View: one read transaction on a pooled read-only connection.
type readTx struct {
	s     *Store
	ctx   context.Context
	shard int
	tx    *sql.Tx
	done  bool

	get, rangeFirst, rangeAfter *sql.Stmt // bound to tx on first use
}

var _ ffstore.ReadTx = (*readTx)(nil)

func (t *readTx) stmt(dst **sql.Stmt, src *sql.Stmt) *sql.Stmt {
	if *dst == nil {
		*dst = t.tx.StmtContext(t.ctx, src)
	}
	return *dst
}

// Prefetch does nothing: reads are in-process, so there is no round trip to save.
func (t *readTx) Prefetch(keys ...string) error {
	if t.done {
		return errTxDone()
	}
	return nil
}

func (t *readTx) Get(key string) ([]byte, bool, error) {
	if t.done {
		return nil, false, errTxDone()
	}
	v, ok, err := getValue(t.ctx, t.stmt(&t.get, t.s.rs.get), t.shard, key)
	return v, ok, translate(err, "get")
}

func (t *readTx) Range(queue string, after *ffstore.QueueItem, maxScore int64, n int) ([]ffstore.QueueItem, error) {
	if t.done {
		return nil, errTxDone()
	}
	first := t.stmt(&t.rangeFirst, t.s.rs.rangeFirst)
	var next *sql.Stmt
	if after != nil {
		next = t.stmt(&t.rangeAfter, t.s.rs.rangeAfter)
	}
	items, err := rangeItems(t.ctx, first, next, t.shard, queue, after, maxScore, n)
	return items, translate(err, "range")
}

// getValue reads one record. An existing empty value is returned as a non-nil empty
// slice.
func getValue(ctx context.Context, st *sql.Stmt, shard int, key string) ([]byte, bool, error) {
	var v []byte
	err := st.QueryRowContext(ctx, shard, key).Scan(&v)
	if errors.Is(err, sql.ErrNoRows) {
		return nil, false, nil
	}
	if err != nil {
		return nil, false, err
	}
	if v == nil {
		v = []byte{}
	}
	return v, true, nil
}

// rangeItems reads up to n items of queue with score <= maxScore in (score, member) order,
// strictly after *after when it is set. Errors are the driver's, untranslated.
func rangeItems(ctx context.Context, first, next *sql.Stmt, shard int, queue string, after *ffstore.QueueItem, maxScore int64, n int) ([]ffstore.QueueItem, error) {
	if n <= 0 {
		return nil, nil
	}
	st := first
	if after != nil {
		st = next
	}
	rows, err := st.QueryContext(ctx, rangeArgs(shard, queue, after, maxScore, n)...)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	var items []ffstore.QueueItem
	for rows.Next() {
		var it ffstore.QueueItem
		if err := rows.Scan(&it.Member, &it.Score); err != nil {
			return nil, err
		}
		items = append(items, it)
	}
	return items, rows.Err()
}

// rangeArgs returns the arguments of sqlRangeFirst (after nil) or sqlRangeAfter.
func rangeArgs(shard int, queue string, after *ffstore.QueueItem, maxScore int64, n int) []any {
	args := []any{shard, queue, maxScore, min(n, math.MaxInt32)}
	if after != nil {
		args = append(args, after.Score, after.Member)
	}
	return args
}

// scanItems reads (member, score) rows, as the writer's statements return them, and
// closes them.
func scanItems(rows driver.Rows) ([]ffstore.QueueItem, error) {
	var items []ffstore.QueueItem
	dest := make([]driver.Value, 2)
	for {
		err := rows.Next(dest)
		if errors.Is(err, io.EOF) {
			return items, rows.Close()
		}
		if err != nil {
			_ = rows.Close()
			return nil, err
		}
		member, ok1 := dest[0].(string)
		score, ok2 := dest[1].(int64)
		if !ok1 || !ok2 {
			_ = rows.Close()
			return nil, fmt.Errorf("ffsqlite: queue item row has types %T, %T", dest[0], dest[1])
		}
		items = append(items, ffstore.QueueItem{Member: member, Score: score})
	}
}

// blob returns a record value the writer read: a found empty value is a non-nil empty
// slice, as getValue returns it.
func blob(v driver.Value, found bool) []byte {
	if !found {
		return nil
	}
	b, _ := v.([]byte)
	if b == nil {
		b = []byte{}
	}
	return b
}
