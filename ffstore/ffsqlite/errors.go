package ffsqlite

import (
	"context"
	"errors"
	"fmt"

	"github.com/flowfabric/flowfabric/ffstore"
	"github.com/flowfabric/flowfabric/fftype"
)

// Error codes specific to this store, carried by *fftype.Error values it returns.
const (
	// CodeSchemaTooNew is the code of the unavailable error Open returns when the file was
	// written by a newer binary whose schema this one does not know.
	CodeSchemaTooNew = "schema_too_new"
	// CodeShardCountMismatch is the code of the validation error Open returns when
	// Options.Shards names a count other than the one the file was created with.
	CodeShardCountMismatch = "shard_count_mismatch"
	// CodeNotAStore is the code of the validation error Open returns for an SQLite file
	// of another application: one that holds tables or an application id (PRAGMA
	// application_id) other than a store's.
	CodeNotAStore = "not_a_store"
)

// SQLite primary result codes we classify (the low byte of an extended code).
const (
	sqliteBusy     = 5
	sqliteLocked   = 6
	sqliteNoMem    = 7
	sqliteReadOnly = 8
	sqliteIOErr    = 10
	sqliteCorrupt  = 11
	sqliteFull     = 13
	sqliteCantOpen = 14
	sqliteProtocol = 15
	sqliteTooBig   = 18
	sqlitePerm     = 3
	sqliteNotADB   = 26
)

func errClosed() error { return ffstore.Closed("ffsqlite") }

// translate turns an error from the driver or database/sql into an *fftype.Error. It is
// the only place driver errors are interpreted; errors that are already *fftype.Error and
// context errors pass through unchanged. op says what failed, for the message.
func translate(err error, op string) error {
	if err == nil {
		return nil
	}
	var fe *fftype.Error
	if errors.As(err, &fe) || errors.Is(err, context.Canceled) || errors.Is(err, context.DeadlineExceeded) {
		return err
	}
	code, ok := sqliteCode(err)
	if !ok {
		return &fftype.Error{
			Kind: fftype.KindUnavailable, Code: fftype.CodeStoreUnavailable, Retryable: true,
			Message: "sqlite " + op + " failed", Err: err,
		}
	}
	e := &fftype.Error{
		Kind: fftype.KindUnavailable, Code: fftype.CodeStoreUnavailable, Retryable: true,
		Message: fmt.Sprintf("sqlite %s failed", op), Err: err,
	}
	switch code & 0xff {
	case sqliteBusy, sqliteLocked:
		e.Message = fmt.Sprintf("sqlite %s: database is locked by another connection or process (busy timeout expired)", op)
	case sqliteCorrupt, sqliteNotADB:
		e.Code = fftype.CodeCorruption
		e.Message = fmt.Sprintf("sqlite %s: database file is corrupt or not a database", op)
		e.Retryable = false
	case sqliteTooBig:
		e.Kind = fftype.KindTooLarge
		e.Code = fftype.CodePayloadTooLarge
		e.Message = fmt.Sprintf("sqlite %s: value exceeds SQLite's size limit", op)
		e.Retryable = false
	case sqliteReadOnly, sqliteCantOpen, sqlitePerm:
		e.Retryable = false
	case sqliteFull:
		e.Message = fmt.Sprintf("sqlite %s: disk full", op)
	case sqliteIOErr, sqliteNoMem, sqliteProtocol:
	default:
		e.Retryable = false
	}
	return e
}
