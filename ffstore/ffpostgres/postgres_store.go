// Package ffpostgres is the Postgres store: many processes, on many machines, share one
// database, and every engine loop is safe on every one of them.
//
// # Schema
//
// Everything lives in one Postgres schema ([DefaultSchema], or Options.Schema), so several
// stores can share a database. Tables are not partitioned; the shard is a column leading
// every primary key:
//
//	records(shard, key, value bytea)                  every engine record
//	queue_items(shard, queue, member, score bigint)   ready and due queues; index (shard, queue, score, member)
//	queues(queue, shard)                              the queue directory, for QueueHeads
//	event_logs(shard, last_seq, trimmed)              per-shard event counter and trim point
//	event_pending(shard, xid, n, events bytea, ord)   each unit's committed events, not numbered yet
//	event_blocks(shard, first_seq, last_seq, events)  the event logs, a unit's events a block
//	meta(name, value)                                 schema version and shard count
//
// The schema is versioned and migrated forward only, in one transaction under an advisory
// lock ([Migrate]); [Open] and [New] migrate when Options.Migrate is set and otherwise
// refuse an older schema. A schema newer than the binary is always refused.
//
// # Units
//
// [Store.Update] runs a unit as one READ COMMITTED transaction on one pooled connection,
// whatever the database's default_transaction_isolation (the store's other transactions
// that write rely on that level too, and ask for it as well). Every record the unit reads
// with Get, Prefetch or PopDueFetch is locked (SELECT … FOR UPDATE; Prefetch fetches all
// its keys in one round trip, locking in key order), so units on the same execution run
// one after the other and what a unit read is still true when it commits. A record read
// as missing cannot be locked; if the unit then creates it, it is inserted without
// upsert, so a concurrent unit that created it first makes this one fail with a store
// conflict rather than be overwritten. PopDue is one statement, DELETE …
// WHERE … IN (SELECT … ORDER BY score, member LIMIT n FOR UPDATE SKIP LOCKED) RETURNING,
// so claimers never wait for each other and never take an item twice; PopDueFetch reads
// and locks the popped members' records in the same statement.
//
// Range inside a unit reads the committed queue without locking what it returns. Locking
// (FOR UPDATE) would deadlock against SKIP LOCKED pops: two claimers each popping the head
// of a queue and then ranging past it wait for each other's popped rows. The engine uses
// Range inside a unit only to learn the queue's next head, a hint it re-checks (PopDue
// reads that head in the same statement, so the Range costs no round trip); Views read one
// REPEATABLE READ snapshot.
//
// BEGIN travels with a unit's first read. All writes are buffered, collapsed to one value
// per key, and sent at commit as one statement (set-based parts over arrays, as
// data-modifying CTEs) pipelined with COMMIT: a unit costs one round trip per read plus
// one to commit. Deadlocks and serialization failures (SQLSTATE 40P01, 40001) and the
// unique violation above are returned as errors matching [fftype.ErrStoreConflict]; the
// engine retries those units. Every other pgx error is translated once, here, into an
// *fftype.Error; an unreachable database gives a retryable unavailable error coded
// store_unavailable, and a value the database refuses (SQLSTATE class 22, data
// exceptions) a validation error coded invalid_input. Keys, queue names and members are
// text columns: one with a NUL byte or invalid UTF-8 is refused with that validation
// error before any round trip, and fails its unit, which then writes nothing.
//
// # Events
//
// A unit appends its events to event_pending as one row, a blob of them all tagged with
// its transaction id (pg_current_xact_id()), in a statement after its write statement; it
// touches no shared row, so units on one shard commit in parallel. Events get their Seq
// from a sequencer that ReadEvents, EventBounds and TrimEvents run, in any process,
// whenever committed events wait: in one transaction it locks the shard's event_logs row
// (last_seq, the last number handed out) and then, in a new statement whose snapshot sees
// every unit committed before the lock was granted, moves each waiting unit's blob, in the
// order the units inserted them, into an event_blocks row numbered from last_seq+1 on, and
// raises last_seq. Readers decode the blocks; trimming deletes the blocks wholly at or
// below the trim point. The lock is held until the sequencer commits, so sequencers take
// turns and each block of numbers becomes visible whole and after the previous one: Seqs
// are gap-free (a rolled-back unit's events are never visible, so never numbered), a
// reader never sees Seq n+1 before Seq n, and a unit committed before a read is numbered
// by it. (A unit committing while a sequencer runs is numbered by the next one, with
// higher numbers, and never skipped: numbers are given at sequencing time, not at insert
// time, which is the hazard of a plain sequence column.) A unit inserts its events last,
// after every lock it waited for, taking the next value of a sequence, and units are
// numbered in that order: a unit that read what another wrote, or waited for its lock, is
// numbered after it, as are a process's successive units. (Transaction ids would not do: a
// unit gets its id at its first lock or write, so one that then waits for another's lock
// can hold the smaller id.) TrimEvents raises the shard's trim point (never past the last
// Seq) and deletes the events up to it; ReadEvents below the trim point returns
// cursor_expired.
//
// # Change notifications
//
// [Store.Changes] wakes readers after this process's commits at once, and after other
// processes' commits through LISTEN on one dedicated connection (not from the pool). Each
// committing unit that changed something asks for a NOTIFY; the store coalesces those into
// one NOTIFY in flight per process, at least 5 ms after the one before, so a process that
// was quiet notifies right after its commit and a busy one at most 200 times a second. A
// NOTIFY that fails to send is retried with backoff until it is sent or the store closes;
// Close waits for the running units and then lets the NOTIFY for the last commits go out.
// (Sending NOTIFY
// inside every committing transaction would take Postgres's database-wide notify lock in
// each of them and serialise all commits behind one another's WAL flush.) The listener
// reconnects after its connection drops and then wakes every reader, so readers catch up on
// what they missed.
//
// # Upkeep
//
// Every two seconds one process (under an advisory lock) reads the store's table counters
// and runs VACUUM (with SKIP_LOCKED) on the tables that changed by more than 1,000 rows
// plus a fifth of their size since they were last vacuumed, and ANALYZE on those that
// changed by more than 1,000 rows plus half their size since they were last analyzed.
// Autovacuum looks at a database about once a minute; until then a queue that grew from
// empty is planned as if it were still empty, and claims ran several times slower.
// Postgres skips, with a warning, the tables of a role that does not own them.
//
// # Other connections
//
// [Store.Now] reads the server clock on a connection of its own (replaced, and the read
// retried once, when a read finds that the server ended it), because the engine reads
// the clock from inside units: with every pooled connection held by a unit, a clock read
// from the pool would wait forever. Concurrent QueueHeads calls with the same prefixes
// share one query (one that started after each call), so many claimers polling one lane
// cost one query at a time.
package ffpostgres

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math"
	"net"
	"net/url"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"
	"unicode/utf8"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/flowfabric/flowfabric/ffstore"
	"github.com/flowfabric/flowfabric/fftype"
)

