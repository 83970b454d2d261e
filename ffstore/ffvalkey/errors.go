package ffvalkey

import (
	"context"
	"errors"
	"net"
	"strconv"
	"strings"

	"github.com/redis/rueidis"

	"github.com/flowfabric/flowfabric/ffstore"
	"github.com/flowfabric/flowfabric/fftype"
)

// Error codes specific to this store, carried by *fftype.Error values it returns.
const (
	// CodeShardCountMismatch is the code of the validation error Open returns when
	// Options.Shards names a count other than the one the store was created with.
	CodeShardCountMismatch = "shard_count_mismatch"
	// CodeFormatTooNew is the code of the unavailable error Open returns when the keys
	// were written by a newer binary whose data format this one does not know.
	CodeFormatTooNew = "format_too_new"
	// CodeServerTooOld is the code of the unavailable error Open returns for a server
	// older than Redis 7.0 or Valkey 7.2.
	CodeServerTooOld = "server_too_old"
)

// Reasons a ca_file URL parameter is refused, carried by [CAFileError.Reason]; errors.Is
// matches them on the error ParseURL and Open return.
var (
	// ErrCAFileMissing: ca_file is empty or names no file.
	ErrCAFileMissing = errors.New("the CA file does not exist")
	// ErrCAFileUnreadable: the file exists but cannot be read (a directory, no permission).
	ErrCAFileUnreadable = errors.New("the CA file cannot be read")
	// ErrCAFileNotPEM: the file holds no PEM-encoded certificate.
	ErrCAFileNotPEM = errors.New("the CA file holds no PEM certificate")
)

// CAFileError is why the file a store URL's ca_file parameter names cannot serve as the
// CAs to trust. ParseURL and Open return it wrapped in a validation error.
type CAFileError struct {
	Path   string // the file, as the URL gave it
	Reason error  // ErrCAFileMissing, ErrCAFileUnreadable or ErrCAFileNotPEM
	Err    error  // the cause from the file system, if any
}

// Error describes the problem, naming the file.
func (e *CAFileError) Error() string {
	msg := "ca_file " + strconv.Quote(e.Path) + ": " + e.Reason.Error()
	if e.Err != nil {
		msg += ": " + e.Err.Error()
	}
	return msg
}

// Unwrap returns the reason and the cause, so errors.Is matches either.
func (e *CAFileError) Unwrap() []error {
	if e.Err == nil {
		return []error{e.Reason}
	}
	return []error{e.Reason, e.Err}
}

func errClosed() error { return ffstore.Closed("ffvalkey") }

func conflict(format string, args ...any) error {
	return fftype.NewError(fftype.KindContention, fftype.CodeStoreConflict, "ffvalkey: "+format, args...)
}

// errorClass says how the retry loop treats an error from the server or the network.
type errorClass int

const (
	classFatal      errorClass = iota // return it
	classBusy                         // the server did not run the command, and will soon: retry while ctx lasts
	classRetry                        // the command did not run: retry a few times after a back-off
	classReload                       // the function library is missing: load it, then retry
	classAmbiguous                    // the command may or may not have run: return it
	classContextEnd                   // ctx ended: return ctx's error
)

// errorCode returns the code an error reply of the server starts with, such as WRONGTYPE
// or TRYAGAIN, or "ERR" for the server's generic errors. rueidis drops the "ERR " of a
// generic error from its text, whose first word may then be upper-case too ("DB index is
// out of range", "SELECT is not allowed in cluster mode"): only the codes Redis 7 and
// Valkey send count as codes, and a reply with any other first word (a module's or a
// script's own code) is taken for a generic error.
func errorCode(re *rueidis.RedisError) string {
	code, _, _ := strings.Cut(re.Error(), " ")
	switch code {
	case "ASK", "BUSY", "BUSYGROUP", "BUSYKEY", "CLUSTERDOWN", "CROSSSLOT", "DENIED", "EXECABORT",
		"INPROG", "INVALIDOBJ", "IOERR", "LOADING", "MASTERDOWN", "MISCONF", "MOVED", "NOAUTH",
		"NOGOODSLAVE", "NOGROUP", "NOMASTERLINK", "NOPERM", "NOPROTO", "NOQUORUM", "NOREPLICAS",
		"NOSCRIPT", "NOTBUSY", "OOM", "READONLY", "REDIRECT", "TRYAGAIN", "UNBLOCKED", "UNKILLABLE",
		"WRONGPASS", "WRONGTYPE":
		return code
	}
	return "ERR"
}

