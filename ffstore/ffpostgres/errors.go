package ffpostgres

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"strings"

	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/puddle/v2"

	"github.com/flowfabric/flowfabric/ffstore"
	"github.com/flowfabric/flowfabric/fftype"
)

// Error codes specific to this store, carried by the *fftype.Error values it returns.
const (
	// CodeSchemaTooNew is the code of the unavailable error returned when the database's
	// schema was written by a newer binary. Its cause is a *[SchemaVersionError].
	CodeSchemaTooNew = "schema_too_new"
	// CodeSchemaTooOld is the code of the unavailable error returned when the schema is
	// missing or older than this binary's and Options.Migrate is false: run [Migrate].
	// Its cause is a *[SchemaVersionError].
	CodeSchemaTooOld = "schema_too_old"
	// CodeShardCountMismatch is the code of the validation error returned when
	// Options.Shards names a count other than the one the schema was created with.
	CodeShardCountMismatch = "shard_count_mismatch"
)

// SchemaVersionError says that the database schema is at a version this binary cannot use
// as it is. It is the cause (errors.As) of the errors coded [CodeSchemaTooNew] and
// [CodeSchemaTooOld].
type SchemaVersionError struct {
	Schema string // the Postgres schema
	Found  int    // the version in the database; 0 when the schema does not exist
	Known  int    // the newest version this binary knows, [SchemaVersion]
}

func (e *SchemaVersionError) Error() string {
	if e.Found > e.Known {
		return fmt.Sprintf("schema %q is at version %d, newer than this binary's %d: upgrade the binary", e.Schema, e.Found, e.Known)
	}
	return fmt.Sprintf("schema %q is at version %d but this binary needs version %d: run ffpostgres.Migrate (the CLI's migrate command) or open the store with Options.Migrate set", e.Schema, e.Found, e.Known)
}

func errClosed() error { return ffstore.Closed("ffpostgres") }

func errTxDone() error {
	return fftype.Validationf(fftype.CodeInvalidInput, "ffpostgres: transaction used after its unit ended")
}

// SQLSTATE codes and classes the store tells apart.
const (
	stateSerializationFailure  = "40001"
	stateDeadlockDetected      = "40P01"
	stateLockNotAvailable      = "55P03"
	stateUniqueViolation       = "23505"
	stateQueryCanceled         = "57014"
	stateProgramLimitExceeded  = "54000"
	stateInvalidCatalogName    = "3D000"
	stateInvalidPassword       = "28P01"
	stateUndefinedObject       = "42704"
	stateInsufficientPrivilege = "42501"
	stateReadOnlyTransaction   = "25006"
	stateIdleInTxTimeout       = "25P03"
	stateTransactionTimeout    = "25P04"
)

// cannotUse says why the database cannot be used, for a SQLSTATE of class 28, 3D000 or
// 42501.
func cannotUse(state string) string {
	switch state {
	case stateInvalidCatalogName:
		return "it does not exist; create it, or name another in the connection string"
	case stateInvalidPassword:
		return "password authentication failed: no such role, or the wrong password; check the connection string's user and password"
	case stateInsufficientPrivilege:
		return "the role lacks a privilege it needs, such as CONNECT on the database, CREATE on it to create the schema, or CREATE on the schema to create the tables"
	default: // 28000, invalid_authorization_specification, and the rest of class 28
		return "the server refused the role: it does not exist, may not log in, or pg_hba.conf does not let it in"
	}
}

// readOnlyServer reports whether err says the connection's server refuses writes (a
// standby, or a primary turned read-only in a failover): a connection to drop, since
// the next one may reach the new primary.
func readOnlyServer(err error) bool {
	var pgErr *pgconn.PgError
	return errors.Is(err, pgconn.ErrReadOnlyConnection) || errors.As(err, &pgErr) && pgErr.Code == stateReadOnlyTransaction
}