// Defaults for [Options].
const (
	DefaultShards           = 16
	DefaultPoolSize         = 16
	DefaultStatementTimeout = 30 * time.Second
	DefaultConnectTimeout   = 10 * time.Second
)

// defaultPlanCacheMode is the plan_cache_mode of [Open]'s connections unless the
// connection string sets one. Every statement of the store has one good plan whatever its
// parameters: primary-key lookups, a walk of a queue's index in order, joins with the
// arrays a unit sends. But under Postgres's default (auto), the statements taking arrays
// are planned afresh on every execution, because the generic plan's estimate for an array
// of unknown length looks worse than the custom plans it has seen; on the drain benchmark
// that planning cost about a tenth of the server's CPU.
const defaultPlanCacheMode = "force_generic_plan"

// Options configures [Open] and [New]. The zero value, or nil, gives the defaults.
type Options struct {
	// Shards is the shard count given to a new schema, 1 to [fftype.MaxShards]; 0 means
	// [DefaultShards] for a new schema and the stored count for an existing one. It is
	// fixed when the schema is first used: a different non-zero count fails with a
	// validation error coded [CodeShardCountMismatch].
	Shards int

	// Schema is the Postgres schema holding the store's tables; "" means
	// [DefaultSchema]. Lowercase letters, digits and underscores.
	Schema string

	// Migrate applies pending migrations when the store opens. When false, a missing or
	// older schema is refused with an unavailable error coded [CodeSchemaTooOld] that
	// says to run [Migrate].
	Migrate bool

	// StatementTimeout bounds every statement the store runs on the server
	// (statement_timeout), except the VACUUMs of its upkeep. With [Open], 0 means
	// [DefaultStatementTimeout], set on each connection. With [New], 0 leaves the pool's
	// setting alone; any other value is set by each transaction and batch of the store for
	// itself (set_config local to it), so the caller's connections keep their own setting
	// (which alone bounds the first preparation of a statement on a connection, a round
	// trip of its own). Negative means none.
	StatementTimeout time.Duration

	// PoolSize is the most connections [Open]'s pool opens (the store opens two more of
	// its own, for the change listener and the clock); 0 means the connection string's pool_max_conns if it sets one, else
	// [DefaultPoolSize]. Ignored by [New]: the caller sized the pool.
	PoolSize int

	// ConnectTimeout bounds each attempt to connect, and the check that the database is
	// reachable at open; 0 means, with [Open] and [MigrateURL], the connection string's
	// connect_timeout if it sets one, and otherwise [DefaultConnectTimeout].
	ConnectTimeout time.Duration

	// Logger receives the store's rare log lines (listener reconnects). nil discards them.
	Logger *slog.Logger

	// notifyInTx sends pg_notify inside every committing unit instead of coalescing
	// NOTIFYs after commit; for the benchmark that compares the two.
	notifyInTx bool

	// listenIdle replaces listenIdle, for tests.
	listenIdle time.Duration
}

func (o *Options) withDefaults() (Options, error) {
	var out Options
	if o != nil {
		out = *o
	}
	if out.Shards < 0 || out.Shards > fftype.MaxShards {
		return out, fftype.Validationf(fftype.CodeInvalidInput, "ffpostgres: Options.Shards is %d, want 0 (default) or 1 to %d", out.Shards, fftype.MaxShards)
	}
	if out.Schema == "" {
		out.Schema = DefaultSchema
	}
	if err := checkSchemaName(out.Schema); err != nil {
		return out, err
	}
	if out.PoolSize < 0 || out.PoolSize > math.MaxInt32 || out.ConnectTimeout < 0 {
		return out, fftype.Validationf(fftype.CodeInvalidInput, "ffpostgres: Options.PoolSize and ConnectTimeout must not be negative")
	}
	if out.PoolSize == 0 {
		out.PoolSize = DefaultPoolSize
	}
	if out.ConnectTimeout == 0 {
		out.ConnectTimeout = DefaultConnectTimeout
	}
	if out.listenIdle == 0 {
		out.listenIdle = listenIdle
	}
	if out.Logger == nil {
		out.Logger = slog.New(slog.DiscardHandler)
	}
	return out, nil
}

// Store is an [ffstore.Store] on a Postgres database. All methods are safe for concurrent
// use. Create one with [Open] or [New] and Close it when done.
type Store struct {
	pool       *pgxpool.Pool
	ownPool    bool
	opts       Options
	schema     string
	shards     int
	sql        *statements
	timeout    string // New's statement_timeout in ms, set by each transaction and batch; "" for none to set
	channel    string // the LISTEN/NOTIFY channel
	notifyInTx bool
	log        *slog.Logger

	heads    headsFlight
	clock    storeClock
	changes  ffstore.Notifier
	notifyCh chan struct{} // coalesced requests for a NOTIFY
	// notifyDrain is closed by Close once no unit can commit any more: the notifier then
	// sends the NOTIFY still due, if any, and returns.
	notifyDrain chan struct{}
	notifyCtx   context.Context    // bounds the notifier's sends; outlives stopCtx
	notifyStop  context.CancelFunc // ends notifyCtx: Close's bound on the last NOTIFY
	listenMu    sync.Mutex
	listener    bool // the listener goroutine runs

	stop    context.CancelFunc // stops the goroutines but the notifier
	stopCtx context.Context
	wg      sync.WaitGroup

	unitsMu   sync.RWMutex   // held shared while a unit registers, and by Close to set closed
	units     sync.WaitGroup // the running units, which Close waits for
	closed    atomic.Bool
	conflicts atomic.Int64 // injected conflicts still to deliver
}

