// Package ffsqlite is the embedded SQLite store, FlowFabric's zero-setup default.
//
// A store is one SQLite file in WAL mode. All writes of a process go through one writer
// goroutine that runs units in group commits: it opens BEGIN IMMEDIATE, runs every queued
// unit inside its own SAVEPOINT (so a unit that fails is undone without touching the
// others), commits once, and only then returns each unit's result to its caller. With the
// default synchronous=FULL a unit acknowledged by [Store.Update] survives a crash of the
// process and of the machine. Reads outside units (View, QueueHeads, ReadEvents) use a
// small pool of read-only connections that see the last committed state.
//
// A second process may open the same file and is correct, but not fast: writers of
// different processes take turns through SQLite's write lock (BEGIN IMMEDIATE, waiting up
// to the busy timeout), and a unit that cannot get the lock in time fails with a retryable
// error of kind unavailable.
//
// The driver is modernc.org/sqlite (pure Go, no cgo). It was chosen by measuring the same
// unit workload against github.com/mattn/go-sqlite3; see the store's benchmarks.
//
// The schema is versioned in the file and migrated forward on [Open]. A file written by a
// newer binary is refused with an error coded [CodeSchemaTooNew]. A store's file carries
// an application id of its own (PRAGMA application_id), by which Open tells it from an
// SQLite file of another application, refused with an error coded [CodeNotAStore].
package ffsqlite

import (
	"context"
	"database/sql"
	"database/sql/driver"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"math"
	"net/url"
	"os"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/flowfabric/flowfabric/ffstore"
	"github.com/flowfabric/flowfabric/fftype"
)

// Defaults for [Options].
const (
	DefaultShards          = 1
	DefaultBusyTimeout     = 5 * time.Second
	maxBusyTimeout         = math.MaxInt32 * time.Millisecond
	DefaultCheckpointBytes = 64 << 20
	DefaultReadConns       = 4
)

// Synchronous is SQLite's synchronous setting for the writer's commits.
type Synchronous string

const (
	// SynchronousFull syncs the write-ahead log on every commit: an acknowledged unit
	// survives power loss. The default.
	SynchronousFull Synchronous = "full"
	// SynchronousNormal syncs only at checkpoints. Commits are faster and the file is never
	// corrupted, but a power loss or OS crash may lose the last acknowledged units (a crash
	// of the process alone loses nothing).
	SynchronousNormal Synchronous = "normal"
)

// Options configures [Open]. The zero value, or nil, gives the defaults.
type Options struct {
	// Shards is the shard count given to a new file, 1 to [fftype.MaxShards]; 0 means
	// [DefaultShards] for a new file and the stored count for an existing one. It is
	// fixed when the file is created: opening an existing file with a different non-zero
	// count fails with a validation error coded [CodeShardCountMismatch].
	Shards int

	// Synchronous is the durability of commits; "" means [SynchronousFull].
	Synchronous Synchronous

	// BusyTimeout is how long a connection waits for a lock held by another process
	// before failing with a retryable unavailable error; 0 means [DefaultBusyTimeout]. It
	// is rounded up to whole milliseconds, and may be at most 2^31-1 of them (24.8 days),
	// the most SQLite takes.
	BusyTimeout time.Duration

	// CheckpointBytes is the write-ahead log's size past which the writer copies it back
	// into the database file (a PASSIVE checkpoint, which never waits for readers), and the
	// size the file is truncated to when the log restarts. When the writer has been idle
	// for a second it also runs a TRUNCATE checkpoint that empties the log if no reader is
	// using it. It is not a hard bound: a checkpoint copies back only what no open read
	// still needs and the log restarts only when no read uses it, so reads that never
	// pause, or one long View, let the log grow past it. 0 means [DefaultCheckpointBytes].
	CheckpointBytes int64

	// ReadConns is the size of the read-only connection pool used by View, QueueHeads and
	// ReadEvents; 0 means [DefaultReadConns].
	ReadConns int

	// Logger receives the store's rare log lines (checkpoint failures, panics in units).
	// nil discards them.
	Logger *slog.Logger

	// idleCheckpointDelay is how long the writer waits idle before a TRUNCATE checkpoint.
	// Tests shorten it; 0 means one second.
	idleCheckpointDelay time.Duration
}

