package ffpostgres

import (
	"context"
	"math"
	"slices"
	"strings"
	"unicode/utf8"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/flowfabric/flowfabric/ffstore"
	"github.com/flowfabric/flowfabric/fftype"
)

// cached is a record as a unit read it from the database.
type cached struct {
	value []byte
	ok    bool
}

// recWrite is a unit's last write of one record: a value, or a delete when del is set.
type recWrite struct {
	value []byte
	del   bool
}

// itemKey names one queue member.
type itemKey struct{ queue, member string }

// itemWrite is a unit's last write of one queue member: a score, or a removal.
type itemWrite struct {
	score  int64
	remove bool
}

// headAfterPop is a queue's first item after a PopDue, ok false if the queue was empty.
type headAfterPop struct {
	item ffstore.QueueItem
	ok   bool
}

// unitTx is a unit (write) or a View (read-only) on one shard, on one pooled connection.
//
// Reads go to the database at once, inside a transaction begun lazily with the first of
// them (BEGIN travels in the same round trip). In a unit, every record read is locked
// (SELECT … FOR UPDATE) until the unit ends, so whatever it read stays true until it
// commits; PopDue deletes its items at once (FOR UPDATE SKIP LOCKED). All other writes are
// buffered, collapsed to their last value per key, and sent at commit as one pipelined
// batch ending with the event append and COMMIT.
type unitTx struct {
	s        *Store
	ctx      context.Context
	shard    int
	readOnly bool
	conn     *pgxpool.Conn
	begun    bool  // BEGIN has been sent
	err      error // first failure; the transaction is unusable after it
	done     bool

	reads  map[string]cached // records read from the database
	writes map[string]recWrite
	items  map[itemKey]itemWrite
	popped bool                    // a PopDue removed something
	heads  map[string]headAfterPop // per queue: its head as the last PopDue on it read it
	events []fftype.Event
}

var (
	_ ffstore.Tx         = (*unitTx)(nil)
	_ ffstore.ReadTx     = (*unitTx)(nil)
	_ ffstore.PopFetcher = (*unitTx)(nil)
)

func (t *unitTx) usable() error {
	if t.done {
		return errTxDone()
	}
	return t.err
}

// fail records the first failure (translated) and returns it.
func (t *unitTx) fail(err error, op string) error {
	if t.err == nil {
		t.err = translate(t.ctx, err, op)
	}
	return t.err
}

// checkText refuses, before any round trip, a key, queue name or member that the store's
// text columns cannot hold: one with a NUL byte or invalid UTF-8. The validation error is
// recorded as the unit's failure, so a unit whose fn wrote such a string writes nothing.
func (t *unitTx) checkText(ss ...string) error {
	for _, s := range ss {
		if !utf8.ValidString(s) || strings.IndexByte(s, 0) >= 0 {
			t.err = fftype.Validationf(fftype.CodeInvalidInput,
				"ffpostgres: %q holds a NUL byte or invalid UTF-8: keys, queue names and members are Postgres text", s)
			return t.err
		}
	}
	return nil
}

// beginSQL is the statement that opens the transaction.
func (t *unitTx) beginSQL(b *pgx.Batch) {
	if t.readOnly {
		// One snapshot for the whole View.
		b.Queue("BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY")
	} else {
		b.Queue(beginReadCommitted) // with row locks
	}
	if t.s.timeout != "" {
		b.Queue(setTimeoutSQL, t.s.timeout)
	}
}

// query runs one statement, beginning the transaction in the same round trip if needed,
// and hands its rows to scan.
func (t *unitTx) query(op, sql string, scan func(rows pgx.Rows) error, args ...any) error {
	if err := t.usable(); err != nil {
		return err
	}
	if t.begun {
		rows, err := t.conn.Query(t.ctx, sql, args...)
		if err != nil {
			return t.fail(err, op)
		}
		return t.scanRows(op, rows, scan)
	}
	b := &pgx.Batch{}
	t.beginSQL(b)
	prefix := b.Len()
	b.Queue(sql, args...)
	br := t.conn.SendBatch(t.ctx, b)
	t.begun = true
	for range prefix {
		if _, err := br.Exec(); err != nil {
			_ = br.Close()
			return t.fail(err, "begin")
		}
	}
	rows, err := br.Query()
	if err != nil {
		_ = br.Close()
		return t.fail(err, op)
	}
	if err := t.scanRows(op, rows, scan); err != nil {
		_ = br.Close()
		return err
	}
	if err := br.Close(); err != nil {
		return t.fail(err, op)
	}
	return nil
}