var (
	_ ffstore.Store          = (*Store)(nil)
	_ ffstore.ChangeNotifier = (*Store)(nil)
	_ ffstore.UnitMerger     = (*Store)(nil)
)

// ParseURL splits a store URL into the connection string for pgx and the store's options.
// It accepts postgres:// and postgresql:// URLs in libpq's syntax (pgx's own parameters
// pass through, and where the Options leave PoolSize or ConnectTimeout at 0, pgx's
// pool_max_conns and connect_timeout stand in for them) plus these parameters of the
// store, each mapping to the [Options] field of the same name:
//
//	postgres://user:pass@host:5432/db?schema=flowfabric&shards=16&migrate=true&statement_timeout=30s&pool_size=16
//
// A query that does not parse and a '#' (a fragment, even an empty one) are refused with a
// validation error, and so is an '@' in the path or a parameter's name: the sign of a
// password holding an unescaped '/' or '?'. Errors quote nothing of the user name or
// password.
func ParseURL(rawURL string) (connString string, opts *Options, err error) {
	bad := func(format string, args ...any) (string, *Options, error) {
		return "", nil, fftype.Validationf(fftype.CodeInvalidInput, "ffpostgres: store URL: "+format, args...)
	}
	u, err := url.Parse(rawURL)
	if err != nil {
		// url.Parse's message quotes what it could not read, which is most often a
		// password cut short by one of its characters.
		return bad("it does not parse as a URL; %s", ffstore.EscapeUserinfoHint)
	}
	if u.Scheme != "postgres" && u.Scheme != "postgresql" {
		return bad("scheme is %q, want postgres or postgresql", u.Scheme)
	}
	if userinfoSpilled(u) {
		return bad("an '@' follows the host; %s", ffstore.EscapeUserinfoHint)
	}
	q, err := ffstore.URLQuery(rawURL)
	if err != nil {
		return bad("%v", err)
	}
	opts = &Options{}
	for name, values := range q {
		v := values[len(values)-1]
		switch name {
		case "schema":
			opts.Schema = v
		case "shards", "pool_size":
			n, err := strconv.Atoi(v)
			if err != nil || n < 0 {
				return bad("parameter %s=%q is not a non-negative integer", name, v)
			}
			if name == "shards" {
				opts.Shards = n
			} else {
				opts.PoolSize = n
			}
		case "migrate":
			b, err := strconv.ParseBool(v)
			if err != nil {
				return bad("parameter migrate=%q is not a boolean", v)
			}
			opts.Migrate = b
		case "statement_timeout":
			d, err := time.ParseDuration(v)
			if err != nil {
				return bad("parameter statement_timeout=%q is not a duration such as 30s", v)
			}
			opts.StatementTimeout = d
		default:
			continue
		}
		q.Del(name)
	}
	u.RawQuery = q.Encode()
	if _, err := opts.withDefaults(); err != nil {
		return "", nil, err
	}
	return u.String(), opts, nil
}

// userinfoSpilled reports whether u bears the mark of a user name or password cut short
// by an unescaped '/' or '?': the '@' that ends it, in the path or a parameter's name
// (where no '@' belongs). The rest of the password would then be read as the database or
// a parameter, which the server's errors repeat.
func userinfoSpilled(u *url.URL) bool {
	if strings.Contains(u.EscapedPath(), "@") {
		return true
	}
	for pair := range strings.SplitSeq(u.RawQuery, "&") {
		if name, _, _ := strings.Cut(pair, "="); strings.Contains(name, "@") {
			return true
		}
	}
	return false
}

// redact drops a URL (which may hold a password) from a url.Parse error.
func redact(err error) error {
	var ue *url.Error
	if errors.As(err, &ue) {
		return ue.Err
	}
	return err
}

// parseConfig builds the pool configuration for Open from a connection string and the
// options given (nil for defaults).
func parseConfig(connString string, opts *Options) (*pgxpool.Config, Options, error) {
	base := &Options{}
	if scheme, _, ok := strings.Cut(connString, "://"); ok && (strings.EqualFold(scheme, "postgres") || strings.EqualFold(scheme, "postgresql")) {
		// A URL: schemes are case-insensitive (RFC 3986), and "POSTGRES://…" read as
		// key=value pairs would quietly mean the local server's default database.
		cs, fromURL, err := ParseURL(connString)
		if err != nil {
			return nil, Options{}, err
		}
		connString, base = cs, fromURL
	}
	if opts != nil {
		merged := *opts
		if merged.Shards == 0 {
			merged.Shards = base.Shards
		}
		if merged.Schema == "" {
			merged.Schema = base.Schema
		}
		merged.Migrate = merged.Migrate || base.Migrate
		if merged.StatementTimeout == 0 {
			merged.StatementTimeout = base.StatementTimeout
		}
		if merged.PoolSize == 0 {
			merged.PoolSize = base.PoolSize
		}
		base = &merged
	}
	cfg, err := pgxpool.ParseConfig(connString)
	if err != nil {
		return nil, Options{}, fftype.Validationf(fftype.CodeInvalidInput, "ffpostgres: connection string: %v", redact(err))
	}
	// pgx's own limits in the connection string apply where the options leave them unset.
	if base.ConnectTimeout == 0 {
		base.ConnectTimeout = cfg.ConnConfig.ConnectTimeout
	}
	if base.PoolSize == 0 && setsPoolMaxConns(connString) {
		base.PoolSize = int(cfg.MaxConns)
	}
	o, err := base.withDefaults()
	if err != nil {
		return nil, o, err
	}
	cfg.MaxConns = int32(o.PoolSize) //nolint:gosec // checked in withDefaults
	cfg.ConnConfig.ConnectTimeout = o.ConnectTimeout
	timeout := o.StatementTimeout
	if timeout == 0 {
		timeout = DefaultStatementTimeout
	}
	if timeout > 0 {
		cfg.ConnConfig.RuntimeParams["statement_timeout"] = strconv.FormatInt(timeout.Milliseconds(), 10)
	}
	if cfg.ConnConfig.ValidateConnect == nil {
		// The store writes: a connection to a standby (a host list that names one, a
		// failover in progress) is refused at once, and the next host tried. A stricter
		// target_session_attrs (primary), from the string or PGTARGETSESSIONATTRS, stays.
		cfg.ConnConfig.ValidateConnect = pgconn.ValidateConnectTargetSessionAttrsReadWrite
	}
	if _, ok := cfg.ConnConfig.RuntimeParams["application_name"]; !ok {
		cfg.ConnConfig.RuntimeParams["application_name"] = "flowfabric"
	}
	if _, ok := cfg.ConnConfig.RuntimeParams["plan_cache_mode"]; !ok {
		cfg.ConnConfig.RuntimeParams["plan_cache_mode"] = defaultPlanCacheMode
	}
	return cfg, o, nil
}

