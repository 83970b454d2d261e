package ffpostgres_test

import (
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/stretchr/testify/require"

	"github.com/flowfabric/flowfabric/ffstore"
	"github.com/flowfabric/flowfabric/ffstore/ffpostgres"
	"github.com/flowfabric/flowfabric/fftype"
	"github.com/flowfabric/flowfabric/internal/testdb"
)

// TestMigrateEventsToBlocks fills a version 1 schema's event tables, numbered and waiting
// events, migrates it, and reads every event back through the store unchanged, numbered
// on after the old ones; the migrated log then takes new events and trims as usual.
func TestMigrateEventsToBlocks(t *testing.T) {
	t.Parallel()
	ctx := t.Context()
	url := testdb.SharedPostgres(t).URL("postgres")
	schema := testdb.Schema(t)
	pool, err := pgxpool.New(ctx, url)
	require.NoError(t, err)
	defer pool.Close()
	require.NoError(t, ffpostgres.MigrateTo(ctx, pool, schema, 1))

	// Shard 0 has two numbered events and two units' waiting ones; shard 1 one unit's.
	// Each statement is a transaction of its own, so a unit of its own.
	cols := `(shard, ord, version, type, time_unix, time_nsec, execution_id, flow_id, namespace, lane, data)`
	rawExec(t,
		fmt.Sprintf(`INSERT INTO %s.meta (name, value) VALUES ('shards', 2)`, schema),
		fmt.Sprintf(`INSERT INTO %s.event_logs (shard, last_seq) VALUES (0, 2), (1, 0)`, schema),
		fmt.Sprintf(`INSERT INTO %s.events (shard, seq, version, type, time_unix, time_nsec, execution_id, flow_id, namespace, lane, data) VALUES
			(0, 1, 1, 'created', 1700000000, 5, 'e1', '', 'ns', 'läne', NULL),
			(0, 2, 2, 'claimed', 1700000001, 999999999, 'e1', 'f1', 'ns', 'läne', '\x7b7d')`, schema),
		fmt.Sprintf(`INSERT INTO %s.event_pending %s VALUES
			(0, 2, 1, 'completed', 1700000003, 0, 'e1', '', 'ns', 'l', ''),
			(0, 1, 1, 'renewed', 1700000002, 0, 'e1', '', 'ns', 'l', NULL)`, schema, cols),
		fmt.Sprintf(`INSERT INTO %s.event_pending %s VALUES (0, 1, 1, 'created', 1700000004, 0, 'e2', '', '', 'l', NULL)`, schema, cols),
		fmt.Sprintf(`INSERT INTO %s.event_pending %s VALUES (1, 1, 1, 'created', -5, 7, 'e3', '', '', 'l', '\x00')`, schema, cols),
	)

	s, err := ffpostgres.Open(ctx, url, &ffpostgres.Options{Schema: schema, Migrate: true})
	require.NoError(t, err)
	defer s.Close()
	require.Equal(t, 2, s.Shards())

	ev := func(shard int, seq uint64, version int, typ string, sec int64, nsec int, exec, flow, ns, lane string, data []byte) fftype.Event {
		return fftype.Event{Shard: shard, Seq: seq, Version: version, Type: fftype.EventType(typ), Time: time.Unix(sec, int64(nsec)).UTC(),
			ExecutionID: fftype.ExecutionID(exec), FlowID: flow, Namespace: ns, Lane: lane, Data: data}
	}
	want0 := []fftype.Event{
		ev(0, 1, 1, "created", 1700000000, 5, "e1", "", "ns", "läne", nil),
		ev(0, 2, 2, "claimed", 1700000001, 999999999, "e1", "f1", "ns", "läne", []byte("{}")),
		ev(0, 3, 1, "renewed", 1700000002, 0, "e1", "", "ns", "l", nil),
		ev(0, 4, 1, "completed", 1700000003, 0, "e1", "", "ns", "l", []byte{}),
		ev(0, 5, 1, "created", 1700000004, 0, "e2", "", "", "l", nil),
	}
	got, err := s.ReadEvents(ctx, 0, 0, 100)
	require.NoError(t, err)
	require.Equal(t, want0, got)
	got, err = s.ReadEvents(ctx, 1, 0, 100)
	require.NoError(t, err)
	require.Equal(t, []fftype.Event{ev(1, 1, 1, "created", -5, 7, "e3", "", "", "l", []byte{0})}, got)

	// Reads starting and ending inside a unit's block.
	got, err = s.ReadEvents(ctx, 0, 2, 1)
	require.NoError(t, err)
	require.Equal(t, want0[2:3], got)
	got, err = s.ReadEvents(ctx, 0, 3, 2)
	require.NoError(t, err)
	require.Equal(t, want0[3:5], got)

	// The migrated log goes on: a new unit's events follow, and trimming works.
	require.NoError(t, s.Update(ctx, 0, func(tx ffstore.Tx) error {
		tx.AppendEvent(ev(0, 0, 1, "created", 1700000005, 0, "e4", "", "", "l", nil))
		tx.AppendEvent(ev(0, 0, 1, "claimed", 1700000006, 0, "e4", "", "", "l", nil))
		return nil
	}))
	require.NoError(t, s.TrimEvents(ctx, 0, 3))
	_, err = s.ReadEvents(ctx, 0, 2, 10)
	require.ErrorIs(t, err, fftype.ErrCursorExpired)
	got, err = s.ReadEvents(ctx, 0, 3, 10)
	require.NoError(t, err)
	require.Len(t, got, 4)
	require.Equal(t, want0[3:5], got[:2])
	require.Equal(t, []uint64{6, 7}, []uint64{got[2].Seq, got[3].Seq})
	require.Equal(t, fftype.ExecutionID("e4"), got[3].ExecutionID)
}

// TestMigrateIntoASchemaMadeForTheRole: a role that owns a schema a DBA made for it, but
// may not create schemas in the database (Postgres 15's default), migrates it: nothing
// asks to create what exists.
func TestMigrateIntoASchemaMadeForTheRole(t *testing.T) {
	t.Parallel()
	ctx := t.Context()
	dbURL, err := testdb.SharedPostgres(t).CreateDatabase(ctx)
	require.NoError(t, err)
	schema := testdb.Schema(t)
	role := strings.Replace(schema, "t_", "r_", 1)
	rawExec(t, "CREATE ROLE "+role+" LOGIN")
	conn, err := pgx.Connect(ctx, dbURL)
	require.NoError(t, err)
	_, err = conn.Exec(ctx, "CREATE SCHEMA "+schema+" AUTHORIZATION "+role)
	require.NoError(t, err)
	require.NoError(t, conn.Close(ctx))

	roleURL := strings.Replace(dbURL, "postgres://postgres@", "postgres://"+role+"@", 1)
	s, err := ffpostgres.Open(ctx, roleURL, &ffpostgres.Options{Schema: schema, Migrate: true, Shards: 2, PoolSize: 2})
	require.NoError(t, err)
	defer s.Close()
	require.NoError(t, s.Update(ctx, 0, func(tx ffstore.Tx) error { tx.Put("k", []byte("v")); return nil }))
}