func (t *unitTx) scanRows(op string, rows pgx.Rows, scan func(rows pgx.Rows) error) error {
	defer rows.Close()
	for rows.Next() {
		if err := scan(rows); err != nil {
			return t.fail(err, op)
		}
	}
	if err := rows.Err(); err != nil {
		return t.fail(err, op)
	}
	return nil
}

// Prefetch reads every given key not yet known to the unit in one round trip, locking
// the records found when in a unit (in key order, so concurrent prefetches do not
// deadlock).
func (t *unitTx) Prefetch(keys ...string) error {
	if err := t.usable(); err != nil {
		return err
	}
	if err := t.checkText(keys...); err != nil {
		return err
	}
	var need []string
	for _, k := range keys {
		if !t.known(k) {
			need = append(need, k)
		}
	}
	if len(need) == 0 {
		return nil
	}
	slices.Sort(need)
	need = slices.Compact(need)
	sql := t.s.sql.prefetch
	if !t.readOnly {
		sql = t.s.sql.prefetchLock
	}
	found := make(map[string][]byte, len(need))
	err := t.query("prefetch", sql, func(rows pgx.Rows) error {
		var k string
		var v []byte
		if err := rows.Scan(&k, &v); err != nil {
			return err
		}
		found[k] = nonNil(v)
		return nil
	}, t.shard, need)
	if err != nil {
		return err
	}
	for _, k := range need {
		v, ok := found[k]
		t.reads[k] = cached{value: v, ok: ok}
	}
	return nil
}

// known reports whether the unit has written or read key, so that Get needs no read.
func (t *unitTx) known(key string) bool {
	if _, ok := t.writes[key]; ok {
		return true
	}
	_, ok := t.reads[key]
	return ok
}

// Get returns the unit's own last write of key, else the record as read (and, in a unit,
// locked) from the database.
func (t *unitTx) Get(key string) ([]byte, bool, error) {
	if err := t.usable(); err != nil {
		return nil, false, err
	}
	if err := t.checkText(key); err != nil {
		return nil, false, err
	}
	if w, ok := t.writes[key]; ok {
		if w.del {
			return nil, false, nil
		}
		return slices.Clone(w.value), true, nil
	}
	// A value read is handed out without a copy: the unit only keeps it until it ends.
	if c, ok := t.reads[key]; ok {
		return c.value, c.ok, nil
	}
	sql := t.s.sql.get
	if !t.readOnly {
		sql = t.s.sql.getLock
	}
	var c cached
	err := t.query("get", sql, func(rows pgx.Rows) error {
		var v []byte
		if err := rows.Scan(&v); err != nil {
			return err
		}
		c = cached{value: nonNil(v), ok: true}
		return nil
	}, t.shard, key)
	if err != nil {
		return nil, false, err
	}
	t.reads[key] = c
	return c.value, c.ok, nil
}

func nonNil(v []byte) []byte {
	if v == nil {
		return []byte{}
	}
	return v
}

// Range reads the committed queue as of this statement, less the unit's own pops. In a
// unit the rows are not locked; see the package documentation for why.
func (t *unitTx) Range(queue string, after *ffstore.QueueItem, maxScore int64, n int) ([]ffstore.QueueItem, error) {
	if err := t.usable(); err != nil {
		return nil, err
	}
	if err := t.checkText(queue); err != nil {
		return nil, err
	}
	if n <= 0 {
		return nil, nil
	}
	n = min(n, math.MaxInt32)
	if h, ok := t.heads[queue]; ok && after == nil && n == 1 {
		// The head as the unit's last PopDue on this queue read it.
		if !h.ok || h.item.Score > maxScore {
			return nil, nil
		}
		return []ffstore.QueueItem{h.item}, nil
	}
	var items []ffstore.QueueItem
	scan := func(rows pgx.Rows) error {
		var it ffstore.QueueItem
		if err := rows.Scan(&it.Member, &it.Score); err != nil {
			return err
		}
		items = append(items, it)
		return nil
	}
	var err error
	if after == nil {
		err = t.query("range", t.s.sql.rangeFirst, scan, t.shard, queue, maxScore, n)
	} else {
		err = t.query("range", t.s.sql.rangeAfter, scan, t.shard, queue, maxScore, n, after.Score, after.Member)
	}
	if err != nil {
		return nil, err
	}
	return items, nil
}