// setsPoolMaxConns reports whether connString sets pgxpool's pool_max_conns: when it does
// not, pgxpool.ParseConfig fills in a default of its own, which Open does not take.
func setsPoolMaxConns(connString string) bool {
	cfg, err := pgconn.ParseConfig(connString)
	if err != nil {
		return false
	}
	_, ok := cfg.RuntimeParams["pool_max_conns"]
	return ok
}

// Open connects to the database named by connString (a postgres:// or postgresql:// URL,
// or a libpq key=value string; see [ParseURL] for the store's URL parameters, which
// opts's non-zero fields override), checks or migrates the schema, and returns a store
// that owns its connection pool. opts may be nil.
//
// Open returns a validation error for bad options or a connection string it cannot parse
// and for a shard count that differs from the schema's (code [CodeShardCountMismatch]);
// an unavailable error coded store_unavailable, retryable, when the database cannot be
// reached within the connect timeout, and not retryable, saying why, when the server
// refuses it (no such database or role, a wrong password, a missing privilege); and
// unavailable errors coded [CodeSchemaTooOld] or [CodeSchemaTooNew] for a schema it cannot
// use.
func Open(ctx context.Context, connString string, opts *Options) (*Store, error) {
	cfg, o, err := parseConfig(connString, opts)
	if err != nil {
		return nil, err
	}
	pool, err := pgxpool.NewWithConfig(ctx, cfg)
	if err != nil {
		return nil, translate(ctx, err, "connect")
	}
	pingCtx, cancel := context.WithTimeout(ctx, o.ConnectTimeout)
	err = pool.Ping(pingCtx)
	cancel()
	if err != nil {
		pool.Close()
		return nil, connectError(ctx, err, cfg.ConnConfig, o.ConnectTimeout)
	}
	s, err := newStore(ctx, pool, o, true)
	if err != nil {
		pool.Close()
		return nil, err
	}
	return s, nil
}

// connectError translates the failure of Open's first connect. When the server did not
// answer, the message names its address and why: the connect timeout if that ran out, else
// the dial error if there was one (it names no password).
func connectError(ctx context.Context, err error, cc *pgx.ConnConfig, timeout time.Duration) error {
	timedOut := errors.Is(err, context.DeadlineExceeded)
	err = translate(ctx, err, "connect")
	var fe *fftype.Error
	var refused *pgconn.PgError // the server answered: translate said why it refused
	if !errors.As(err, &fe) || fe.Kind != fftype.KindUnavailable || errors.As(err, &refused) {
		return err
	}
	fe.Message = "ffpostgres: cannot reach the database at " + net.JoinHostPort(cc.Host, strconv.Itoa(int(cc.Port)))
	var dial *net.OpError
	switch {
	case timedOut:
		fe.Message += " within " + timeout.String()
	case errors.Is(err, pgconn.ErrReadOnlyConnection):
		fe.Message = "ffpostgres: the database at " + net.JoinHostPort(cc.Host, strconv.Itoa(int(cc.Port))) +
			" is read-only (a standby?): the store needs one that accepts writes"
	case errors.As(err, &dial):
		fe.Message += ": " + dial.Err.Error()
	}
	return err
}

// New returns a store on a pool the caller owns (and closes, after the store). It checks
// or migrates the schema, bounded by opts.ConnectTimeout plus the statement timeout.
// opts may be nil. Errors are as for [Open]. [Open]'s connections keep the first plan of
// each statement (plan_cache_mode=force_generic_plan, unless the connection string sets
// plan_cache_mode), which saves Postgres re-planning the statements that take arrays; set
// it in the pool's RuntimeParams for the same.
func New(pool *pgxpool.Pool, opts *Options) (*Store, error) {
	if pool == nil {
		return nil, fftype.Validationf(fftype.CodeInvalidInput, "ffpostgres: nil pool")
	}
	o, err := opts.withDefaults()
	if err != nil {
		return nil, err
	}
	ctx, cancel := ffstore.WithStoreTimeout(context.Background(), o.callBound())
	defer cancel()
	return newStore(ctx, pool, o, false)
}

func newStore(ctx context.Context, pool *pgxpool.Pool, o Options, own bool) (*Store, error) {
	if o.Migrate {
		if err := Migrate(ctx, pool, o.Schema); err != nil {
			return nil, err
		}
	} else {
		v, err := schemaVersion(ctx, pool, o.Schema)
		if err != nil {
			return nil, err
		}
		if v != SchemaVersion {
			return nil, schemaError(o.Schema, v)
		}
	}
	qs := pgx.Identifier{o.Schema}.Sanitize()
	shards, err := initShards(ctx, pool, qs, o.Shards)
	if err != nil {
		return nil, err
	}
	stopCtx, stop := context.WithCancel(context.Background())
	notifyCtx, notifyStop := context.WithCancel(context.Background())
	s := &Store{
		pool:        pool,
		ownPool:     own,
		opts:        o,
		schema:      o.Schema,
		shards:      shards,
		sql:         newStatements(qs),
		channel:     fmt.Sprintf("ff_changes_%016x", uint64(advisoryKey(o.Schema, "changes"))), //nolint:gosec // a hash
		notifyInTx:  o.notifyInTx,
		log:         o.Logger.With("store", "ffpostgres", "schema", o.Schema),
		notifyCh:    make(chan struct{}, 1),
		notifyDrain: make(chan struct{}),
		notifyCtx:   notifyCtx,
		notifyStop:  notifyStop,
		stop:        stop,
		stopCtx:     stopCtx,
	}
	if !own && o.StatementTimeout != 0 {
		ms := max(o.StatementTimeout.Milliseconds(), 0) // negative: none, which is 0
		s.timeout = strconv.FormatInt(ms, 10)
	}
	if !s.notifyInTx {
		s.wg.Go(s.runNotifier)
	}
	s.wg.Go(s.runUpkeep)
	return s, nil
}

