package ffpostgres

import (
	"context"
	"errors"
	"fmt"
	"hash/fnv"
	"regexp"
	"strings"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/flowfabric/flowfabric/fftype"
)

// migrations is the schema, one entry per version: migrations[i] takes a schema from
// version i to version i+1. Entries are forward-only and never edited once released; a
// change is a new entry. "{S}" stands for the quoted schema name. The version a schema is
// at is stored in its meta table under "schema_version".
//
// Tables are not partitioned: the shard is a column leading every primary key. Text
// columns that are ordered or compared by range use the "C" collation, so their order is
// bytewise, as the contract (and Go) order strings, whatever the database's collation.
var migrations = [][]string{ //nolint:gochecknoglobals // the embedded schema, read-only
	// 1: records, queues with their directory, event logs, meta.
	{
		`CREATE TABLE {S}.meta (
			name  text COLLATE "C" PRIMARY KEY,
			value bigint NOT NULL
		)`,
		// Executions are rewritten on every transition; free space in each page lets
		// those updates stay on the page (HOT) since the value is not indexed.
		`CREATE TABLE {S}.records (
			shard integer NOT NULL,
			key   text COLLATE "C" NOT NULL,
			value bytea NOT NULL,
			PRIMARY KEY (shard, key)
		) WITH (fillfactor = 85)`,
		// The narrow ready/due-queue table: a row is inserted when an item becomes due
		// and deleted when it is popped, so the hot index never holds flags flipped on a
		// wide row. Aggressive autovacuum keeps the dead index entries of popped items
		// from piling up ahead of the live ones.
		`CREATE TABLE {S}.queue_items (
			shard  integer NOT NULL,
			queue  text COLLATE "C" NOT NULL,
			member text COLLATE "C" NOT NULL,
			score  bigint NOT NULL,
			PRIMARY KEY (shard, queue, member)
		) WITH (autovacuum_vacuum_scale_factor = 0.01, autovacuum_vacuum_threshold = 500,
			autovacuum_vacuum_cost_delay = 0, autovacuum_vacuum_insert_scale_factor = 0.05)`,
		`CREATE INDEX queue_items_order ON {S}.queue_items (shard, queue, score, member)`,
		// The queue directory: one row per queue that may be non-empty, so QueueHeads
		// reads the names matching a prefix and each one's first item, never every item.
		// A row is added (if absent) with an item and removed lazily, by QueueHeads,
		// once its queue is seen empty.
		`CREATE TABLE {S}.queues (
			queue text COLLATE "C" NOT NULL,
			shard integer NOT NULL,
			PRIMARY KEY (queue, shard)
		)`,
		// One row per shard: the last Seq handed out and the trim point.
		`CREATE TABLE {S}.event_logs (
			shard    integer PRIMARY KEY,
			last_seq bigint NOT NULL DEFAULT 0,
			trimmed  bigint NOT NULL DEFAULT 0
		)`,
		// Events of committed units not numbered yet. A unit inserts its events here,
		// tagged with its transaction id, without touching any shared row; the sequencer
		// moves them into events with the next Seqs, in (xid, ord) order, under the
		// shard's event_logs row lock.
		`CREATE TABLE {S}.event_pending (
			shard        integer NOT NULL,
			xid          xid8    NOT NULL DEFAULT pg_current_xact_id(),
			ord          integer NOT NULL,
			version      integer NOT NULL,
			type         text    NOT NULL,
			time_unix    bigint  NOT NULL,
			time_nsec    integer NOT NULL,
			execution_id text    NOT NULL,
			flow_id      text    NOT NULL,
			namespace    text    NOT NULL,
			lane         text    NOT NULL,
			data         bytea,
			PRIMARY KEY (shard, xid, ord)
		) WITH (autovacuum_vacuum_scale_factor = 0.01, autovacuum_vacuum_threshold = 500,
			autovacuum_vacuum_cost_delay = 0, autovacuum_vacuum_insert_scale_factor = 0.05)`,
		`CREATE TABLE {S}.events (
			shard        integer NOT NULL,
			seq          bigint  NOT NULL,
			version      integer NOT NULL,
			type         text    NOT NULL,
			time_unix    bigint  NOT NULL,
			time_nsec    integer NOT NULL,
			execution_id text    NOT NULL,
			flow_id      text    NOT NULL,
			namespace    text    NOT NULL,
			lane         text    NOT NULL,
			data         bytea,
			PRIMARY KEY (shard, seq)
		)`,
	},
	// 2: events kept a unit at a time, as blobs (see event_blob.go), rather than a row
	// each. The rows of version 1 are converted: the waiting events of one transaction
	// become its one waiting row, and each numbered event a block of its own.
	{
		`CREATE TABLE {S}.event_units (
			shard  integer NOT NULL,
			xid    xid8    NOT NULL DEFAULT pg_current_xact_id(),
			n      integer NOT NULL CHECK (n > 0),
			events bytea   NOT NULL,
			PRIMARY KEY (shard, xid)
		) WITH (toast_tuple_target = 8160, autovacuum_vacuum_scale_factor = 0.01, autovacuum_vacuum_threshold = 500,
			autovacuum_vacuum_cost_delay = 0, autovacuum_vacuum_insert_scale_factor = 0.05)`,
		`INSERT INTO {S}.event_units (shard, xid, n, events)
			SELECT shard, xid, count(*), string_agg(` + eventBlobSQL + `, ''::bytea ORDER BY ord)
			FROM {S}.event_pending GROUP BY shard, xid`,
		`DROP TABLE {S}.event_pending`,
		`ALTER TABLE {S}.event_units RENAME TO event_pending`,
		`ALTER INDEX {S}.event_units_pkey RENAME TO event_pending_pkey`,
		// A block holds the events numbered first_seq to last_seq, one unit's.
		`CREATE TABLE {S}.event_blocks (
			shard     integer NOT NULL,
			first_seq bigint  NOT NULL,
			last_seq  bigint  NOT NULL CHECK (last_seq >= first_seq),
			events    bytea   NOT NULL,
			PRIMARY KEY (shard, first_seq)
		) WITH (toast_tuple_target = 8160)`,
		`INSERT INTO {S}.event_blocks (shard, first_seq, last_seq, events)
			SELECT shard, seq, seq, ` + eventBlobSQL + ` FROM {S}.events`,
		`DROP TABLE {S}.events`,
	},
	// 3: waiting units numbered in the order they inserted their events rather than by
	// transaction id. A unit gets its id at its first lock or write, so one that then
	// waited for another unit's lock, and read what it wrote, could hold the smaller id
	// and have its events numbered before those of the unit it depends on. A unit inserts
	// its events last, after every lock it waited for, taking the next value of
	// event_order. Waiting rows of version 2 keep their transaction id order.
	{
		`CREATE SEQUENCE {S}.event_order`,
		`ALTER TABLE {S}.event_pending ADD COLUMN ord bigint`,
		`UPDATE {S}.event_pending p SET ord = o.n
			FROM (SELECT shard, xid, row_number() OVER (ORDER BY xid) AS n FROM {S}.event_pending) o
			WHERE p.shard = o.shard AND p.xid = o.xid`,
		`SELECT setval('{S}.event_order', (SELECT coalesce(max(ord), 0) + 1 FROM {S}.event_pending), false)`,
		`ALTER TABLE {S}.event_pending ALTER COLUMN ord SET DEFAULT nextval('{S}.event_order'),
			ALTER COLUMN ord SET NOT NULL`,
		`CREATE INDEX event_pending_order ON {S}.event_pending (shard, ord)`,
	},
}