func (o *Options) withDefaults() (Options, error) {
	var out Options
	if o != nil {
		out = *o
	}
	if out.Shards < 0 || out.Shards > fftype.MaxShards {
		return out, fftype.Validationf(fftype.CodeInvalidInput, "ffsqlite: Options.Shards is %d, want 0 (default) or 1 to %d", out.Shards, fftype.MaxShards)
	}
	switch out.Synchronous {
	case "":
		out.Synchronous = SynchronousFull
	case SynchronousFull, SynchronousNormal:
	default:
		return out, fftype.Validationf(fftype.CodeInvalidInput, "ffsqlite: Options.Synchronous is %q, want %q or %q", out.Synchronous, SynchronousFull, SynchronousNormal)
	}
	if out.BusyTimeout < 0 || out.CheckpointBytes < 0 || out.ReadConns < 0 {
		return out, fftype.Validationf(fftype.CodeInvalidInput, "ffsqlite: Options.BusyTimeout, CheckpointBytes and ReadConns must not be negative")
	}
	if out.BusyTimeout > maxBusyTimeout {
		return out, fftype.Validationf(fftype.CodeInvalidInput, "ffsqlite: Options.BusyTimeout is %s, at most %s", out.BusyTimeout, maxBusyTimeout)
	}
	if out.BusyTimeout == 0 {
		out.BusyTimeout = DefaultBusyTimeout
	}
	if r := out.BusyTimeout % time.Millisecond; r != 0 {
		out.BusyTimeout += time.Millisecond - r // SQLite counts whole milliseconds; 0 would mean no wait
	}
	if out.CheckpointBytes == 0 {
		out.CheckpointBytes = DefaultCheckpointBytes
	}
	if out.ReadConns == 0 {
		out.ReadConns = DefaultReadConns
	}
	if out.Logger == nil {
		out.Logger = slog.New(slog.DiscardHandler)
	}
	if out.idleCheckpointDelay == 0 {
		out.idleCheckpointDelay = time.Second
	}
	return out, nil
}

// Store is an [ffstore.Store] on one SQLite file. All methods are safe for concurrent
// use. Create one with [Open] or [OpenURL] and Close it when done.
type Store struct {
	path   string
	opts   Options
	shards int
	log    *slog.Logger

	// The writer: one connection owned by the writer goroutine, fed through units. Open
	// sets the file up through database/sql, then opens the writer's connection on the
	// driver itself (see wstmt).
	wconn       driver.Conn
	ws          writerStmts
	units       chan *unit
	writerDone  chan struct{}
	commits     atomic.Int64            // group commits, for tests
	conflicts   ffstore.ConflictCounter // injected conflicts still to deliver
	cache       *recordCache            // records known to the writer; writer only
	dataVersion int64                   // the writer connection's data_version when the cache was last valid
	tooNew      error                   // set once another process migrated the file past SchemaVersion

	// The readers.
	rdb *sql.DB
	rs  readerStmts

	// Change detection: one connection of its own, so PRAGMA data_version compares
	// against this connection's last look.
	dvMu   sync.Mutex
	dvConn *sql.Conn
	dv     int64
	dvSeen bool

	// Wake-ups for ChangeNotifier: the writer notifies after each commit; a poller started
	// by the first Changes call notifies when data_version shows another process's commit.
	changes    ffstore.Notifier
	pollerOnce sync.Once

	// Closing: closed is set first, then closing is closed, which ends the wait of every
	// Update for room in the unit queue. mu, read-locked by each Update while it sends on
	// units, lets Close close that channel once no Update is sending. Nothing else takes
	// mu, so nothing the writer calls (Now, View) waits for a pending Close.
	closed  atomic.Bool
	closing chan struct{}
	mu      sync.RWMutex
}

var (
	_ ffstore.Store          = (*Store)(nil)
	_ ffstore.ChangeNotifier = (*Store)(nil)
)

// changePollInterval is how often the change poller reads PRAGMA data_version.
const changePollInterval = 25 * time.Millisecond

