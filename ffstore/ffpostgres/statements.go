package ffpostgres

import (
	"fmt"
	"regexp"
	"strconv"
	"strings"
	"sync/atomic"
)

// statements is all SQL of the store for one schema. Every table name is qualified with
// the schema, so nothing depends on the connection's search_path. pgx prepares each
// statement once per connection (its statement cache) on first use.
type statements struct {
	get, getLock           string
	prefetch, prefetchLock string
	rangeFirst, rangeAfter string
	pop                    string

	notify                        string
	writes                        [writeParts]string
	writeTexts                    [1 << writeParts]atomic.Pointer[string] // by the mask of the parts used
	appendEvents                  string
	hasPending, lockLog, sequence string

	heads, emptyQueues       string
	tryLockQueue, pruneQueue string
	readEvents, eventBounds  string
	trimMark, trimDelete     string
}

func newStatements(qs string) *statements {
	q := func(sql string) string { return strings.ReplaceAll(sql, "{S}", qs) }
	st := &statements{
		get:          q(`SELECT value FROM {S}.records WHERE shard = $1 AND key = $2`),
		getLock:      q(`SELECT value FROM {S}.records WHERE shard = $1 AND key = $2 FOR UPDATE`),
		prefetch:     q(`SELECT key, value FROM {S}.records WHERE shard = $1 AND key = ANY($2::text[])`),
		prefetchLock: q(`SELECT key, value FROM {S}.records WHERE shard = $1 AND key = ANY($2::text[]) ORDER BY key FOR UPDATE`),
		rangeFirst: q(`SELECT member, score FROM {S}.queue_items
			WHERE shard = $1 AND queue = $2 AND score <= $3
			ORDER BY score, member LIMIT $4`),
		rangeAfter: q(`SELECT member, score FROM {S}.queue_items
			WHERE shard = $1 AND queue = $2 AND score <= $3 AND (score, member) > ($5::bigint, $6::text)
			ORDER BY score, member LIMIT $4`),
		// Items another unit has locked (it is popping, re-scoring or removing them) are
		// skipped, never waited for. Each row says what it is: 0, a popped item; 1, the
		// queue's head after the pop, if any, as Range would read it, so that the engine's
		// usual next step (a Range for the new head) costs no round trip; 2, a record
		// "<kind>:<member>" of a popped member for each kind in $5, read and locked in
		// key order as prefetchLock reads them, so that the pop and the read of what it
		// popped are one round trip.
		pop: q(`WITH popped AS (
				DELETE FROM {S}.queue_items WHERE (shard, queue, member) IN (
					SELECT shard, queue, member FROM {S}.queue_items
					WHERE shard = $1 AND queue = $2 AND score <= $3
					ORDER BY score, member LIMIT $4
					FOR UPDATE SKIP LOCKED)
				RETURNING member, score),
			fetched AS (
				SELECT r.key, r.value FROM {S}.records r
				WHERE r.shard = $1 AND r.key = ANY (ARRAY(
					SELECT k.kind || ':' || p.member FROM popped p, unnest($5::text[]) AS k(kind)))
				ORDER BY r.key FOR UPDATE)
			SELECT 0, member, score, NULL::bytea FROM popped
			UNION ALL
			(SELECT 1, i.member, i.score, NULL FROM {S}.queue_items i
				WHERE i.shard = $1 AND i.queue = $2 AND NOT EXISTS (SELECT 1 FROM popped p WHERE p.member = i.member)
				ORDER BY i.score, i.member LIMIT 1)
			UNION ALL
			SELECT 2, key, 0, value FROM fetched`),

		hasPending: q(`SELECT EXISTS (SELECT 1 FROM {S}.event_pending WHERE shard = $1)`),
		// The sequencer: lockLog, then (a new statement, so a new snapshot that sees every
		// unit committed before the lock was granted) sequence, in one transaction. The
		// lock is held until COMMIT, so blocks of numbers become visible in order.
		lockLog: q(`SELECT last_seq FROM {S}.event_logs WHERE shard = $1 FOR UPDATE`),
		sequence: q(`WITH moved AS (
				DELETE FROM {S}.event_pending p WHERE (p.shard, p.xid) IN (
					SELECT shard, xid FROM {S}.event_pending WHERE shard = $1 ORDER BY ord LIMIT $2)
				RETURNING p.ord, p.n, p.events),
			numbered AS (SELECT m.n, m.events, sum(m.n) OVER (ORDER BY m.ord) AS upto FROM moved m),
			base AS (SELECT last_seq FROM {S}.event_logs WHERE shard = $1),
			ins AS (
				INSERT INTO {S}.event_blocks (shard, first_seq, last_seq, events)
				SELECT $1, base.last_seq + n.upto - n.n + 1, base.last_seq + n.upto, n.events
				FROM numbered n, base
				RETURNING last_seq - first_seq + 1 AS n),
			upd AS (UPDATE {S}.event_logs SET last_seq = last_seq + (SELECT coalesce(sum(n), 0) FROM ins) WHERE shard = $1)
			SELECT count(*) FROM ins`),
		notify: `SELECT pg_notify($1, '')`,
		// A unit's events wait, unnumbered, as one blob tagged with its transaction id and
		// the next value of event_order, for the sequencer. The unit sends this after its
		// write statement, so that it takes its place in that order after every lock the
		// unit waited for.
		appendEvents: q(`INSERT INTO {S}.event_pending (shard, n, events) VALUES ($1, $2, $3)`),

		// The head of each directory queue starting with one of the prefixes lo, found in
		// the range [lo, hi) (hi '' = no end): one index probe per queue; an empty queue
		// comes back with a NULL member.
		heads: q(`SELECT d.shard, d.queue, h.member, h.score
			FROM {S}.queues d
			JOIN unnest($1::text[], $2::text[]) AS p(lo, hi) ON d.queue >= p.lo AND (p.hi = '' OR d.queue < p.hi)
				AND starts_with(d.queue, p.lo)
			LEFT JOIN LATERAL (
				SELECT i.member, i.score FROM {S}.queue_items i
				WHERE i.shard = d.shard AND i.queue = d.queue
				ORDER BY i.score, i.member LIMIT 1) h ON true`),
		emptyQueues: q(`SELECT d.queue, d.shard FROM {S}.queues d
			WHERE NOT EXISTS (SELECT 1 FROM {S}.queue_items i WHERE i.shard = d.shard AND i.queue = d.queue)`),
		tryLockQueue: `SELECT pg_try_advisory_xact_lock($1)`,
		pruneQueue: q(`DELETE FROM {S}.queues d WHERE d.queue = $1 AND d.shard = $2
			AND NOT EXISTS (SELECT 1 FROM {S}.queue_items i WHERE i.shard = $2 AND i.queue = $1)`),

		// The blocks holding Seqs $2 to $3: from the one holding $2 (the last block that
		// starts at or before it) to the last that starts at or before $3, both ends
		// found by the primary key.
		readEvents: q(`SELECT first_seq, last_seq, events FROM {S}.event_blocks
			WHERE shard = $1 AND last_seq >= $2 AND first_seq <= $3
				AND first_seq >= coalesce((SELECT max(first_seq) FROM {S}.event_blocks WHERE shard = $1 AND first_seq <= $2), 0)
			ORDER BY first_seq`),
		eventBounds: q(`SELECT trimmed, last_seq FROM {S}.event_logs WHERE shard = $1`),
		trimMark: q(`UPDATE {S}.event_logs SET trimmed = GREATEST(trimmed, LEAST($2, last_seq))
			WHERE shard = $1 RETURNING trimmed`),
		trimDelete: q(`DELETE FROM {S}.event_blocks WHERE shard = $1 AND first_seq <= $2 AND last_seq <= $2`),
	}
	for i, part := range writePartSQL {
		st.writes[i] = q(part)
	}
	return st
}

