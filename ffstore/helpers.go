package ffstore

import (
	"context"
	"errors"
	"fmt"
	"net/url"
	"slices"
	"strings"
	"sync/atomic"
	"time"

	"github.com/flowfabric/flowfabric/fftype"
)

// DisjointPrefixes returns prefixes sorted and without the ones another prefix covers, so
// that no queue name matches two of them: a store answering QueueHeads can then report
// each queue once.
func DisjointPrefixes(prefixes []string) []string {
	sorted := slices.Clone(prefixes)
	slices.Sort(sorted)
	out := sorted[:0]
	for _, p := range sorted {
		// Sorted, a prefix comes before every string it covers, and so does every string
		// between them: comparing with the last kept prefix is enough.
		if len(out) > 0 && strings.HasPrefix(p, out[len(out)-1]) {
			continue
		}
		out = append(out, p)
	}
	return out
}

// PrefixEnd returns the smallest string greater than every string that starts with p, for
// a store that answers QueueHeads with a range [p, end) of queue names; ok is false when
// there is none (p is empty or all 0xff bytes), and the range has no end.
func PrefixEnd(p string) (end string, ok bool) {
	b := []byte(p)
	for i := len(b) - 1; i >= 0; i-- {
		if b[i] < 0xff {
			b[i]++
			return string(b[:i+1]), true
		}
	}
	return "", false
}

// MemberRecordKeys returns the record keys "<kind>:<member>" of members, for each of kinds,
// in that order: the keys PopFetcher.PopDueFetch reads.
func MemberRecordKeys(members []string, kinds []string) []string {
	keys := make([]string, 0, len(members)*len(kinds))
	for _, m := range members {
		for _, kind := range kinds {
			keys = append(keys, kind+":"+m)
		}
	}
	return keys
}

// Closed returns the error a closed store answers every call with: unavailable, and not
// retryable, since it stays closed. store names the store ("ffsqlite").
func Closed(store string) error {
	e := fftype.NewError(fftype.KindUnavailable, fftype.CodeStoreUnavailable, "%s: store is closed", store)
	e.Retryable = false
	return e
}

// WithStoreTimeout bounds parent by d, for work that a store bounds on its own rather than
// by a caller's context: a commit that runs on after its caller left, a read callers
// share, a check at open. Its running out is told apart from the caller's context ending
// by [ContextEnded].
func WithStoreTimeout(parent context.Context, d time.Duration) (context.Context, context.CancelFunc) {
	return context.WithTimeoutCause(parent, d, &storeTimeout{d: d})
}

// storeTimeout is the cause of a context of WithStoreTimeout whose bound ran out.
type storeTimeout struct{ d time.Duration }

func (e *storeTimeout) Error() string { return "the store's bound of " + e.d.String() + " ran out" }

// ContextEnded returns the error of a call by store (doing op) whose ctx ended: ctx's
// error, unless ctx ended because a bound of [WithStoreTimeout] ran out. Then it is a
// retryable unavailable error saying that the store did not answer within the bound: the
// bare context error would tell the caller that its own context ended.
func ContextEnded(ctx context.Context, store, op string) error {
	var st *storeTimeout
	if !errors.As(context.Cause(ctx), &st) {
		return ctx.Err()
	}
	return &fftype.Error{
		Kind: fftype.KindUnavailable, Code: fftype.CodeStoreUnavailable, Retryable: true,
		Message: fmt.Sprintf("%s %s: no answer from the store within %s", store, op, st.d), Err: st,
	}
}

// CursorExpired returns the error ReadEvents gives when events after `after` on shard were
// trimmed (the shard's trim point is trimmed).
func CursorExpired(shard int, after, trimmed uint64) error {
	return fftype.NewError(fftype.KindState, fftype.CodeCursorExpired,
		"events of shard %d after %d are gone: the log was trimmed through %d", shard, after, trimmed)
}

// ConflictCounter is a building block for stores' ConflictInjector ability (see package
// ffstoretest): Inject schedules conflicts, and a store calls Take before committing a
// unit whose fn succeeded, failing the unit with a conflict when it returns true. The zero
// value is ready to use and safe for concurrent use.
type ConflictCounter struct {
	n atomic.Int64
}

// Inject schedules n more conflicts; n <= 0 adds none.
func (c *ConflictCounter) Inject(n int) {
	if n > 0 {
		c.n.Add(int64(n))
	}
}

// Pending reports whether a conflict is scheduled, without consuming it.
func (c *ConflictCounter) Pending() bool { return c.n.Load() > 0 }

// Take consumes one scheduled conflict and reports whether there was one.
func (c *ConflictCounter) Take() bool {
	for {
		n := c.n.Load()
		if n <= 0 {
			return false
		}
		if c.n.CompareAndSwap(n, n-1) {
			return true
		}
	}
}

// Conflict returns the error a store gives a unit that lost to an injected conflict.
func Conflict(store string, shard int) error {
	return fftype.NewError(fftype.KindContention, fftype.CodeStoreConflict, "%s: injected conflict on shard %d", store, shard)
}

// EscapeUserinfoHint tells how to write a user name or password that holds a character a
// URL gives a meaning; stores' URL errors end with it where such a character is the likely
// cause.
const EscapeUserinfoHint = "percent-escape any / ? # @ : or % in the user name or password (as %2F %3F %23 %40 %3A %25)"

// URLQuery returns the parameters of the store URL rawURL (or of its part from the path
// on), which every store's URL parser calls. Unlike url.URL.Query, which drops the pairs
// it cannot parse, it refuses a query that does not parse (a ';' between parameters, a bad
// escape), so that a typo cannot leave a setting silently at its default; and it refuses
// any '#', which url.Parse takes for the start of a fragment, cutting a path or a value
// short there (a '#' that ends the URL leaves an empty fragment: the URL is cut with no
// fragment to show for it). Its errors quote nothing of the URL, which may hold a password.
func URLQuery(rawURL string) (url.Values, error) {
	if strings.Contains(rawURL, "#") {
		return nil, errors.New("the URL has a '#', which would end it there; escape it as %23")
	}
	_, query, _ := strings.Cut(rawURL, "?")
	return url.ParseQuery(query)
}