// classify sorts an error of a call to the server. Only this function, errorCode,
// storeError and connectError look at the server's error text, which is the only way
// Redis reports these conditions.
func classify(ctx context.Context, err error) errorClass {
	if err == nil {
		return classFatal
	}
	if ctx.Err() != nil {
		return classContextEnd
	}
	var re *rueidis.RedisError
	if errors.As(err, &re) {
		switch errorCode(re) {
		// A slot migration, a failover or a restart: these last as long as they last.
		case "TRYAGAIN", "CLUSTERDOWN", "LOADING", "MASTERDOWN", "READONLY":
			return classBusy
		case "NOSCRIPT":
			return classReload
		case "ERR":
			if msg := re.Error(); strings.Contains(msg, "Function not found") || strings.Contains(msg, "Library not found") {
				return classReload
			}
		}
		return classFatal
	}
	// A connection that could not be made never carried the command.
	var op *net.OpError
	if errors.As(err, &op) && op.Op == "dial" {
		return classRetry
	}
	if errors.Is(err, rueidis.ErrClosing) {
		return classFatal
	}
	return classAmbiguous
}

// translate turns an error of a call to the server into an *fftype.Error; what failed is
// op. Errors that are already *fftype.Error and context errors pass through unchanged.
func translate(err error, op string) error {
	if err == nil {
		return nil
	}
	var fe *fftype.Error
	if errors.As(err, &fe) || errors.Is(err, context.Canceled) || errors.Is(err, context.DeadlineExceeded) {
		return err
	}
	return storeError(err, op)
}

// connectError turns the error of rueidis.NewClient connecting to where (the servers and
// the redacted URL) into an *fftype.Error. db is the database the URL selects: a Cluster
// node, which a redis:// URL may name, refuses to select any but 0.
func connectError(err error, where string, db int) error {
	var re *rueidis.RedisError
	if db != 0 && errors.As(err, &re) && strings.Contains(re.Error(), "not allowed in cluster mode") {
		return fftype.Validationf(fftype.CodeInvalidInput,
			"ffvalkey: %s is a Cluster node, and a Cluster has only database 0, not %d (use redis+cluster:// without a database)", where, db)
	}
	// NewClient takes no context: a deadline it reports is its dial timeout, which
	// storeError treats as any other connection that could not be made.
	return storeError(err, "connect to "+where)
}

// storeError is the *fftype.Error for err, an error of the server or the network met
// while doing op: unavailable, and retryable unless trying again cannot help. The
// server's generic errors (a database out of range, a bad client name, an unknown
// command, a script that failed) refuse the command as it was given, so they are not
// retryable, except for the transient ones (transientGeneric).
func storeError(err error, op string) *fftype.Error {
	e := &fftype.Error{Kind: fftype.KindUnavailable, Code: fftype.CodeStoreUnavailable, Retryable: true,
		Message: "ffvalkey: " + op + " failed", Err: err}
	var re *rueidis.RedisError
	switch {
	case errors.Is(err, rueidis.ErrClosing):
		e.Message = "ffvalkey: " + op + ": the store is closed"
		e.Retryable = false
	case errors.As(err, &re):
		switch errorCode(re) {
		case "OOM":
			e.Message = "ffvalkey: " + op + ": the server is out of memory (maxmemory)"
		case "NOAUTH", "WRONGPASS", "NOPERM":
			e.Message = "ffvalkey: " + op + ": the server refused the credentials"
			e.Retryable = false
		case "CROSSSLOT", "WRONGTYPE":
			e.Retryable = false
		case "ERR":
			e.Retryable = transientGeneric(re.Error())
		}
	}
	return e
}

// transientGeneric reports whether msg, a generic error reply (code ERR, which rueidis
// strips), says the server could not run the command now rather than that it refused it:
// a server or Cluster node at its maxclients ("max number of clients reached", "max
// number of clients + cluster connections reached"), or a function an operator killed
// (FUNCTION KILL and SCRIPT KILL stop only one that has not written, the usual way out of
// a BUSY server, so calling again is safe).
func transientGeneric(msg string) bool {
	return strings.HasPrefix(msg, "max number of clients") || strings.HasPrefix(msg, "Script killed by user")
}

// noPermission reports whether err is the server refusing the user a command, a key or a
// channel (NOPERM).
func noPermission(err error) bool {
	var re *rueidis.RedisError
	return errors.As(err, &re) && errorCode(re) == "NOPERM"
}
