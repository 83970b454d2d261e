package ffcli

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/flowfabric/flowfabric/ffconnect"
	"github.com/flowfabric/flowfabric/ffstore"
	"github.com/flowfabric/flowfabric/ffstore/ffpostgres"
	"github.com/flowfabric/flowfabric/ffstore/ffsqlite"
	"github.com/flowfabric/flowfabric/ffstore/ffvalkey"
)

// This file opens the fresh stores benchmark runs own; which store a URL names is
// ffconnect's to say, as for every other command.

// sqliteURL returns the sqlite:// URL of the file at path, made absolute: characters a
// URL gives a meaning, such as '%', '?' and '#', are escaped, so the URL names exactly
// that file.
func sqliteURL(path string) (string, error) {
	abs, err := filepath.Abs(path)
	if err != nil {
		return "", err
	}
	return (&url.URL{Scheme: "sqlite", Path: filepath.ToSlash(abs)}).String(), nil
}

// freshStore is a store a benchmark run created and owns: remove closes it and deletes
// whatever it created on disk.
type freshStore struct {
	store  ffstore.Store
	kind   string // "sqlite" or "mem"
	sync   string // sqlite: "full" or "normal"
	path   string // sqlite: the file
	remove func() error
}

// openFreshStore opens a new, empty store named by spec, a store URL as elsewhere (its
// scheme read by [ffconnect.KindOf]) or plainly "mem" for the in-memory store. An sqlite:
// URL names a file that does not exist yet (the run creates it and removes it afterwards,
// so an existing file is refused rather than overwritten); Postgres gets a fresh schema
// and Redis a fresh key prefix. sync, if not empty, overrides an SQLite URL's synchronous
// setting.
func openFreshStore(ctx context.Context, spec, sync string) (*freshStore, error) {
	if spec == "mem" {
		spec = "mem:"
	}
	kind, err := ffconnect.KindOf(spec)
	if err != nil {
		return nil, err
	}
	if sync != "" && kind != ffconnect.KindSQLite {
		return nil, errors.New("-sync applies to sqlite stores only")
	}
	switch kind {
	case ffconnect.KindMem:
		s, err := ffconnect.Open(ctx, spec, nil)
		if err != nil {
			return nil, err
		}
		return &freshStore{store: s, kind: "mem", remove: s.Close}, nil
	case ffconnect.KindSQLite:
		path, opts, err := ffsqlite.ParseURL(spec)
		if err != nil {
			return nil, err
		}
		if sync != "" {
			opts.Synchronous = ffsqlite.Synchronous(strings.ToLower(sync))
		}
		if _, err := os.Stat(path); err == nil {
			return nil, fmt.Errorf("%s exists: a benchmark run needs a fresh file, and deletes it afterwards; remove it or name another", path)
		} else if !errors.Is(err, fs.ErrNotExist) {
			return nil, err
		}
		s, err := ffsqlite.Open(ctx, path, opts)
		if err != nil {
			return nil, err
		}
		synchronous := string(opts.Synchronous)
		if synchronous == "" {
			synchronous = string(ffsqlite.SynchronousFull)
		}
		return &freshStore{store: s, kind: "sqlite", sync: synchronous, path: s.Path(), remove: func() error {
			err := s.Close()
			for _, suffix := range []string{"", "-wal", "-shm", "-journal"} {
				if rerr := os.Remove(s.Path() + suffix); rerr != nil && !errors.Is(rerr, fs.ErrNotExist) {
					err = errors.Join(err, rerr)
				}
			}
			return err
		}}, nil
	case ffconnect.KindPostgres:
		connString, opts, err := ffpostgres.ParseURL(spec)
		if err != nil {
			return nil, err
		}
		// A fresh schema per run, named after the URL's (or the default) schema, dropped
		// afterwards.
		base := opts.Schema
		if base == "" {
			base = ffpostgres.DefaultSchema
		}
		opts.Schema = fmt.Sprintf("%.30s_bench_%d", base, time.Now().UnixNano())
		opts.Migrate = true
		s, err := ffpostgres.Open(ctx, connString, opts)
		if err != nil {
			return nil, err
		}
		return &freshStore{store: s, kind: "postgres", remove: func() error {
			err := ffpostgres.DropSchema(context.WithoutCancel(ctx), s.Pool(), s.Schema())
			return errors.Join(err, s.Close())
		}}, nil
	default: // ffconnect.KindValkey
		opts, err := ffvalkey.ParseURL(spec)
		if err != nil {
			return nil, err
		}
		// A fresh key prefix per run, named after the URL's (or the default) prefix; its
		// keys are deleted afterwards.
		base := opts.KeyPrefix
		if base == "" {
			base = ffvalkey.DefaultKeyPrefix
		}
		s, err := ffvalkey.Open(ctx, spec, &ffvalkey.Options{KeyPrefix: fmt.Sprintf("%.30s-bench-%d", base, time.Now().UnixNano())})
		if err != nil {
			return nil, err
		}
		return &freshStore{store: s, kind: "redis", remove: func() error {
			err := s.Drop(context.WithoutCancel(ctx))
			return errors.Join(err, s.Close())
		}}, nil
	}
}