// initShards stores the shard count when the schema is new and returns the stored one.
// Concurrent first opens agree: the first insert wins and the others, READ COMMITTED,
// wait for it and read it.
func initShards(ctx context.Context, pool *pgxpool.Pool, qs string, want int) (int, error) {
	create := want
	if create == 0 {
		create = DefaultShards
	}
	tx, err := beginTx(ctx, pool)
	if err != nil {
		return 0, translate(ctx, err, "read shard count")
	}
	defer func() { _ = tx.Rollback(context.WithoutCancel(ctx)) }()
	b := &pgx.Batch{}
	b.Queue(`INSERT INTO `+qs+`.meta (name, value) VALUES ($1, $2) ON CONFLICT (name) DO NOTHING`, metaShards, create)
	b.Queue(`SELECT value FROM `+qs+`.meta WHERE name = $1`, metaShards)
	br := tx.SendBatch(ctx, b)
	_, err = br.Exec()
	var n int64
	if err == nil {
		err = br.QueryRow().Scan(&n)
	}
	if cerr := br.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return 0, translate(ctx, err, "read shard count")
	}
	if n < 1 || n > fftype.MaxShards {
		e := fftype.NewError(fftype.KindUnavailable, fftype.CodeCorruption, "ffpostgres: meta.shards is %d", n)
		e.Retryable = false
		return 0, e
	}
	if want != 0 && int64(want) != n {
		return 0, fftype.Validationf(CodeShardCountMismatch,
			"ffpostgres: the store was created with %d shards and cannot be opened with %d: omit Options.Shards or pass %d", n, want, n)
	}
	if _, err := tx.Exec(ctx, `INSERT INTO `+qs+`.event_logs (shard) SELECT generate_series(0, $1::integer - 1)
		ON CONFLICT (shard) DO NOTHING`, n); err != nil {
		return 0, translate(ctx, err, "create event logs")
	}
	if err := tx.Commit(ctx); err != nil {
		return 0, translate(ctx, err, "create event logs")
	}
	return int(n), nil
}

// Pool returns the store's connection pool.
func (s *Store) Pool() *pgxpool.Pool { return s.pool }

// Schema returns the Postgres schema the store uses.
func (s *Store) Schema() string { return s.schema }

// MergeUnits implements [ffstore.UnitMerger]: every unit costs its own round trips and
// commit, so the engine merges concurrent small ones.
func (s *Store) MergeUnits() {}

// Shards returns the shard count stored in the schema.
func (s *Store) Shards() int { return s.shards }

// InjectConflicts makes the next n units that would commit fail instead with an error
// matching [fftype.ErrStoreConflict], after fn ran, writing nothing. It is the
// conformance suite's ConflictInjector ability, so callers' retries are tested here too.
func (s *Store) InjectConflicts(n int) {
	if n > 0 {
		s.conflicts.Add(int64(n))
	}
}

func (s *Store) takeConflict() bool {
	for {
		n := s.conflicts.Load()
		if n <= 0 {
			return false
		}
		if s.conflicts.CompareAndSwap(n, n-1) {
			return true
		}
	}
}

// startUnit counts a unit as running, so that Close waits for it, unless the store is
// closed.
func (s *Store) startUnit() bool {
	s.unitsMu.RLock()
	defer s.unitsMu.RUnlock()
	if s.closed.Load() {
		return false
	}
	s.units.Add(1)
	return true
}

// check validates a call's shard, the store's state and the context.
func (s *Store) check(ctx context.Context, shard int) error {
	if shard < 0 || shard >= s.shards {
		return fftype.Validationf(fftype.CodeShardOutOfRange, "shard %d is out of range: the store has shards 0 to %d", shard, s.shards-1)
	}
	if s.closed.Load() {
		return errClosed()
	}
	return ctx.Err()
}

// setTimeoutSQL sets the statement timeout until the end of the current transaction.
const setTimeoutSQL = "SELECT set_config('statement_timeout', $1, true)"

// beginReadCommitted opens the store's transactions that write (a View's is a snapshot of
// its own). Their locking relies on READ COMMITTED: a statement that waited for a row lock
// reads the row as the transaction that held it left it, and one that finds a row deleted
// since its transaction began skips it. The level is named because the database's
// default_transaction_isolation, an administrator's choice, may be stricter, and at
// repeatable read or serializable those statements fail with serialization failures
// instead. Where pgx opens the transaction, [beginTx] asks for the same.
const beginReadCommitted = "BEGIN ISOLATION LEVEL READ COMMITTED"

// beginTx begins a READ COMMITTED transaction on db (see [beginReadCommitted]).
func beginTx(ctx context.Context, db interface {
	BeginTx(context.Context, pgx.TxOptions) (pgx.Tx, error)
}) (pgx.Tx, error) {
	return db.BeginTx(ctx, pgx.TxOptions{IsoLevel: pgx.ReadCommitted})
}

// sendBatch sends b on a pooled connection, in one round trip, bounded by the store's
// statement timeout. [Open]'s connections carry the timeout; on the caller's pool of [New]
// b is sent after setTimeoutSQL, which holds until b ends: a batch runs in one transaction,
// the implicit one that Postgres ends at the batch's end. That transaction takes the
// database's default isolation, which single reads do not mind; a batch that writes is
// sent with [Store.sendTx].
func (s *Store) sendBatch(ctx context.Context, b *pgx.Batch) pgx.BatchResults {
	return s.send(ctx, b, false)
}

// sendTx is [Store.sendBatch] for a batch that writes: b runs as one READ COMMITTED
// transaction (see [beginReadCommitted]), committed after b's last statement, whose result
// BatchResults.Close reads. A batch that fails leaves its connection inside the failed
// transaction, which pgxpool discards rather than reuse.
func (s *Store) sendTx(ctx context.Context, b *pgx.Batch) pgx.BatchResults {
	return s.send(ctx, b, true)
}