// eventBlobSQL encodes the event in the columns of a version 1 event row as
// appendEventBlob does.
const eventBlobSQL = `int4send(version) || int8send(time_unix) || int4send(time_nsec)
	|| int4send(octet_length(type)) || textsend(type)
	|| int4send(octet_length(execution_id)) || textsend(execution_id)
	|| int4send(octet_length(flow_id)) || textsend(flow_id)
	|| int4send(octet_length(namespace)) || textsend(namespace)
	|| int4send(octet_length(lane)) || textsend(lane)
	|| CASE WHEN data IS NULL THEN int4send(-1) ELSE int4send(octet_length(data)) || data END`

// SchemaVersion is the schema version this binary writes and the newest it can use.
const SchemaVersion = 3

const (
	metaSchemaVersion = "schema_version"
	metaShards        = "shards"
)

// DefaultSchema is the Postgres schema the store uses when Options.Schema is empty.
const DefaultSchema = "flowfabric"

var schemaNameRE = regexp.MustCompile(`^[a-z_][a-z0-9_]{0,62}$`) //nolint:gochecknoglobals // constant

func checkSchemaName(schema string) error {
	if !schemaNameRE.MatchString(schema) || strings.HasPrefix(schema, "pg_") {
		return fftype.Validationf(fftype.CodeInvalidInput,
			"ffpostgres: schema name %q: want 1 to 63 lowercase letters, digits and underscores, not starting with a digit or pg_", schema)
	}
	return nil
}

// advisoryKey returns the advisory lock key for name within schema. Keys of different
// schemas and purposes rarely collide, and a collision only makes two holders wait for
// each other.
func advisoryKey(schema, name string) int64 {
	h := fnv.New64a()
	h.Write([]byte("flowfabric\x00"))
	h.Write([]byte(schema))
	h.Write([]byte{0})
	h.Write([]byte(name))
	return int64(h.Sum64()) //nolint:gosec // a hash, wrapping is fine
}

// Migrate brings schema (empty means [DefaultSchema]) in the database behind pool to
// [SchemaVersion], creating it if needed. It runs in one transaction under an advisory
// lock, so concurrent callers (several processes starting at once) apply each migration
// once and the others wait for it. It refuses a schema newer than this binary's with an
// unavailable error coded [CodeSchemaTooNew]. It does not choose the shard count: the
// first [Open] or [New] does.
func Migrate(ctx context.Context, pool *pgxpool.Pool, schema string) error {
	return migrateTo(ctx, pool, schema, SchemaVersion)
}