// translate turns an error from pgx into an *fftype.Error. It is the only place pgx
// errors are interpreted; *fftype.Error values pass through unchanged, and so does the
// error of ctx, the caller's context, once it is done (pgx wraps it; callers compare with
// the bare one). A timeout of the store's own (the connect timeout, a bound of
// ffstore.WithStoreTimeout) is an unavailable error. op says what failed, for the message.
func translate(ctx context.Context, err error, op string) error {
	if err == nil {
		return nil
	}
	var fe *fftype.Error
	if errors.As(err, &fe) {
		return err
	}
	if ctx.Err() != nil && (errors.Is(err, context.Canceled) || errors.Is(err, context.DeadlineExceeded)) {
		return ffstore.ContextEnded(ctx, "postgres", op)
	}
	if errors.Is(err, puddle.ErrClosedPool) {
		// The pool of a store made by New, closed by its owner before the store: no call
		// can succeed again, so none is worth retrying.
		return errClosed()
	}
	e := &fftype.Error{
		Kind: fftype.KindUnavailable, Code: fftype.CodeStoreUnavailable, Retryable: true,
		Message: "postgres " + op + " failed", Err: err,
	}
	if readOnlyServer(err) {
		// A server that refuses writes: a standby, or a primary turned read-only during a
		// failover. The store drops such a connection and Open's connections reach only a
		// writable server, so the next connection may find the new primary.
		e.Message = fmt.Sprintf("postgres %s: the database is read-only (a standby, or a failover in progress)", op)
		return e
	}
	var pgErr *pgconn.PgError
	var connectErr *pgconn.ConnectError
	if errors.As(err, &pgErr) {
		switch {
		case pgErr.Code == stateSerializationFailure || pgErr.Code == stateDeadlockDetected ||
			pgErr.Code == stateLockNotAvailable || pgErr.Code == stateUniqueViolation:
			// A concurrent unit won: a deadlock or serialization failure, or a record this
			// unit read as missing was created meanwhile. The engine retries the unit.
			e.Kind, e.Code = fftype.KindContention, fftype.CodeStoreConflict
			e.Message = fmt.Sprintf("postgres %s: a concurrent unit changed what this one read (SQLSTATE %s)", op, pgErr.Code)
		case pgErr.Code == stateQueryCanceled:
			e.Message = fmt.Sprintf("postgres %s: statement timeout", op)
		case pgErr.Code == stateProgramLimitExceeded && pgErr.ConstraintName != "":
			// An index row over the B-tree limit (about 2.7 KB): Postgres names the index
			// only for that. Only keys and queue names are indexed, never a payload, so a
			// name built from the input is too long, and stays too long.
			e.Kind, e.Code, e.Retryable = fftype.KindValidation, fftype.CodeInvalidInput, false
			e.Message = fmt.Sprintf("postgres %s: a record key or queue name is too long for index %s: %s", op, pgErr.ConstraintName, pgErr.Message)
		case pgErr.Code == stateProgramLimitExceeded:
			e.Kind, e.Code, e.Retryable = fftype.KindTooLarge, fftype.CodePayloadTooLarge, false
			e.Message = fmt.Sprintf("postgres %s: value exceeds a Postgres limit: %s", op, pgErr.Message)
		case strings.HasPrefix(pgErr.Code, "08"), strings.HasPrefix(pgErr.Code, "53"),
			strings.HasPrefix(pgErr.Code, "57"), strings.HasPrefix(pgErr.Code, "58"),
			pgErr.Code == stateIdleInTxTimeout, pgErr.Code == stateTransactionTimeout:
			// Connection exceptions, insufficient resources, operator intervention
			// (shutdown, restart), system errors, a session the server ended for taking
			// too long: nothing was written, and the database may come back.
		case errors.As(err, &connectErr) && (strings.HasPrefix(pgErr.Code, "22") || pgErr.Code == stateUndefinedObject):
			// Opening a connection, the server refused a setting the connection string
			// gave it (an unknown parameter, a bad value): the input is wrong, and stays
			// wrong.
			e.Kind, e.Code, e.Retryable = fftype.KindValidation, fftype.CodeInvalidInput, false
			e.Message = fmt.Sprintf("postgres %s: the database refused a setting of the connection string: %s", op, pgErr.Message)
		case strings.HasPrefix(pgErr.Code, "22"):
			// Data exceptions: a value the columns cannot hold, such as a NUL byte or
			// invalid UTF-8 in text. The input is wrong, and stays wrong.
			e.Kind, e.Code, e.Retryable = fftype.KindValidation, fftype.CodeInvalidInput, false
			e.Message = fmt.Sprintf("postgres %s: the database refused a value: %s", op, pgErr.Message)
		case strings.HasPrefix(pgErr.Code, "28"), pgErr.Code == stateInvalidCatalogName, pgErr.Code == stateInsufficientPrivilege:
			// The role cannot log in, the database does not exist, or the role lacks a
			// privilege (such as CONNECT on the database): not until an operator acts.
			e.Retryable = false
			e.Message = fmt.Sprintf("postgres %s: cannot use the database: %s (SQLSTATE %s)", op, cannotUse(pgErr.Code), pgErr.Code)
		default:
			e.Retryable = false
		}
		return e
	}
	var netErr net.Error
	switch {
	case errors.As(err, &connectErr):
		e.Message = "postgres " + op + ": cannot connect to the database"
	case errors.As(err, &netErr), errors.Is(err, io.EOF), errors.Is(err, io.ErrUnexpectedEOF), pgconn.SafeToRetry(err):
		e.Message = "postgres " + op + ": connection lost"
	case errors.Is(err, context.DeadlineExceeded):
		e.Message = "postgres " + op + ": timed out"
	}
	return e
}