// The parts of a unit's write statement, in the order they appear.
const (
	partDelete   = iota // records deleted
	partUpdate          // records the unit read (and locked): plain UPDATE
	partUpsert          // records written blind
	partInsert          // records the unit read as missing
	partRemove          // queue items removed
	partQueueDir        // queue directory rows made sure of, under the queue's advisory lock
	partAdd             // queue items added or re-scored
	writeParts
)

// writePartSQL are the sub-statements of a unit's write statement. A unit sends one
// statement, made of the parts it needs, with COMMIT. Each part is set-based over arrays
// whose parameters ($P1, $P2, …) are numbered when the statement is put together; $1 is
// the shard. The unit collapsed its writes to one per record and queue member, so no two
// parts touch one row.
//
// Records the unit read as missing are inserted without upsert, so that a record created
// by a concurrent unit meanwhile fails the unit (unique violation: a store conflict)
// instead of being overwritten.
//
// A unit adding to a queue takes the queue's advisory lock shared before it makes sure
// the queue's directory row exists, and holds it until it commits, so the directory pruner
// (which needs the lock exclusively) cannot delete that row between the check and the
// commit.
var writePartSQL = [writeParts]string{ //nolint:gochecknoglobals // constant SQL
	partDelete: `DELETE FROM {S}.records WHERE shard = $1 AND key = ANY($P1::text[])`,
	partUpdate: `UPDATE {S}.records r SET value = u.v FROM unnest($P1::text[], $P2::bytea[]) AS u(k, v)
		WHERE r.shard = $1 AND r.key = u.k`,
	partUpsert: `INSERT INTO {S}.records (shard, key, value)
		SELECT $1, k, v FROM unnest($P1::text[], $P2::bytea[]) AS u(k, v)
		ON CONFLICT (shard, key) DO UPDATE SET value = EXCLUDED.value`,
	partInsert: `INSERT INTO {S}.records (shard, key, value)
		SELECT $1, k, v FROM unnest($P1::text[], $P2::bytea[]) AS u(k, v)`,
	partRemove: `DELETE FROM {S}.queue_items WHERE shard = $1
		AND (queue, member) IN (SELECT q, m FROM unnest($P1::text[], $P2::text[]) AS u(q, m))`,
	partQueueDir: `INSERT INTO {S}.queues (queue, shard)
		SELECT u.q, $1 FROM unnest($P1::text[], $P2::bigint[]) AS u(q, k)
		CROSS JOIN LATERAL (SELECT pg_advisory_xact_lock_shared(u.k)) AS l
		ON CONFLICT DO NOTHING`,
	partAdd: `INSERT INTO {S}.queue_items (shard, queue, member, score)
		SELECT $1, q, m, sc FROM unnest($P1::text[], $P2::text[], $P3::bigint[]) AS u(q, m, sc)
		ON CONFLICT (shard, queue, member) DO UPDATE SET score = EXCLUDED.score
		WHERE queue_items.score <> EXCLUDED.score`,
}

