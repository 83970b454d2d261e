package ffsqlite

import (
	"context"
	"database/sql"
	"errors"
	"fmt"

	"github.com/flowfabric/flowfabric/fftype"
)

// migrations is the schema, one entry per version: migrations[i] takes a file from
// version i to version i+1. Entries are forward-only and never edited once released;
// a change is a new entry. The version a file is at is stored in meta.schema_version.
var migrations = [][]string{ //nolint:gochecknoglobals // the embedded schema, read-only
	// 1: records, queues with their directory, event logs, meta.
	{
		`CREATE TABLE meta (
			name  TEXT PRIMARY KEY,
			value INTEGER NOT NULL
		) WITHOUT ROWID`,
		// Values are often a few KiB, larger than a WITHOUT ROWID row should be, so
		// records keep a rowid and the primary key is a separate index.
		`CREATE TABLE records (
			shard INTEGER NOT NULL,
			key   TEXT    NOT NULL,
			value BLOB    NOT NULL,
			PRIMARY KEY (shard, key)
		)`,
		`CREATE TABLE queue_items (
			shard  INTEGER NOT NULL,
			queue  TEXT    NOT NULL,
			member TEXT    NOT NULL,
			score  INTEGER NOT NULL,
			PRIMARY KEY (shard, queue, member)
		) WITHOUT ROWID`,
		`CREATE INDEX queue_items_order ON queue_items (shard, queue, score, member)`,
		// The queue directory: one row per queue that may be non-empty, so QueueHeads
		// reads the names matching a prefix instead of every item. A row is added with
		// the queue's first item and removed by the unit that empties the queue.
		`CREATE TABLE queues (
			queue TEXT    NOT NULL,
			shard INTEGER NOT NULL,
			PRIMARY KEY (queue, shard)
		) WITHOUT ROWID`,
		// The last Seq handed out per shard, so sequences stay gap-free even once old
		// events are trimmed.
		`CREATE TABLE event_seqs (
			shard    INTEGER PRIMARY KEY,
			last_seq INTEGER NOT NULL
		)`,
		`CREATE TABLE events (
			shard        INTEGER NOT NULL,
			seq          INTEGER NOT NULL,
			version      INTEGER NOT NULL,
			type         TEXT    NOT NULL,
			time_unix    INTEGER NOT NULL,
			time_nsec    INTEGER NOT NULL,
			execution_id TEXT    NOT NULL,
			namespace    TEXT    NOT NULL,
			lane         TEXT    NOT NULL,
			data         BLOB,
			PRIMARY KEY (shard, seq)
		) WITHOUT ROWID`,
	},
	// 2: the trim point of each shard's event log: events up to it were deleted, and a
	// reader asking for them gets cursor_expired.
	{
		`ALTER TABLE event_seqs ADD COLUMN trimmed INTEGER NOT NULL DEFAULT 0`,
	},
	// 3: events name the flow their execution belongs to.
	{
		`ALTER TABLE events ADD COLUMN flow_id TEXT NOT NULL DEFAULT ''`,
	},
}

// SchemaVersion is the schema version this binary writes and the newest it can open.
const SchemaVersion = 3

// applicationID is the id in the header of every store's file (PRAGMA application_id,
// "FFSQ"), by which Open tells a store from an SQLite file of another application.
const applicationID = 0x46465351

const (
	metaSchemaVersion = "schema_version"
	metaShards        = "shards"
)