// send is sendBatch, or sendTx if tx. It reads the results of the statements it puts
// before b's, so that the caller reads b's first.
func (s *Store) send(ctx context.Context, b *pgx.Batch, tx bool) pgx.BatchResults {
	if s.timeout == "" && !tx {
		return s.pool.SendBatch(ctx, b)
	}
	full := &pgx.Batch{}
	if tx {
		full.Queue(beginReadCommitted) // first: the level cannot change once a statement ran
	}
	if s.timeout != "" {
		full.Queue(setTimeoutSQL, s.timeout)
	}
	prefix := full.Len()
	full.QueuedQueries = append(full.QueuedQueries, b.QueuedQueries...)
	if tx {
		full.Queue("COMMIT")
	}
	br := s.pool.SendBatch(ctx, full)
	for range prefix {
		_, _ = br.Exec() // a failure, if any, is every later result's too
	}
	return br
}

// queryRow is pool.QueryRow bounded as [Store.sendBatch] bounds a batch.
func (s *Store) queryRow(ctx context.Context, sql string, args ...any) pgx.Row {
	b := &pgx.Batch{}
	b.Queue(sql, args...)
	return batchRow{s.sendBatch(ctx, b)}
}

// exec is pool.Exec bounded as [Store.sendBatch] bounds a batch.
func (s *Store) exec(ctx context.Context, sql string, args ...any) error {
	b := &pgx.Batch{}
	b.Queue(sql, args...)
	return s.sendBatch(ctx, b).Close()
}

// connect opens one of the store's own connections (the clock's, the listener's) as the
// pool opens its own: the pool's configuration, plus New's statement timeout, passed
// through the pool's BeforeConnect and AfterConnect hooks (a caller's pool may use them
// to fetch a fresh password or token for every connection).
func (s *Store) connect(ctx context.Context) (*pgx.Conn, error) {
	pc := s.pool.Config()
	cfg := pc.ConnConfig.Copy()
	if s.timeout != "" {
		cfg.RuntimeParams["statement_timeout"] = s.timeout
	}
	if pc.BeforeConnect != nil {
		if err := pc.BeforeConnect(ctx, cfg); err != nil {
			return nil, err
		}
	}
	conn, err := pgx.ConnectConfig(ctx, cfg)
	if err != nil {
		return nil, err
	}
	if pc.AfterConnect != nil {
		if err := pc.AfterConnect(ctx, conn); err != nil {
			_ = conn.Close(ctx)
			return nil, err
		}
	}
	return conn, nil
}

// callBound bounds the work of a store that no caller's context ends: the end of a
// unit (its commit or rollback, which must leave a clean connection behind even when
// the caller gave up) and a heads query its callers share. It is as long as a connect
// and the longest statement allowed.
func (o *Options) callBound() time.Duration {
	return o.ConnectTimeout + max(o.StatementTimeout, DefaultStatementTimeout)
}

// batchRow is the row of a batch of one query; Scan ends the batch.
type batchRow struct{ br pgx.BatchResults }

func (r batchRow) Scan(dest ...any) error {
	err := r.br.QueryRow().Scan(dest...)
	if cerr := r.br.Close(); err == nil {
		err = cerr
	}
	return err
}

// queueLockKey is the advisory lock that guards the directory row of one queue.
func (s *Store) queueLockKey(shard int, queue string) int64 {
	return advisoryKey(s.schema, strconv.Itoa(shard)+"\x00"+queue)
}

// Update runs fn as one unit on shard: one READ COMMITTED transaction, committed when fn
// returns nil (see the package documentation for locking). If fn returns an error, the
// transaction is rolled back and the error is returned unchanged; if fn panics, it is
// rolled back and the panic continues. If ctx is done before fn starts, fn does not run
// and ctx.Err() is returned; once fn has returned nil the commit is sent regardless of
// ctx. A unit that lost a race (deadlock, serialization failure, a record it read as
// missing created meanwhile) returns an error matching [fftype.ErrStoreConflict];
// database failures return an unavailable *fftype.Error — if the connection drops during
// COMMIT, the unit may have committed. Returns a validation error coded
// shard_out_of_range for a bad shard, one coded invalid_input (writing nothing) if fn
// passed a key, queue name or member holding a NUL byte or invalid UTF-8, and an
// unavailable error after Close.
func (s *Store) Update(ctx context.Context, shard int, fn func(tx ffstore.Tx) error) error {
	return s.run(ctx, shard, false, func(t *unitTx) error { return fn(t) })
}

// View runs fn on one REPEATABLE READ, read-only snapshot of shard. fn's error is returned
// unchanged. Argument errors are as for Update.
func (s *Store) View(ctx context.Context, shard int, fn func(tx ffstore.ReadTx) error) error {
	return s.run(ctx, shard, true, func(t *unitTx) error { return fn(readTx{t}) })
}

// readTx is the read-only face of a unitTx, so a View's fn cannot assert its way to writes.
type readTx struct{ t *unitTx }

func (r readTx) Prefetch(keys ...string) error        { return r.t.Prefetch(keys...) }
func (r readTx) Get(key string) ([]byte, bool, error) { return r.t.Get(key) }
func (r readTx) Range(queue string, after *ffstore.QueueItem, maxScore int64, n int) ([]ffstore.QueueItem, error) {
	return r.t.Range(queue, after, maxScore, n)
}