// PopDue deletes and returns up to n due items at once, skipping items other units hold.
func (t *unitTx) PopDue(queue string, maxScore int64, n int) ([]ffstore.QueueItem, error) {
	return t.PopDueFetch(queue, maxScore, n)
}

// PopDueFetch implements [ffstore.PopFetcher]: the pop and the read of the popped
// members' records are one statement, so one round trip.
func (t *unitTx) PopDueFetch(queue string, maxScore int64, n int, kinds ...string) ([]ffstore.QueueItem, error) {
	if err := t.usable(); err != nil {
		return nil, err
	}
	if err := t.checkText(queue); err != nil {
		return nil, err
	}
	if n <= 0 {
		return nil, nil
	}
	n = min(n, math.MaxInt32)
	var items []ffstore.QueueItem
	next := headAfterPop{}
	found := map[string][]byte{}
	err := t.query("pop", t.s.sql.pop, func(rows pgx.Rows) error {
		var row int32
		var it ffstore.QueueItem
		var value []byte
		if err := rows.Scan(&row, &it.Member, &it.Score, &value); err != nil {
			return err
		}
		switch row {
		case 0:
			items = append(items, it)
		case 1:
			next = headAfterPop{item: it, ok: true}
		default:
			found[it.Member] = nonNil(value) // it.Member holds the record's key
		}
		return nil
	}, t.shard, queue, maxScore, n, kinds)
	if err != nil {
		return nil, err
	}
	if t.heads == nil {
		t.heads = map[string]headAfterPop{}
	}
	t.heads[queue] = next
	if len(items) == 0 {
		return nil, nil
	}
	t.popped = true
	// RETURNING has no order of its own.
	slices.SortFunc(items, func(a, b ffstore.QueueItem) int {
		switch {
		case a.Less(b):
			return -1
		case b.Less(a):
			return 1
		}
		return 0
	})
	members := make([]string, len(items))
	for i, it := range items {
		members[i] = it.Member
	}
	for _, k := range ffstore.MemberRecordKeys(members, kinds) {
		if t.known(k) {
			continue // the unit's own write or earlier read stands
		}
		v, ok := found[k]
		t.reads[k] = cached{value: v, ok: ok}
	}
	return items, nil
}

func (t *unitTx) writable(op string) bool {
	if t.done {
		panic("ffpostgres: " + op + " on a transaction whose unit has ended (fn must not retain tx)")
	}
	return t.err == nil
}

// Put buffers the write; the store keeps value.
func (t *unitTx) Put(key string, value []byte) {
	if t.writable("Put") && t.checkText(key) == nil {
		t.writes[key] = recWrite{value: nonNil(value)}
	}
}

// Delete buffers the delete.
func (t *unitTx) Delete(key string) {
	if t.writable("Delete") && t.checkText(key) == nil {
		t.writes[key] = recWrite{del: true}
	}
}

// QueueAdd buffers the add.
func (t *unitTx) QueueAdd(queue, member string, score int64) {
	if t.writable("QueueAdd") && t.checkText(queue, member) == nil {
		delete(t.heads, queue)
		t.items[itemKey{queue, member}] = itemWrite{score: score}
	}
}

// QueueRemove buffers the removal.
func (t *unitTx) QueueRemove(queue, member string) {
	if t.writable("QueueRemove") && t.checkText(queue, member) == nil {
		delete(t.heads, queue)
		t.items[itemKey{queue, member}] = itemWrite{remove: true}
	}
}

// AppendEvent buffers ev; it is numbered at commit.
func (t *unitTx) AppendEvent(ev fftype.Event) {
	if t.writable("AppendEvent") {
		t.events = append(t.events, ev)
	}
}

// dirty reports whether committing the unit changes anything.
func (t *unitTx) dirty() bool {
	return t.popped || len(t.writes) > 0 || len(t.items) > 0 || len(t.events) > 0
}

