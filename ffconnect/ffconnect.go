// Package ffconnect opens stores by URL and workers on them. It is the one place outside
// the command line that maps a URL scheme to a store constructor, kept apart so that the
// root package imports no store.
//
// Schemes today:
//
//	sqlite:///abs/path/ff.db?synchronous=normal   the embedded SQLite store (see ffsqlite.ParseURL)
//	sqlite:rel/path/ff.db
//	mem:                                          a fresh in-memory store (mem:// too)
//
//	postgres://user@host:5432/db?schema=flowfabric&migrate=true   Postgres (see ffpostgres.ParseURL)
//	redis://host:6379/0, rediss://…, redis+cluster://h1:p,h2:p   Valkey/Redis (see ffvalkey.ParseURL); valkey:// aliases
package ffconnect

import (
	"context"
	"log/slog"
	"strings"

	"github.com/flowfabric/flowfabric"
	"github.com/flowfabric/flowfabric/ffstore"
	"github.com/flowfabric/flowfabric/ffstore/ffmem"
	"github.com/flowfabric/flowfabric/ffstore/ffpostgres"
	"github.com/flowfabric/flowfabric/ffstore/ffsqlite"
	"github.com/flowfabric/flowfabric/ffstore/ffvalkey"
	"github.com/flowfabric/flowfabric/fftype"
)

// OpenOpts are the optional settings of [Open].
type OpenOpts struct {
	// Logger receives the store's log lines (a Redis server with appendonly off, a
	// Postgres listener's reconnects, an SQLite checkpoint that failed, …). Nil discards
	// them.
	Logger *slog.Logger
}

// Kind is the store a URL's scheme selects; see [KindOf].
type Kind string

// The stores [Open] opens.
const (
	KindSQLite   Kind = "sqlite"   // sqlite:
	KindMem      Kind = "mem"      // mem:
	KindPostgres Kind = "postgres" // postgres:, postgresql:
	KindValkey   Kind = "valkey"   // Valkey or Redis: redis:, rediss:, redis+cluster:, rediss+cluster: and their valkey aliases
)

// KindOf returns the store rawURL's scheme selects, the scheme in any case, as [Open]
// reads it; it checks nothing after the scheme. A URL with no scheme, a server's (http:,
// https:) or an unknown one is a validation error coded invalid_input.
func KindOf(rawURL string) (Kind, error) {
	scheme := schemeOf(rawURL)
	if scheme == "" {
		// Not quoted: a string with no scheme may be a libpq key=value DSN with a password.
		return "", fftype.Validationf(fftype.CodeInvalidInput, "store URL has no scheme (want sqlite:, postgres:, redis:, valkey: or mem:)")
	}
	switch strings.ToLower(scheme) {
	case "sqlite":
		return KindSQLite, nil
	case "mem":
		return KindMem, nil
	case "postgres", "postgresql":
		return KindPostgres, nil
	case "redis", "rediss", "redis+cluster", "rediss+cluster", "valkey", "valkeys", "valkey+cluster", "valkeys+cluster":
		return KindValkey, nil
	case "http", "https":
		return "", fftype.Validationf(fftype.CodeInvalidInput, "store URL scheme %q names a server, not a store: "+
			"for a worker on a server, open an ffclient.Client on it and pass it to flowfabric.NewWorker", scheme)
	default:
		return "", fftype.Validationf(fftype.CodeInvalidInput, "store URL scheme %q is not supported (want sqlite:, postgres:, redis:, valkey: or mem:)", scheme)
	}
}

// Open opens the store rawURL names; opts may be nil. The caller owns the store and
// closes it. An unknown scheme or a malformed URL is a validation error coded
// invalid_input. On an error the store returned is nil.
func Open(ctx context.Context, rawURL string, opts *OpenOpts) (ffstore.Store, error) {
	var log *slog.Logger
	if opts != nil {
		log = opts.Logger
	}
	kind, err := KindOf(rawURL)
	if err != nil {
		return nil, err
	}
	switch kind {
	case KindSQLite:
		path, o, err := ffsqlite.ParseURL(rawURL)
		if err != nil {
			return nil, err
		}
		o.Logger = log
		return storeOrNil(ffsqlite.Open(ctx, path, o))
	case KindMem:
		_, rest, _ := strings.Cut(rawURL, ":")
		if rest = strings.TrimPrefix(strings.TrimPrefix(rest, "//"), "/"); rest != "" {
			return nil, fftype.Validationf(fftype.CodeInvalidInput, "store URL %q: mem: takes no path or parameters", rawURL)
		}
		return ffmem.New(nil), nil
	case KindPostgres:
		conn, o, err := ffpostgres.ParseURL(rawURL)
		if err != nil {
			return nil, err
		}
		o.Logger = log
		return storeOrNil(ffpostgres.Open(ctx, conn, o))
	default: // KindValkey
		return storeOrNil(ffvalkey.Open(ctx, rawURL, &ffvalkey.Options{Logger: log}))
	}
}

