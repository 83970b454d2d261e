package ffpostgres

import (
	"context"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"
)

// ChangeChannel returns the LISTEN/NOTIFY channel of s.
func ChangeChannel(s *Store) string { return s.channel }

// NotifyGap is the least time between two NOTIFYs of one process.
const NotifyGap = notifyGap

// SetNotifyInTx makes units send pg_notify inside their own transaction.
func SetNotifyInTx(o *Options, on bool) { o.notifyInTx = on }

// SetListenIdle sets how long the change listener waits for a notification before it
// checks its connection.
func SetListenIdle(o *Options, d time.Duration) { o.listenIdle = d }

// Upkeep runs one round of s's table upkeep now.
func Upkeep(ctx context.Context, s *Store) error { return s.upkeep(ctx) }

// UpkeepLockKey is the advisory lock that elects the process doing s's upkeep.
func UpkeepLockKey(s *Store) int64 { return upkeepLockKey(s.schema) }

// MigrateTo brings schema to version, which may be older than SchemaVersion.
func MigrateTo(ctx context.Context, pool *pgxpool.Pool, schema string, version int) error {
	return migrateTo(ctx, pool, schema, version)
}

// MigrateLockKey is the advisory lock that migrations of schema take.
func MigrateLockKey(schema string) int64 { return advisoryKey(schema, "migrate") }