// commit sends the unit's buffered writes and COMMIT in one batch. It returns whether the
// unit changed anything.
func (t *unitTx) commit(ctx context.Context) error {
	if err := t.usable(); err != nil {
		return err
	}
	if !t.dirty() {
		if !t.begun {
			return nil
		}
		if _, err := t.conn.Exec(ctx, "COMMIT"); err != nil {
			return t.fail(err, "commit")
		}
		return nil
	}
	sq := t.s.sql
	b := &pgx.Batch{}
	if !t.begun {
		t.beginSQL(b)
	}

	var used [writeParts][]any

	// Records, in key order within each part of the statement, so that concurrent units
	// writing the same records without reading them lock rows in one order. (A unit's
	// deletes run before its upserts, so two units each deleting a record the other
	// upserts can still deadlock: a conflict, which the engine retries. The engine reads,
	// and so locks, what it writes.)
	keys := make([]string, 0, len(t.writes))
	for k := range t.writes {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	var delKeys, updKeys, putKeys, insKeys []string
	var updVals, putVals, insVals [][]byte
	for _, k := range keys {
		w := t.writes[k]
		read, wasRead := t.reads[k]
		switch {
		case w.del:
			delKeys = append(delKeys, k)
		case wasRead && read.ok && !t.readOnly:
			updKeys, updVals = append(updKeys, k), append(updVals, w.value)
		case wasRead && !read.ok:
			insKeys, insVals = append(insKeys, k), append(insVals, w.value)
		default:
			putKeys, putVals = append(putKeys, k), append(putVals, w.value)
		}
	}
	if len(delKeys) > 0 {
		used[partDelete] = []any{delKeys}
	}
	if len(updKeys) > 0 {
		used[partUpdate] = []any{updKeys, updVals}
	}
	if len(putKeys) > 0 {
		used[partUpsert] = []any{putKeys, putVals}
	}
	if len(insKeys) > 0 {
		used[partInsert] = []any{insKeys, insVals}
	}

	// Queue items.
	iks := make([]itemKey, 0, len(t.items))
	for k := range t.items {
		iks = append(iks, k)
	}
	slices.SortFunc(iks, func(a, b itemKey) int {
		if c := strings.Compare(a.queue, b.queue); c != 0 {
			return c
		}
		return strings.Compare(a.member, b.member)
	})
	var remQ, remM, addQ, addM, queues []string
	var addS, locks []int64
	for _, k := range iks {
		w := t.items[k]
		if w.remove {
			remQ, remM = append(remQ, k.queue), append(remM, k.member)
			continue
		}
		addQ, addM, addS = append(addQ, k.queue), append(addM, k.member), append(addS, w.score)
		if len(queues) == 0 || queues[len(queues)-1] != k.queue {
			queues = append(queues, k.queue)
			locks = append(locks, t.s.queueLockKey(t.shard, k.queue))
		}
	}
	if len(remQ) > 0 {
		used[partRemove] = []any{remQ, remM}
	}
	if len(addQ) > 0 {
		used[partQueueDir] = []any{queues, locks}
		used[partAdd] = []any{addQ, addM, addS}
	}

	if t.s.notifyInTx {
		b.Queue(sq.notify, t.s.channel)
	}
	writes := false
	for _, u := range used {
		writes = writes || u != nil
	}
	if writes {
		sql, args := sq.writeStatement(&used, t.shard)
		b.Queue(sql, args...)
	}
	// The events, as one blob, after every other write: see appendEvents.
	if n := len(t.events); n > 0 {
		var blob []byte
		for i := range t.events {
			blob = appendEventBlob(blob, &t.events[i])
		}
		b.Queue(sq.appendEvents, t.shard, int32(n), blob) //nolint:gosec // a unit's events are far fewer than 2^31
	}
	b.Queue("COMMIT")

	br := t.conn.SendBatch(ctx, b)
	t.begun = true
	for range b.Len() {
		if _, err := br.Exec(); err != nil {
			_ = br.Close()
			return t.fail(err, "commit")
		}
	}
	if err := br.Close(); err != nil {
		return t.fail(err, "commit")
	}
	return nil
}

// rollback ends the transaction without writing. It reports whether the connection is
// still clean enough to go back to the pool.
func (t *unitTx) rollback(ctx context.Context) bool {
	if !t.begun {
		return true
	}
	if _, err := t.conn.Exec(ctx, "ROLLBACK"); err != nil {
		return false
	}
	return true
}
