package ffpostgres_test

import (
	"crypto/sha256"
	"encoding/hex"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/stretchr/testify/require"

	"github.com/flowfabric/flowfabric/ffstore"
	"github.com/flowfabric/flowfabric/ffstore/ffpostgres"
	"github.com/flowfabric/flowfabric/ffstore/ffstoretest"
	"github.com/flowfabric/flowfabric/fftype"
	"github.com/flowfabric/flowfabric/internal/testdb"
)

// openStore opens a store on a fresh schema of the shared server and closes it at cleanup.
func openStore(t *testing.T, opts *ffpostgres.Options) *ffpostgres.Store {
	t.Helper()
	o := ffpostgres.Options{Schema: testdb.Schema(t), Migrate: true, PoolSize: 4}
	if opts != nil {
		o.Shards = opts.Shards
		if opts.Schema != "" {
			o.Schema = opts.Schema
		}
		if opts.PoolSize != 0 {
			o.PoolSize = opts.PoolSize
		}
	}
	s, err := ffpostgres.Open(t.Context(), testdb.SharedPostgres(t).URL("postgres"), &o)
	require.NoError(t, err)
	t.Cleanup(func() { _ = s.Close() })
	return s
}

func TestConformance(t *testing.T) {
	t.Parallel()
	ffstoretest.Exercise(t, func(t *testing.T) ffstore.Store { return openStore(t, &ffpostgres.Options{Shards: 3}) })
}

// TestConformanceUserPool runs the suite on stores on the caller's pool ([ffpostgres.New])
// with a statement timeout, which their transactions and batches set for themselves.
func TestConformanceUserPool(t *testing.T) {
	t.Parallel()
	ffstoretest.Exercise(t, func(t *testing.T) ffstore.Store {
		pool, err := pgxpool.New(t.Context(), testdb.SharedPostgres(t).URL("postgres")+"&pool_max_conns=4")
		require.NoError(t, err)
		t.Cleanup(pool.Close)
		s, err := ffpostgres.New(pool, &ffpostgres.Options{Schema: testdb.Schema(t), Migrate: true, Shards: 3, StatementTimeout: 30 * time.Second})
		require.NoError(t, err)
		t.Cleanup(func() { _ = s.Close() })
		return s
	})
}

// TestNameTooLongToIndex checks that a record key or queue name over Postgres's index row
// limit is refused as invalid input naming the index, not as a payload too large.
func TestNameTooLongToIndex(t *testing.T) {
	t.Parallel()
	s := openStore(t, nil)
	var long strings.Builder // incompressible: Postgres compresses index rows
	for i := range 64 {
		sum := sha256.Sum256([]byte{byte(i)})
		long.WriteString(hex.EncodeToString(sum[:]))
	}
	for name, write := range map[string]func(tx ffstore.Tx){
		"Key":   func(tx ffstore.Tx) { tx.Put("k:"+long.String(), []byte("v")) },
		"Queue": func(tx ffstore.Tx) { tx.QueueAdd("q"+long.String(), "m", 1) },
	} {
		err := s.Update(t.Context(), 0, func(tx ffstore.Tx) error { write(tx); return nil })
		require.ErrorIs(t, err, &fftype.Error{Kind: fftype.KindValidation, Code: fftype.CodeInvalidInput}, name)
		require.ErrorContains(t, err, "a record key or queue name is too long for index", name)
	}
}