// writePartParams is how many parameters each part of writePartSQL takes: its highest
// $P number.
var writePartParams = func() (n [writeParts]int) { //nolint:gochecknoglobals // derived from constant SQL
	placeholder := regexp.MustCompile(`\$P(\d+)`)
	for i, sql := range writePartSQL {
		for _, m := range placeholder.FindAllStringSubmatch(sql, -1) {
			j, _ := strconv.Atoi(m[1])
			n[i] = max(n[i], j)
		}
	}
	return n
}()

// writeStatement returns a unit's write statement and its arguments: used[i] is the
// parameters of part i (exactly writePartParams[i] of them), or nil if the unit needs
// none of it. The text depends only on which parts are used, so it is put together once
// per combination and kept.
func (st *statements) writeStatement(used *[writeParts][]any, shard int) (string, []any) {
	var mask uint
	args := []any{shard}
	for i, params := range used {
		if params == nil {
			continue
		}
		if len(params) != writePartParams[i] {
			panic(fmt.Sprintf("ffpostgres: write part %d takes %d parameters, got %d", i, writePartParams[i], len(params)))
		}
		mask |= 1 << i
		args = append(args, params...)
	}
	if sql := st.writeTexts[mask].Load(); sql != nil {
		return *sql, args
	}
	sql := st.assembleWrite(mask)
	st.writeTexts[mask].Store(&sql)
	return sql, args
}

// assembleWrite puts together the parts in mask, numbering their parameters after $1
// (the shard) in part order. One part is sent as it is; several become data-modifying
// CTEs of one statement.
func (st *statements) assembleWrite(mask uint) string {
	next := 2
	var parts []string
	for i := range writeParts {
		if mask&(1<<i) == 0 {
			continue
		}
		sql := st.writes[i]
		for j := writePartParams[i]; j >= 1; j-- { // high numbers first: $P1 is a prefix of $P10
			sql = strings.ReplaceAll(sql, "$P"+strconv.Itoa(j), "$"+strconv.Itoa(next+j-1))
		}
		next += writePartParams[i]
		parts = append(parts, sql)
	}
	if len(parts) == 1 {
		return parts[0]
	}
	var b strings.Builder
	b.WriteString("WITH ")
	for i, p := range parts[:len(parts)-1] {
		if i > 0 {
			b.WriteString(", ")
		}
		fmt.Fprintf(&b, "w%d AS (%s)", i, p)
	}
	b.WriteString(" ")
	b.WriteString(parts[len(parts)-1])
	return b.String()
}