// migrateTo is Migrate to version target (tests build older schemas with it).
func migrateTo(ctx context.Context, pool *pgxpool.Pool, schema string, target int) error {
	if schema == "" {
		schema = DefaultSchema
	}
	if err := checkSchemaName(schema); err != nil {
		return err
	}
	qs := pgx.Identifier{schema}.Sanitize()
	// READ COMMITTED: a migration that waited for another's lock reads the schema as
	// the other left it.
	tx, err := beginTx(ctx, pool)
	if err != nil {
		return translate(ctx, err, "begin migration")
	}
	defer func() { _ = tx.Rollback(context.WithoutCancel(ctx)) }()
	if _, err := tx.Exec(ctx, "SELECT pg_advisory_xact_lock($1)", advisoryKey(schema, "migrate")); err != nil {
		return translate(ctx, err, "lock for migration")
	}
	version, err := schemaVersion(ctx, tx, schema)
	if err != nil {
		return err
	}
	if version > SchemaVersion {
		return schemaError(schema, version)
	}
	if version >= target {
		return nil
	}
	if version == 0 {
		// Postgres checks CREATE on the database before IF NOT EXISTS: a role that owns a
		// schema made for it, but may not create schemas, must not be asked to.
		var exists bool
		if err := tx.QueryRow(ctx, `SELECT to_regnamespace($1) IS NOT NULL`, qs).Scan(&exists); err != nil {
			return translate(ctx, err, "look up schema")
		}
		if !exists {
			if _, err := tx.Exec(ctx, "CREATE SCHEMA "+qs); err != nil {
				return translate(ctx, err, "create schema")
			}
		}
	}
	for v := version; v < target; v++ {
		for _, stmt := range migrations[v] {
			if _, err := tx.Exec(ctx, strings.ReplaceAll(stmt, "{S}", qs)); err != nil {
				return translate(ctx, fmt.Errorf("migration %d: %w", v+1, err), "migrate")
			}
		}
		if _, err := tx.Exec(ctx, `INSERT INTO `+qs+`.meta (name, value) VALUES ($1, $2)
			ON CONFLICT (name) DO UPDATE SET value = EXCLUDED.value`, metaSchemaVersion, v+1); err != nil {
			return translate(ctx, err, "migrate")
		}
	}
	if err := tx.Commit(ctx); err != nil {
		return translate(ctx, err, "commit migration")
	}
	return nil
}

// MigrateURL is [Migrate] on a database named by a connection string (see [ParseURL]),
// for tools such as the CLI's migrate command that hold no pool. An empty schema means the
// URL's schema parameter, or [DefaultSchema].
func MigrateURL(ctx context.Context, connString, schema string) error {
	cfg, o, err := parseConfig(connString, nil)
	if err != nil {
		return err
	}
	if schema == "" {
		schema = o.Schema
	}
	cfg.MaxConns = 1
	pool, err := pgxpool.NewWithConfig(ctx, cfg)
	if err != nil {
		return translate(ctx, err, "connect")
	}
	defer pool.Close()
	return Migrate(ctx, pool, schema)
}

// querier is what schemaVersion needs of a pool or a transaction.
type querier interface {
	QueryRow(ctx context.Context, sql string, args ...any) pgx.Row
}

// schemaVersion returns the version schema is at, 0 if it has no meta table.
func schemaVersion(ctx context.Context, q querier, schema string) (int, error) {
	var exists bool
	if err := q.QueryRow(ctx, `SELECT to_regclass($1) IS NOT NULL`, pgx.Identifier{schema, "meta"}.Sanitize()).Scan(&exists); err != nil {
		return 0, translate(ctx, err, "read schema version")
	}
	if !exists {
		return 0, nil
	}
	var v int64
	err := q.QueryRow(ctx, `SELECT value FROM `+pgx.Identifier{schema}.Sanitize()+`.meta WHERE name = $1`, metaSchemaVersion).Scan(&v)
	if errors.Is(err, pgx.ErrNoRows) {
		return 0, nil
	}
	if err != nil {
		return 0, translate(ctx, err, "read schema version")
	}
	return int(v), nil
}

func schemaError(schema string, found int) error {
	cause := &SchemaVersionError{Schema: schema, Found: found, Known: SchemaVersion}
	code := CodeSchemaTooOld
	if found > SchemaVersion {
		code = CodeSchemaTooNew
	}
	return &fftype.Error{Kind: fftype.KindUnavailable, Code: code, Message: "ffpostgres", Err: cause}
}

// DropSchema deletes schema and everything in it, for tests and benchmarks that made it.
// Stores open on it fail afterwards.
func DropSchema(ctx context.Context, pool *pgxpool.Pool, schema string) error {
	if err := checkSchemaName(schema); err != nil {
		return err
	}
	if _, err := pool.Exec(ctx, "DROP SCHEMA IF EXISTS "+pgx.Identifier{schema}.Sanitize()+" CASCADE"); err != nil {
		return translate(ctx, err, "drop schema")
	}
	return nil
}