// Open opens the store in the SQLite file at path, creating the file and its schema if
// needed and migrating an older schema forward. opts may be nil.
//
// Open returns a validation error for bad options, for a path whose directory does not
// exist, for a shard count that differs from the file's (code [CodeShardCountMismatch]) and
// for an SQLite file of another application (code [CodeNotAStore]; the file is left as it
// was); an unavailable error coded [CodeSchemaTooNew] for a file written by a newer
// binary; and an unavailable error if the file cannot be opened. Every error of opening
// the file names it.
func Open(ctx context.Context, path string, opts *Options) (*Store, error) {
	o, err := opts.withDefaults()
	if err != nil {
		return nil, err
	}
	if path == "" || path == ":memory:" || strings.HasPrefix(path, "file:") || strings.ContainsRune(path, 0) {
		return nil, fftype.Validationf(fftype.CodeInvalidInput, "ffsqlite: path %q is not a file path", path)
	}
	abs, err := filepath.Abs(path)
	if err != nil {
		return nil, fftype.Validationf(fftype.CodeInvalidInput, "ffsqlite: path %q: %v", path, err)
	}
	if dir, err := os.Stat(filepath.Dir(abs)); errors.Is(err, fs.ErrNotExist) || err == nil && !dir.IsDir() {
		return nil, fftype.Validationf(fftype.CodeInvalidInput, "ffsqlite: %s: the directory %s does not exist", abs, filepath.Dir(abs))
	}
	s := &Store{path: abs, opts: o, log: o.Logger.With("store", "ffsqlite", "path", abs), cache: newRecordCache()}
	if err := s.open(ctx); err != nil {
		s.closeHandles()
		return nil, naming(abs, err)
	}
	s.units = make(chan *unit, maxBatch)
	s.closing = make(chan struct{})
	s.writerDone = make(chan struct{})
	go s.runWriter(make([]*unit, 0, maxBatch))
	return s, nil
}

// naming returns err, a failure to open the file at path, with a message that names the
// file. Other errors than an *fftype.Error (the context's) pass through.
func naming(path string, err error) error {
	fe, ok := err.(*fftype.Error) // the error itself: one it wraps would lose the wrapping
	if !ok {
		return err
	}
	named := *fe
	named.Message = "ffsqlite: " + path + ": " + fe.Message
	return &named
}

func (s *Store) open(ctx context.Context) error {
	busy := fmt.Sprintf("PRAGMA busy_timeout = %d", s.opts.BusyTimeout.Milliseconds())
	pageSize, err := s.setUp(ctx, busy)
	if err != nil {
		return err
	}
	writer := newConnector(s.path, []string{
		busy,
		"PRAGMA synchronous = " + strings.ToUpper(string(s.opts.Synchronous)),
		"PRAGMA foreign_keys = OFF",
		"PRAGMA temp_store = MEMORY",
		fmt.Sprintf("PRAGMA wal_autocheckpoint = %d", max(1, s.opts.CheckpointBytes/pageSize)),
		fmt.Sprintf("PRAGMA journal_size_limit = %d", s.opts.CheckpointBytes),
	})
	if s.wconn, err = writer.Connect(ctx); err != nil {
		return translate(err, "open")
	}
	if err := s.ws.prepare(ctx, s.wconn); err != nil {
		return err
	}

	s.rdb = sql.OpenDB(newConnector(s.path, []string{busy, "PRAGMA query_only = 1", "PRAGMA temp_store = MEMORY"}))
	s.rdb.SetMaxOpenConns(s.opts.ReadConns + 1) // + the change-detection connection
	s.rdb.SetMaxIdleConns(s.opts.ReadConns + 1)
	s.rdb.SetConnMaxIdleTime(5 * time.Minute)
	if err := s.rs.prepare(ctx, s.rdb); err != nil {
		return err
	}
	return nil
}

