package ffpostgres

import "strings"

// statements is all SQL of the store for one schema. Every table name is qualified with
// the schema, so nothing depends on the connection's search_path. pgx prepares each
// statement once per connection (its statement cache) on first use.
type statements struct {
	get, getLock           string
	prefetch, prefetchLock string
	rangeFirst, rangeAfter string
	pop                    string

	putRecords, insertRecords, deleteRecords string
	removeItems, lockQueues, addQueues       string
	addItems, appendEvents, notify           string
	hasPending, lockLog, sequence            string

	heads, tryLockQueue, pruneQueue string
	readEvents, eventBounds         string
	trimMark, trimDelete            string
}

func newStatements(qs string) *statements {
	q := func(sql string) string { return strings.ReplaceAll(sql, "{S}", qs) }
	return &statements{
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
		// skipped, never waited for.
		pop: q(`DELETE FROM {S}.queue_items WHERE (shard, queue, member) IN (
				SELECT shard, queue, member FROM {S}.queue_items
				WHERE shard = $1 AND queue = $2 AND score <= $3
				ORDER BY score, member LIMIT $4
				FOR UPDATE SKIP LOCKED)
			RETURNING member, score`),

		// The writes of a unit, sent as one batch at commit.
		putRecords: q(`INSERT INTO {S}.records (shard, key, value)
			SELECT $1, k, v FROM unnest($2::text[], $3::bytea[]) AS u(k, v)
			ON CONFLICT (shard, key) DO UPDATE SET value = EXCLUDED.value`),
		// Records the unit read as missing: a plain insert, so that a record created by a
		// concurrent unit meanwhile fails the unit (unique violation: a store conflict)
		// instead of being overwritten.
		insertRecords: q(`INSERT INTO {S}.records (shard, key, value)
			SELECT $1, k, v FROM unnest($2::text[], $3::bytea[]) AS u(k, v)`),
		deleteRecords: q(`DELETE FROM {S}.records WHERE shard = $1 AND key = ANY($2::text[])`),
		removeItems: q(`DELETE FROM {S}.queue_items WHERE shard = $1
			AND (queue, member) IN (SELECT q, m FROM unnest($2::text[], $3::text[]) AS u(q, m))`),
		// A unit adding to a queue holds a shared advisory lock on it until it commits, so
		// the directory pruner (which needs the lock exclusively) cannot delete the
		// queue's directory row between this unit's check that it exists and its commit.
		lockQueues: `SELECT count(pg_advisory_xact_lock_shared(k)) FROM unnest($1::bigint[]) AS k`,
		addQueues: q(`INSERT INTO {S}.queues (queue, shard)
			SELECT q, $1 FROM unnest($2::text[]) AS q ON CONFLICT DO NOTHING`),
		addItems: q(`INSERT INTO {S}.queue_items (shard, queue, member, score)
			SELECT $1, q, m, sc FROM unnest($2::text[], $3::text[], $4::bigint[]) AS u(q, m, sc)
			ON CONFLICT (shard, queue, member) DO UPDATE SET score = EXCLUDED.score
			WHERE queue_items.score <> EXCLUDED.score`),
		// A unit's events wait, unnumbered, for the sequencer.
		appendEvents: q(`INSERT INTO {S}.event_pending (shard, ord, version, type, time_unix, time_nsec, execution_id, flow_id, namespace, lane, data)
			SELECT $1, e.ord, e.version, e.type, e.time_unix, e.time_nsec, e.execution_id, e.flow_id, e.namespace, e.lane, e.data
			FROM unnest($2::integer[], $3::text[], $4::bigint[], $5::integer[], $6::text[], $7::text[], $8::text[], $9::text[], $10::bytea[])
				WITH ORDINALITY AS e(version, type, time_unix, time_nsec, execution_id, flow_id, namespace, lane, data, ord)`),
		hasPending: q(`SELECT EXISTS (SELECT 1 FROM {S}.event_pending WHERE shard = $1)`),
		// The sequencer: lockLog, then (a new statement, so a new snapshot that sees every
		// unit committed before the lock was granted) sequence, in one transaction. The
		// lock is held until COMMIT, so blocks of numbers become visible in order.
		lockLog: q(`SELECT last_seq FROM {S}.event_logs WHERE shard = $1 FOR UPDATE`),
		sequence: q(`WITH moved AS (
				DELETE FROM {S}.event_pending p WHERE (p.shard, p.xid, p.ord) IN (
					SELECT shard, xid, ord FROM {S}.event_pending WHERE shard = $1 ORDER BY xid, ord LIMIT $2)
				RETURNING p.*),
			numbered AS (SELECT m.*, row_number() OVER (ORDER BY m.xid, m.ord) AS rn FROM moved m),
			base AS (SELECT last_seq FROM {S}.event_logs WHERE shard = $1),
			ins AS (
				INSERT INTO {S}.events (shard, seq, version, type, time_unix, time_nsec, execution_id, flow_id, namespace, lane, data)
				SELECT $1, base.last_seq + n.rn, n.version, n.type, n.time_unix, n.time_nsec, n.execution_id, n.flow_id, n.namespace, n.lane, n.data
				FROM numbered n, base
				RETURNING 1),
			upd AS (UPDATE {S}.event_logs SET last_seq = last_seq + (SELECT count(*) FROM ins) WHERE shard = $1)
			SELECT count(*) FROM ins`),
		notify: `SELECT pg_notify($1, '')`,

		// The head of each directory queue in one of the ranges [lo, hi) (hi '' = no end):
		// one index probe per queue; an empty queue comes back with a NULL member.
		heads: q(`SELECT d.shard, d.queue, h.member, h.score
			FROM {S}.queues d
			JOIN unnest($1::text[], $2::text[]) AS p(lo, hi) ON d.queue >= p.lo AND (p.hi = '' OR d.queue < p.hi)
			LEFT JOIN LATERAL (
				SELECT i.member, i.score FROM {S}.queue_items i
				WHERE i.shard = d.shard AND i.queue = d.queue
				ORDER BY i.score, i.member LIMIT 1) h ON true`),
		tryLockQueue: `SELECT pg_try_advisory_xact_lock($1)`,
		pruneQueue: q(`DELETE FROM {S}.queues d WHERE d.queue = $1 AND d.shard = $2
			AND NOT EXISTS (SELECT 1 FROM {S}.queue_items i WHERE i.shard = $2 AND i.queue = $1)`),

		readEvents: q(`SELECT seq, version, type, time_unix, time_nsec, execution_id, flow_id, namespace, lane, data
			FROM {S}.events WHERE shard = $1 AND seq > $2 ORDER BY seq LIMIT $3`),
		eventBounds: q(`SELECT trimmed, last_seq FROM {S}.event_logs WHERE shard = $1`),
		trimMark: q(`UPDATE {S}.event_logs SET trimmed = GREATEST(trimmed, LEAST($2, last_seq))
			WHERE shard = $1 RETURNING trimmed`),
		trimDelete: q(`DELETE FROM {S}.events WHERE shard = $1 AND seq <= $2`),
	}
}