// migrate brings the file behind conn to SchemaVersion inside one write transaction and
// returns the shard count stored in it, creating the store with shards when the file is
// new and giving the file applicationID if it lacks it. It refuses files written by a
// newer binary, files of other applications, and an explicit shard count that differs
// from the stored one.
func migrate(ctx context.Context, conn *sql.Conn, shards int) (n int, err error) {
	if len(migrations) != SchemaVersion {
		panic("ffsqlite: SchemaVersion does not match the migration list")
	}
	if _, err := conn.ExecContext(ctx, "BEGIN IMMEDIATE"); err != nil {
		return 0, translate(err, "begin migration")
	}
	defer func() {
		if err != nil {
			_, _ = conn.ExecContext(context.WithoutCancel(ctx), "ROLLBACK")
		}
	}()

	owner, err := identify(ctx, conn)
	if err != nil {
		return 0, err
	}
	version := 0
	if owner != ownerNone {
		if version, err = readMeta(ctx, conn, metaSchemaVersion); err != nil {
			return 0, err
		}
	}
	if version > SchemaVersion {
		return 0, errSchemaTooNew(version)
	}
	if owner != ownerStore {
		if _, err := conn.ExecContext(ctx, fmt.Sprintf("PRAGMA application_id = %d", applicationID)); err != nil {
			return 0, translate(err, "set application id")
		}
	}
	for v := version; v < SchemaVersion; v++ {
		for _, stmt := range migrations[v] {
			if _, err := conn.ExecContext(ctx, stmt); err != nil {
				return 0, translate(fmt.Errorf("migration %d: %w", v+1, err), "migrate")
			}
		}
		if _, err := conn.ExecContext(ctx,
			`INSERT INTO meta (name, value) VALUES (?1, ?2) ON CONFLICT (name) DO UPDATE SET value = ?2`,
			metaSchemaVersion, v+1); err != nil {
			return 0, translate(err, "migrate")
		}
	}

	if version == 0 {
		if shards == 0 {
			shards = DefaultShards
		}
		if _, err := conn.ExecContext(ctx, `INSERT INTO meta (name, value) VALUES (?, ?)`, metaShards, shards); err != nil {
			return 0, translate(err, "store shard count")
		}
		n = shards
	} else {
		if n, err = readMeta(ctx, conn, metaShards); err != nil {
			return 0, err
		}
		if shards != 0 && shards != n {
			return 0, fftype.Validationf(CodeShardCountMismatch,
				"the store was created with %d shards and cannot be opened with %d: omit Options.Shards or pass %d", n, shards, n)
		}
	}
	if _, err := conn.ExecContext(ctx, "COMMIT"); err != nil {
		return 0, translate(err, "commit migration")
	}
	return n, nil
}

// fileOwner is whose file an SQLite file is, as far as Open is concerned.
type fileOwner int

const (
	ownerNone     fileOwner = iota // no tables, no other application's id: a new store goes in it
	ownerStore                     // a store: the file carries applicationID
	ownerOldStore                  // a store created before stores carried applicationID
)

// sqlIdentify reads, in one statement and so from one snapshot, what identify needs: the
// file's application id, its table count, how many of the tables of schema version 1 it
// has, and how many of meta's two columns.
const sqlIdentify = `SELECT
	(SELECT application_id FROM pragma_application_id),
	(SELECT count(*) FROM sqlite_schema WHERE type = 'table'),
	(SELECT count(*) FROM sqlite_schema WHERE type = 'table'
		AND name IN ('meta', 'records', 'queue_items', 'queues', 'event_seqs', 'events')),
	(SELECT count(*) FROM pragma_table_info('meta') WHERE name IN ('name', 'value'))`

// identify tells whose file conn's is, reading only, and refuses with a validation error
// coded [CodeNotAStore] an SQLite file of another application. A file without an
// application id is taken for a store only if it holds every table of schema version 1
// and a meta table of the store's shape: a table named meta alone is too common a name.
func identify(ctx context.Context, conn *sql.Conn) (fileOwner, error) {
	var id, tables, storeTables, metaColumns int
	if err := conn.QueryRowContext(ctx, sqlIdentify).Scan(&id, &tables, &storeTables, &metaColumns); err != nil {
		return 0, translate(err, "read schema")
	}
	switch {
	case tables == 0 && (id == 0 || id == applicationID):
		return ownerNone, nil
	case id == applicationID:
		return ownerStore, nil
	case id == 0 && storeTables == 6 && metaColumns == 2: // all six tables listed, meta(name, value)
		return ownerOldStore, nil
	}
	return 0, fftype.Validationf(CodeNotAStore,
		"the file was not created by ffsqlite (its application id is %d, a store's is %d)", id, applicationID)
}

// errSchemaTooNew refuses a file of schema version, written by a newer binary.
func errSchemaTooNew(version int) error {
	e := fftype.NewError(fftype.KindUnavailable, CodeSchemaTooNew,
		"the file has schema version %d but this binary knows versions up to %d: upgrade the binary", version, SchemaVersion)
	e.Retryable = false
	return e
}

func readMeta(ctx context.Context, conn *sql.Conn, name string) (int, error) {
	var v int
	err := conn.QueryRowContext(ctx, `SELECT value FROM meta WHERE name = ?`, name).Scan(&v)
	if errors.Is(err, sql.ErrNoRows) {
		e := fftype.NewError(fftype.KindUnavailable, fftype.CodeCorruption, "meta.%s is missing", name)
		e.Retryable = false
		return 0, e
	}
	if err != nil {
		return 0, translate(err, "read meta")
	}
	return v, nil
}