// MigrateOpts are optional settings of [Migrate].
type MigrateOpts struct {
	// Schema is the Postgres schema to migrate; "" means the URL's schema parameter, else
	// ffpostgres.DefaultSchema. Other stores have none and refuse one.
	Schema string
}

// Migrate brings the store rawURL names up to this binary's version; opts may be nil.
// Postgres and Redis/Valkey have migrations of their own (ffpostgres.MigrateURL,
// ffvalkey.Migrate) that leave the shard count to the first [Open]; any other store is
// opened and closed again, which migrates it (an SQLite file stores its schema and its
// shard count together, so a new one is created, with the URL's shards=, else 1). A store
// newer than this binary is refused.
func Migrate(ctx context.Context, rawURL string, opts *MigrateOpts) error {
	var schema string
	if opts != nil {
		schema = opts.Schema
	}
	kind, err := KindOf(rawURL)
	if err != nil {
		return err
	}
	if schema != "" && kind != KindPostgres {
		return fftype.Validationf(fftype.CodeInvalidInput, "a schema is for Postgres stores only, not %s", kind)
	}
	switch kind {
	case KindPostgres:
		return ffpostgres.MigrateURL(ctx, rawURL, schema)
	case KindValkey:
		return ffvalkey.Migrate(ctx, rawURL, nil)
	default:
		s, err := Open(ctx, rawURL, nil)
		if err != nil {
			return err
		}
		return s.Close()
	}
}

// storeOrNil returns a store constructor's result as an [ffstore.Store], nil on an error:
// a nil *S in the interface would be a non-nil store.
func storeOrNil[S ffstore.Store](s S, err error) (ffstore.Store, error) {
	if err != nil {
		return nil, err
	}
	return s, nil
}

// schemeOf returns the scheme rawURL begins with, or "" if it begins with none: RFC 3986's
// letter, then letters, digits, '+', '-' or '.', up to the first ':'.
func schemeOf(rawURL string) string {
	scheme, _, ok := strings.Cut(rawURL, ":")
	if !ok {
		return ""
	}
	for i, r := range scheme {
		switch {
		case 'a' <= r && r <= 'z', 'A' <= r && r <= 'Z':
		case i > 0 && ('0' <= r && r <= '9' || r == '+' || r == '-' || r == '.'):
		default:
			return ""
		}
	}
	return scheme
}

// Connect opens a worker on the store cfg.Store names: it validates cfg (a
// *flowfabric.ConfigError names the field; a config without Store is refused before
// anything is opened), opens the store and a client on it with clientCfg (nil for the
// defaults; the store logs to clientCfg.Logger, or if that is nil to cfg.Logger), starts
// the client's timers, subscribes a completion feed when the store can push changes
// (completed, failed, cancelled and expired events of the worker's namespace from now on;
// read it or leave it, an unread feed waits once its buffer is full) and opens the
// worker, which registers its instance (refused while another live process holds the
// instance id). The worker owns all of it: its Close stops the client and closes the feed
// and the store.
func Connect(ctx context.Context, cfg *flowfabric.WorkerConfig, clientCfg *flowfabric.Config) (*flowfabric.Worker, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if cfg.Store == "" {
		return nil, &flowfabric.ConfigError{Field: "store", Message: "Connect needs the URL of a store; use flowfabric.NewWorker for a client you built"}
	}
	log := cfg.Logger
	if clientCfg != nil && clientCfg.Logger != nil {
		log = clientCfg.Logger
	}
	store, err := Open(ctx, cfg.Store, &OpenOpts{Logger: log})
	if err != nil {
		return nil, &flowfabric.ConfigError{Field: "store", Message: err.Error(), Err: err}
	}
	client, err := flowfabric.NewClient(store, clientCfg)
	if err != nil {
		_ = store.Close()
		return nil, err
	}
	client.Start(context.WithoutCancel(ctx))
	var feed *flowfabric.Subscription
	if _, ok := store.(ffstore.ChangeNotifier); ok {
		ns := cfg.Namespace
		if ns == "" {
			ns = fftype.DefaultNamespace
		}
		feed, err = client.Subscribe(context.WithoutCancel(ctx), flowfabric.EventFilter{Namespace: ns,
			Types: []flowfabric.EventType{fftype.EventCompleted, fftype.EventFailed, fftype.EventCancelled, fftype.EventExpired}},
			flowfabric.CursorEnd)
		if err != nil {
			client.Stop()
			_ = store.Close()
			return nil, err
		}
	}
	w, err := flowfabric.NewWorker(ctx, client, cfg, &flowfabric.WorkerOpts{Completions: feed, OwnClient: true})
	if err != nil {
		if feed != nil {
			feed.Close()
		}
		client.Stop()
		_ = store.Close()
		return nil, err
	}
	return w, nil
}