func (s *Store) run(ctx context.Context, shard int, readOnly bool, fn func(t *unitTx) error) (err error) {
	if err := s.check(ctx, shard); err != nil {
		return err
	}
	if !s.startUnit() {
		return errClosed()
	}
	defer s.units.Done() // last: after the unit asked for its NOTIFY
	conn, err := s.pool.Acquire(ctx)
	if err != nil {
		if s.closed.Load() {
			return errClosed()
		}
		return translate(ctx, err, "acquire connection")
	}
	t := &unitTx{
		s: s, ctx: ctx, shard: shard, readOnly: readOnly, conn: conn,
		reads: map[string]cached{}, writes: map[string]recWrite{}, items: map[itemKey]itemWrite{},
	}
	// The end of the transaction does not depend on ctx: a cancelled caller must still
	// leave a clean connection (or none) behind.
	endCtx, cancel := context.WithTimeout(context.WithoutCancel(ctx), s.opts.callBound())
	defer cancel()
	committed := false
	defer func() {
		if !committed && (!t.rollback(endCtx) || readOnlyServer(err)) {
			// The connection's state is unknown, or its server refuses writes: do not hand
			// it to the next unit.
			_ = conn.Conn().Close(endCtx)
		}
		conn.Release()
	}()
	fnErr := func() error {
		defer func() { t.done = true }()
		return fn(t)
	}()
	if fnErr != nil {
		return fnErr
	}
	if t.err != nil {
		return t.err // fn ignored a failed read or write
	}
	if !readOnly && t.dirty() && s.takeConflict() {
		return fftype.NewError(fftype.KindContention, fftype.CodeStoreConflict, "ffpostgres: injected conflict on shard %d", shard)
	}
	dirty := t.dirty()
	t.done = false // commit uses the transaction once more
	err = t.commit(endCtx)
	t.done = true
	if err != nil {
		return err
	}
	committed = true
	if dirty {
		s.changes.Notify()
		if !s.notifyInTx {
			select {
			case s.notifyCh <- struct{}{}:
			default: // a NOTIFY is already due
			}
		}
	}
	return nil
}

// QueueHeads returns the first item of every non-empty queue, on any shard, whose name
// starts with one of prefixes; a queue matched by two prefixes is reported once. It reads
// the queue directory and probes each matching queue's first item, so its cost grows with
// the number of matching queues, not items (upkeep prunes the directory rows of empty
// queues, so those stay few). Concurrent calls with the same prefixes share one query,
// always one that started after the call. A call returns ctx.Err() once ctx ends, while
// the query goes on for the others; Close ends it.
func (s *Store) QueueHeads(ctx context.Context, prefixes []string) ([]ffstore.QueueHead, error) {
	if s.closed.Load() {
		return nil, errClosed()
	}
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	ps := ffstore.DisjointPrefixes(prefixes)
	if len(ps) == 0 {
		return nil, nil
	}
	return s.heads.do(ctx, headsKey(ps), func() ([]ffstore.QueueHead, error) {
		// Shared by the callers that joined this query: ended by Close, not by any one of
		// them, whose context's values it does not carry either.
		qctx, cancel := ffstore.WithStoreTimeout(s.stopCtx, s.opts.callBound())
		defer cancel()
		heads, err := s.queueHeads(qctx, ps)
		if err != nil && s.closed.Load() {
			return nil, errClosed()
		}
		return heads, err
	})
}

// queueHeads reads the heads of the queues matching the disjoint prefixes ps.
func (s *Store) queueHeads(ctx context.Context, ps []string) ([]ffstore.QueueHead, error) {
	his := make([]string, len(ps))
	for i, p := range ps {
		if end, _ := ffstore.PrefixEnd(p); utf8.ValidString(end) {
			his[i] = end
		} // else no end ("п" ends "п" + 1 = invalid text): the prefix test alone decides
	}
	b := &pgx.Batch{}
	b.Queue(s.sql.heads, ps, his)
	br := s.sendBatch(ctx, b)
	defer br.Close()
	rows, err := br.Query()
	if err != nil {
		return nil, translate(ctx, err, "read queue heads")
	}
	var heads []ffstore.QueueHead
	for rows.Next() {
		var h ffstore.QueueHead
		var member *string
		var score *int64
		if err := rows.Scan(&h.Shard, &h.Queue, &member, &score); err != nil {
			rows.Close()
			return nil, translate(ctx, err, "read queue heads")
		}
		if member == nil || score == nil {
			continue // empty, until upkeep prunes its directory row
		}
		h.Item = ffstore.QueueItem{Member: *member, Score: *score}
		heads = append(heads, h)
	}
	if err := rows.Err(); err != nil {
		return nil, translate(ctx, err, "read queue heads")
	}
	return heads, nil
}

// pruneQueue deletes the directory row of a queue found empty, unless a unit is adding to
// the queue right now (it holds the queue's advisory lock shared). The emptiness check
// runs after the lock is taken, so it sees every add that committed before.
func (s *Store) pruneQueue(ctx context.Context, conn *pgxpool.Conn, shard int, queue string) error {
	tx, err := beginTx(ctx, conn)
	if err != nil {
		return translate(ctx, err, "prune queue directory")
	}
	defer func() { _ = tx.Rollback(context.WithoutCancel(ctx)) }()
	var locked bool
	if err := tx.QueryRow(ctx, s.sql.tryLockQueue, s.queueLockKey(shard, queue)).Scan(&locked); err != nil {
		return translate(ctx, err, "prune queue directory")
	}
	if !locked {
		return nil // an add is in flight: the queue is not empty for long
	}
	if _, err := tx.Exec(ctx, s.sql.pruneQueue, queue, shard); err != nil {
		return translate(ctx, err, "prune queue directory")
	}
	return translate(ctx, tx.Commit(ctx), "prune queue directory")
}

// sequenceBatch bounds the units whose events one sequencer transaction numbers.
const sequenceBatch = 1_000

// sequence numbers the events of every unit committed on shard so far: it moves each
// unit's blob from event_pending into event_blocks, numbered with the shard's next Seqs in
// the order the units inserted them. It holds the shard's event_logs row lock while it does, so
// sequencers of one shard (in any process) take turns and their blocks of numbers become
// visible in order. The number of a unit's events is thus fixed after its commit but
// before any reader can see them; units themselves never wait for each other here.
func (s *Store) sequence(ctx context.Context, shard int) error {
	for {
		b := &pgx.Batch{}
		b.Queue(s.sql.lockLog, shard)
		b.Queue(s.sql.sequence, shard, sequenceBatch)
		br := s.sendTx(ctx, b)
		_, err := br.Exec()
		var n int64
		if err == nil {
			err = br.QueryRow().Scan(&n)
		}
		if cerr := br.Close(); err == nil {
			err = cerr // the commit's
		}
		if err != nil {
			return translate(ctx, err, "number events")
		}
		if n < sequenceBatch {
			return nil
		}
	}
}