// setUp checks that the file is new or a store, puts it in WAL mode and migrates its
// schema, on a connection of its own that it closes again, and returns the page size.
func (s *Store) setUp(ctx context.Context, busy string) (pageSize int64, err error) {
	db := sql.OpenDB(newConnector(s.path, []string{busy}))
	defer func() {
		if cerr := db.Close(); err == nil && cerr != nil {
			err = translate(cerr, "close set-up connection")
		}
	}()
	db.SetMaxOpenConns(1)
	conn, err := db.Conn(ctx)
	if err != nil {
		return 0, translate(err, "open")
	}
	defer conn.Close()
	// Whose file it is, reading only, before the switch to WAL mode, which persists in
	// the file: a file Open refuses is left as it was. migrate asks again inside its
	// write transaction, where the answer cannot change before the file is migrated.
	if _, err := identify(ctx, conn); err != nil {
		return 0, err
	}
	mode, err := s.setWAL(ctx, conn)
	if err != nil {
		return 0, translate(err, "set WAL mode")
	}
	if !strings.EqualFold(mode, "wal") {
		return 0, fftype.NewError(fftype.KindUnavailable, fftype.CodeStoreUnavailable,
			"ffsqlite: the file system does not support WAL mode (journal_mode is %q)", mode)
	}
	if err := conn.QueryRowContext(ctx, "PRAGMA page_size").Scan(&pageSize); err != nil {
		return 0, translate(err, "read page size")
	}
	if s.shards, err = migrate(ctx, conn, s.opts.Shards); err != nil {
		return 0, err
	}
	return max(pageSize, 512), nil
}

// setWAL puts the file in WAL mode and returns the journal mode it is in. Switching
// needs the file's exclusive lock, and SQLite answers BUSY at once, without its busy
// handler, when waiting could deadlock with another connection switching at the same
// moment (processes opening a new file together). So it tries again, within the busy
// timeout.
func (s *Store) setWAL(ctx context.Context, conn *sql.Conn) (mode string, err error) {
	deadline := time.Now().Add(s.opts.BusyTimeout)
	for wait := time.Millisecond; ; wait = min(2*wait, 50*time.Millisecond) {
		err = conn.QueryRowContext(ctx, "PRAGMA journal_mode = WAL").Scan(&mode)
		if code, ok := sqliteCode(err); !ok || code&0xff != sqliteBusy || time.Now().Add(wait).After(deadline) {
			return mode, err
		}
		select {
		case <-ctx.Done():
			return "", ctx.Err()
		case <-time.After(wait):
		}
	}
}

// closeHandles closes whatever open managed to open.
func (s *Store) closeHandles() error {
	var errs []error
	s.ws.close()
	s.rs.close()
	if s.dvConn != nil {
		errs = append(errs, s.dvConn.Close())
	}
	if s.wconn != nil {
		errs = append(errs, s.wconn.Close())
	}
	if s.rdb != nil {
		errs = append(errs, s.rdb.Close())
	}
	return errors.Join(errs...)
}

// ParseURL parses the URL form of a store location into a path and options, for callers
// that want to add a Logger before calling [Open]. The syntax is
//
//	sqlite:///abs/path/to/file.db?shards=4&synchronous=normal&busy_timeout=10s&checkpoint_bytes=67108864&read_conns=4
//	sqlite:relative/path.db
//
// Every parameter is optional and maps to the [Options] field of the same name:
// shards and checkpoint_bytes and read_conns are decimal integers, busy_timeout a Go
// duration ("500ms", "10s"), synchronous "full" or "normal". A host part
// ("sqlite://host/..."), unknown parameters, a query that does not parse and a '#' (a
// fragment, even an empty one: escape a '#' in the path as %23) are refused with a
// validation error.
func ParseURL(rawURL string) (path string, opts *Options, err error) {
	bad := func(format string, args ...any) (string, *Options, error) {
		return "", nil, fftype.Validationf(fftype.CodeInvalidInput, "ffsqlite: store URL: "+format, args...)
	}
	u, err := url.Parse(rawURL)
	if err != nil {
		return bad("%v", err)
	}
	if u.Scheme != "sqlite" {
		return bad("scheme is %q, want sqlite", u.Scheme)
	}
	if u.Host != "" || u.User != nil {
		return bad("%q has a host; write sqlite:///abs/path.db or sqlite:rel/path.db", rawURL)
	}
	path = u.Path
	if u.Opaque != "" {
		if path, err = url.PathUnescape(u.Opaque); err != nil {
			return bad("%v", err)
		}
	}
	if path == "" {
		return bad("%q has no file path", rawURL)
	}
	q, err := ffstore.URLQuery(rawURL)
	if err != nil {
		return bad("%v", err)
	}
	opts = &Options{}
	for name, values := range q {
		if len(values) != 1 {
			return bad("parameter %s is given %d times", name, len(values))
		}
		v := values[0]
		switch name {
		case "shards", "read_conns", "checkpoint_bytes":
			n, err := strconv.ParseInt(v, 10, 64)
			if err != nil || n < 0 {
				return bad("parameter %s=%q is not a non-negative integer", name, v)
			}
			switch name {
			case "shards":
				opts.Shards = int(min(n, math.MaxInt32))
			case "read_conns":
				opts.ReadConns = int(min(n, math.MaxInt32))
			default:
				opts.CheckpointBytes = n
			}
		case "synchronous":
			opts.Synchronous = Synchronous(strings.ToLower(v))
		case "busy_timeout":
			d, err := time.ParseDuration(v)
			if err != nil || d < 0 {
				return bad("parameter busy_timeout=%q is not a duration", v)
			}
			opts.BusyTimeout = d
		default:
			return bad("unknown parameter %q", name)
		}
	}
	if _, err := opts.withDefaults(); err != nil {
		return "", nil, err
	}
	return path, opts, nil
}

// OpenURL opens the store named by a URL in the syntax of [ParseURL], for example
// "sqlite:///var/lib/flowfabric/ff.db?synchronous=normal".
func OpenURL(ctx context.Context, rawURL string) (*Store, error) {
	path, opts, err := ParseURL(rawURL)
	if err != nil {
		return nil, err
	}
	return Open(ctx, path, opts)
}

// InjectConflicts makes the next n units that would commit fail instead with an error
// matching [fftype.ErrStoreConflict], after fn ran, writing nothing. It exists so tests of
// callers' retries (the conformance suite's ConflictInjector) run against this store too;
// a single writer never has real conflicts.
func (s *Store) InjectConflicts(n int) { s.conflicts.Inject(n) }

// Path returns the absolute path of the store's file.
func (s *Store) Path() string { return s.path }

// Shards returns the shard count stored in the file.
func (s *Store) Shards() int { return s.shards }

// check validates a call's shard and context.
func (s *Store) check(ctx context.Context, shard int) error {
	if shard < 0 || shard >= s.shards {
		return fftype.Validationf(fftype.CodeShardOutOfRange, "shard %d is out of range: the store has shards 0 to %d", shard, s.shards-1)
	}
	return ctx.Err()
}

// isClosed reports whether Close has been called. It never waits.
func (s *Store) isClosed() bool { return s.closed.Load() }

// Update runs fn as one unit on shard. fn runs on the store's writer goroutine inside the
// current group commit, so it must not block for long and must not call Update itself
// (that deadlocks); a View called from fn reads the committed state, without the unit's
// own writes. Update returns only after the unit's commit is durable. If fn returns
// an error, the unit's writes are rolled back and the error is returned unchanged; if fn
// panics, its writes are rolled back and the panic is re-raised in the caller's goroutine;
// if fn calls runtime.Goexit (as t.FailNow does), its writes are rolled back and Update
// calls runtime.Goexit. If ctx ends before the writer takes the unit, fn does not run and
// ctx.Err() is returned; once fn has started, Update waits for the commit regardless of
// ctx, so an error always means nothing was written. Store failures (lock held by another
// process past the busy timeout, I/O errors) return an unavailable *fftype.Error. Returns
// a validation error coded shard_out_of_range for a bad shard, and an unavailable error
// after Close or when Close is called while Update waits for room in the writer's queue.
func (s *Store) Update(ctx context.Context, shard int, fn func(tx ffstore.Tx) error) error {
	if err := s.check(ctx, shard); err != nil {
		return err
	}
	u := &unit{ctx: ctx, shard: shard, fn: fn, done: make(chan struct{})}
	if err := s.enqueue(ctx, u); err != nil {
		return err
	}
	<-u.done
	switch {
	case u.panicked:
		panic(u.panicValue)
	case u.exited:
		runtime.Goexit()
	}
	return u.err
}

// enqueue hands u to the writer, waiting for room in its queue until ctx ends or Close
// is called.
func (s *Store) enqueue(ctx context.Context, u *unit) error {
	s.mu.RLock()
	defer s.mu.RUnlock()
	if s.isClosed() {
		return errClosed()
	}
	select {
	case s.units <- u:
		return nil
	case <-s.closing:
		return errClosed()
	case <-ctx.Done():
		return ctx.Err()
	}
}