// ReadEvents returns up to limit events of shard with Seq greater than after, in Seq
// order; limit <= 0 returns none. Events of every unit committed before the call are
// numbered first, so a unit's events are readable as soon as its Update returned. If after
// is below the shard's trim point it returns an error matching [fftype.ErrCursorExpired].
// Argument errors are as for Update.
func (s *Store) ReadEvents(ctx context.Context, shard int, after uint64, limit int) ([]fftype.Event, error) {
	if err := s.check(ctx, shard); err != nil {
		return nil, err
	}
	if limit <= 0 || after >= math.MaxInt64 {
		return nil, nil
	}
	limit = min(limit, math.MaxInt32)
	out, pending, err := s.readEvents(ctx, shard, after, limit, true)
	if err == nil && pending {
		if err = s.sequence(ctx, shard); err == nil {
			out, _, err = s.readEvents(ctx, shard, after, limit, false)
		}
	}
	return out, err
}

// readEvents reads events in one round trip: whether unnumbered events wait (if probe),
// the events, then the trim point. The trim point only grows, so if after is not below it
// when read after the events, nothing the events query needed was trimmed.
func (s *Store) readEvents(ctx context.Context, shard int, after uint64, limit int, probe bool) (_ []fftype.Event, pending bool, _ error) {
	b := &pgx.Batch{}
	if probe {
		b.Queue(s.sql.hasPending, shard)
	}
	through := min(after+uint64(limit), math.MaxInt64)               //nolint:gosec // 0 < limit <= MaxInt32, after < MaxInt64: no wrap
	b.Queue(s.sql.readEvents, shard, int64(after+1), int64(through)) //nolint:gosec // both at most MaxInt64
	b.Queue(s.sql.eventBounds, shard)
	br := s.sendBatch(ctx, b)
	defer br.Close()
	if probe {
		if err := br.QueryRow().Scan(&pending); err != nil {
			return nil, false, translate(ctx, err, "read events")
		}
	}
	rows, err := br.Query()
	if err != nil {
		return nil, false, translate(ctx, err, "read events")
	}
	var out []fftype.Event
	for rows.Next() {
		var first, last int64
		var blob []byte
		if err := rows.Scan(&first, &last, &blob); err != nil {
			rows.Close()
			return nil, false, translate(ctx, err, "read events")
		}
		if out, err = decodeEventBlob(out, shard, uint64(first), uint64(last), blob, after, limit); err != nil { //nolint:gosec // Seqs are positive
			rows.Close()
			return nil, false, &fftype.Error{Kind: fftype.KindUnavailable, Code: fftype.CodeCorruption,
				Message: fmt.Sprintf("ffpostgres: the event block at %d of shard %d could not be decoded", first, shard), Err: err}
		}
	}
	if err := rows.Err(); err != nil {
		return nil, false, translate(ctx, err, "read events")
	}
	var trimmed, last int64
	if err := br.QueryRow().Scan(&trimmed, &last); err != nil {
		return nil, false, translate(ctx, err, "read trim point")
	}
	if after < uint64(trimmed) { //nolint:gosec // never negative
		return nil, false, ffstore.CursorExpired(shard, after, uint64(trimmed)) //nolint:gosec // never negative
	}
	return out, pending, nil
}

// EventBounds returns shard's trim point and the Seq of its last event, after numbering
// the events of every unit committed before the call. Argument errors are as for Update.
func (s *Store) EventBounds(ctx context.Context, shard int) (trimmed, last uint64, err error) {
	if err := s.check(ctx, shard); err != nil {
		return 0, 0, err
	}
	if err := s.numberPending(ctx, shard); err != nil {
		return 0, 0, err
	}
	var t, l int64
	if err := s.queryRow(ctx, s.sql.eventBounds, shard).Scan(&t, &l); err != nil {
		return 0, 0, translate(ctx, err, "read event bounds")
	}
	return uint64(t), uint64(l), nil //nolint:gosec // never negative
}

// numberPending numbers the events of every unit committed on shard so far, if any wait.
func (s *Store) numberPending(ctx context.Context, shard int) error {
	var pending bool
	if err := s.queryRow(ctx, s.sql.hasPending, shard).Scan(&pending); err != nil {
		return translate(ctx, err, "look for events to number")
	}
	if !pending {
		return nil
	}
	return s.sequence(ctx, shard)
}

// TrimEvents numbers the events of every unit committed on shard so far, raises shard's
// trim point to through (at most the last Seq; never lower) in one short transaction, then
// deletes the events up to it. Argument errors are as for Update.
func (s *Store) TrimEvents(ctx context.Context, shard int, through uint64) error {
	if err := s.check(ctx, shard); err != nil {
		return err
	}
	if err := s.numberPending(ctx, shard); err != nil {
		return err
	}
	through = min(through, math.MaxInt64)
	b := &pgx.Batch{}
	b.Queue(s.sql.trimMark, shard, int64(through)) //nolint:gosec // bounded above
	var trimmed int64
	if err := (batchRow{s.sendTx(ctx, b)}).Scan(&trimmed); err != nil {
		return translate(ctx, err, "trim events")
	}
	// Readers below the trim point already get cursor_expired; deleting is cleanup, and a
	// failed delete is repeated by the next trim.
	b = &pgx.Batch{}
	b.Queue(s.sql.trimDelete, shard, trimmed)
	if err := s.sendTx(ctx, b).Close(); err != nil {
		return translate(ctx, err, "trim events")
	}
	return nil
}

// Close refuses new units, stops the change listener, ends the QueueHeads queries in
// flight and waits for them and for the running units, lets the notifier send the NOTIFY
// still due for this process's last commits (for at most the connect timeout) and stops
// it, and, if the store opened its pool ([Open]), closes the pool. Later calls, Close
// included, return an unavailable error.
func (s *Store) Close() error {
	s.unitsMu.Lock()
	closing := s.closed.CompareAndSwap(false, true)
	s.unitsMu.Unlock()
	if !closing {
		return errClosed()
	}
	s.stop()
	s.heads.close()
	s.units.Wait()
	// Other processes would otherwise learn of the last commits only at their next poll:
	// a short-lived process commits and closes at once.
	bound := time.AfterFunc(s.opts.ConnectTimeout, s.notifyStop)
	close(s.notifyDrain)
	s.wg.Wait()
	bound.Stop()
	s.notifyStop()
	s.clock.close()
	if s.ownPool {
		s.pool.Close()
	}
	return nil
}