// View runs fn against a read-only snapshot of shard: the state after the last commit
// when fn made its first read. fn's error is returned unchanged. Argument errors are as
// for Update.
func (s *Store) View(ctx context.Context, shard int, fn func(tx ffstore.ReadTx) error) error {
	if err := s.check(ctx, shard); err != nil {
		return err
	}
	if s.isClosed() {
		return errClosed()
	}
	sqlTx, err := s.rdb.BeginTx(ctx, nil)
	if err != nil {
		return translate(err, "begin read")
	}
	t := &readTx{s: s, ctx: ctx, shard: shard, tx: sqlTx}
	defer func() {
		t.done = true
		_ = sqlTx.Rollback() // a read transaction: nothing to commit
	}()
	return fn(t)
}

// QueueHeads returns the first item of every non-empty queue, on any shard, whose name
// starts with one of prefixes; a queue matched by two prefixes is reported once. It reads
// the queue directory, so its cost grows with the number of matching queues, not items.
// The result is in (queue, shard) order, and each prefix is read at its own moment.
func (s *Store) QueueHeads(ctx context.Context, prefixes []string) ([]ffstore.QueueHead, error) {
	if s.isClosed() {
		return nil, errClosed()
	}
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	var heads []ffstore.QueueHead
	for _, p := range ffstore.DisjointPrefixes(prefixes) {
		var rows *sql.Rows
		var err error
		if hi, ok := ffstore.PrefixEnd(p); ok {
			rows, err = s.rs.headsRange.QueryContext(ctx, p, hi)
		} else {
			rows, err = s.rs.headsFrom.QueryContext(ctx, p)
		}
		if err != nil {
			return nil, translate(err, "read queue heads")
		}
		for rows.Next() {
			var h ffstore.QueueHead
			if err := rows.Scan(&h.Shard, &h.Queue, &h.Item.Member, &h.Item.Score); err != nil {
				_ = rows.Close()
				return nil, translate(err, "read queue heads")
			}
			heads = append(heads, h)
		}
		if err := rows.Err(); err != nil {
			return nil, translate(err, "read queue heads")
		}
	}
	return heads, nil
}

// ReadEvents returns up to limit events of shard with Seq greater than after, in Seq
// order; limit <= 0 returns none. Argument errors are as for Update.
func (s *Store) ReadEvents(ctx context.Context, shard int, after uint64, limit int) ([]fftype.Event, error) {
	if err := s.check(ctx, shard); err != nil {
		return nil, err
	}
	if s.isClosed() {
		return nil, errClosed()
	}
	if limit <= 0 || after >= math.MaxInt64 {
		return nil, nil
	}
	rows, err := s.rs.events.QueryContext(ctx, shard, int64(after), limit)
	if err != nil {
		return nil, translate(err, "read events")
	}
	defer rows.Close()
	var out []fftype.Event
	for rows.Next() {
		ev := fftype.Event{Shard: shard}
		var sec, nsec int64
		var seq int64
		var data []byte
		if err := rows.Scan(&seq, &ev.Version, &ev.Type, &sec, &nsec, &ev.ExecutionID, &ev.FlowID, &ev.Namespace, &ev.Lane, &data); err != nil {
			return nil, translate(err, "read events")
		}
		ev.Seq = uint64(seq)
		ev.Time = time.Unix(sec, nsec).UTC()
		if data != nil {
			ev.Data = data
		}
		out = append(out, ev)
	}
	if err := rows.Err(); err != nil {
		return nil, translate(err, "read events")
	}
	// The trim point is read after the events: it only grows, so if after is not below
	// it now, nothing the events query needed had been trimmed when it ran.
	var trimmed int64
	if err := s.rs.trimPoint.QueryRowContext(ctx, shard).Scan(&trimmed); err != nil && !errors.Is(err, sql.ErrNoRows) {
		return nil, translate(err, "read trim point")
	}
	if after < uint64(trimmed) {
		return nil, ffstore.CursorExpired(shard, after, uint64(trimmed))
	}
	return out, nil
}

// EventBounds returns shard's trim point and last Seq. Argument errors are as for Update.
func (s *Store) EventBounds(ctx context.Context, shard int) (trimmed, last uint64, err error) {
	if err := s.check(ctx, shard); err != nil {
		return 0, 0, err
	}
	if s.isClosed() {
		return 0, 0, errClosed()
	}
	var t, l int64
	if err := s.rs.bounds.QueryRowContext(ctx, shard).Scan(&t, &l); err != nil {
		if errors.Is(err, sql.ErrNoRows) {
			return 0, 0, nil
		}
		return 0, 0, translate(err, "read event bounds")
	}
	return uint64(t), uint64(l), nil
}

// TrimEvents deletes the events of shard up to Seq through (at most the last one) and
// raises the shard's trim point, in one write transaction.
func (s *Store) TrimEvents(ctx context.Context, shard int, through uint64) error {
	if through > math.MaxInt64 {
		through = math.MaxInt64
	}
	return s.Update(ctx, shard, func(tx ffstore.Tx) error {
		t := tx.(*writeTx)
		if seq, ok := t.batch.seqs[shard]; ok {
			// Events appended earlier in this group commit reach event_seqs only when
			// it ends (finishBatch): count them now, so that the trim sees them.
			t.exec("trim events", t.s.ws.storeSeq, shard, seq)
		}
		t.exec("trim events", t.s.ws.trimMark, shard, int64(through))
		t.exec("trim events", t.s.ws.trim, shard)
		return t.err
	})
}

// Changes implements [ffstore.ChangeNotifier]: it wakes after every commit of this store
// and, within about 25ms, after commits of other processes on the same file.
func (s *Store) Changes(ctx context.Context) <-chan struct{} {
	s.pollerOnce.Do(func() { go s.pollChanges() })
	return s.changes.Changes(ctx)
}

// pollChanges notifies when another process committed, until the store closes.
func (s *Store) pollChanges() {
	t := time.NewTicker(changePollInterval)
	defer t.Stop()
	for {
		select {
		case <-s.writerDone:
			return
		case <-t.C:
		}
		changed, err := s.changed(context.Background())
		if err != nil {
			if s.isClosed() {
				return
			}
			continue
		}
		if changed {
			s.changes.Notify()
		}
	}
}

// Now returns the local clock, time.Now(). It fails only after Close or when ctx is done.
func (s *Store) Now(ctx context.Context) (time.Time, error) {
	if s.isClosed() {
		return time.Time{}, errClosed()
	}
	if err := ctx.Err(); err != nil {
		return time.Time{}, err
	}
	return time.Now(), nil
}

// changed reports whether any connection, of this process or another, committed to the
// file since the previous call (the first call reports true). It costs one cheap query
// (PRAGMA data_version). Only the change poller calls it: a second caller would take the
// changes it reports from the poller, and so wake-ups from the store's readers.
func (s *Store) changed(ctx context.Context) (bool, error) {
	if s.isClosed() {
		return false, errClosed()
	}
	s.dvMu.Lock()
	defer s.dvMu.Unlock()
	if s.dvConn == nil {
		c, err := s.rdb.Conn(ctx)
		if err != nil {
			return false, translate(err, "open change-detection connection")
		}
		s.dvConn = c
	}
	var v int64
	if err := s.dvConn.QueryRowContext(ctx, "PRAGMA data_version").Scan(&v); err != nil {
		return false, translate(err, "read data_version")
	}
	// The writer's own commits are made on another connection, so they change this
	// connection's data_version too.
	changed := !s.dvSeen || v != s.dv
	s.dv, s.dvSeen = v, true
	return changed, nil
}

// Close waits for the units already queued to commit, then closes the file. Later calls,
// Close included, return an unavailable error, as do Updates still waiting for room in
// the writer's queue.
func (s *Store) Close() error {
	if !s.closed.CompareAndSwap(false, true) {
		return errClosed()
	}
	close(s.closing)
	s.mu.Lock() // once no Update is sending
	close(s.units)
	s.mu.Unlock()
	<-s.writerDone
	s.dvMu.Lock()
	defer s.dvMu.Unlock()
	if err := s.closeHandles(); err != nil {
		return translate(err, "close")
	}
	return nil
}
