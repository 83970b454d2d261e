package ffvalkey

import (
	"context"
	_ "embed"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"time"

	"github.com/flowfabric/flowfabric/ffstore"
	"github.com/redis/rueidis"
)

// librarySource is the store's function library. Its name, flowfabric_v5, and its
// function names (ffv5_*) carry the version, so that binaries of two versions can run
// against one server during a rolling upgrade, each with its own functions.
//
//go:embed library.lua
var librarySource string

// LibraryName is the name of the function library this binary loads.
const LibraryName = "flowfabric_v5"

// Function names of the library.
const (
	fnPop     = "ffv5_pop"
	fnRelease = "ffv5_release"
	fnRange   = "ffv5_range"
	fnBounds  = "ffv5_bounds"
	fnUnit    = "ffv5_unit"
	fnCheck   = "ffv5_check"
	fnTrim    = "ffv5_trim"
	fnUnhint  = "ffv5_unhint"
)

// Retry policy of calls whose command did not run. While the server says it is busy
// (TRYAGAIN during a slot migration, CLUSTERDOWN, MASTERDOWN or READONLY during a
// failover, LOADING after a restart), a call waits as long as its ctx allows, but no
// longer than retryBusyMax, as long as a commit's own deadline, so that a call whose ctx
// never ends still fails on a Cluster that stays down. After a connection that could not
// be made, or the library found missing, it tries retryAttempts times in all. The waits
// double from retryFirst up to retryMax.
const (
	retryBusyMax  = commitTimeout
	retryAttempts = 8
	retryFirst    = 5 * time.Millisecond
	retryMax      = 500 * time.Millisecond
)

// backoff paces the attempts of one call.
type backoff struct {
	attempt int           // the attempt under way, from 1
	delay   time.Duration // the next wait
	began   time.Time
}

func newBackoff() *backoff { return &backoff{attempt: 1, delay: retryFirst, began: time.Now()} }

// again reports whether a call whose attempt failed with an error of class may wait and
// try again. A busy server is waited for only while the wait ends before ctx's deadline
// and retryBusyMax: the caller then gets the server's error rather than ctx's.
func (b *backoff) again(ctx context.Context, class errorClass) bool {
	switch class {
	case classRetry, classReload:
		return b.attempt < retryAttempts
	case classBusy:
		end := b.began.Add(retryBusyMax)
		if d, ok := ctx.Deadline(); ok && d.Before(end) {
			end = d
		}
		return time.Now().Add(b.delay).Before(end)
	}
	return false
}

// wait sleeps the next wait, doubling the one after up to retryMax; it reports false if
// ctx ended first.
func (b *backoff) wait(ctx context.Context) bool {
	if !sleepCtx(ctx, b.delay) {
		return false
	}
	b.delay = min(2*b.delay, retryMax)
	return true
}

// loader loads the library on every primary, once at a time: callers that find it
// missing at the same moment share one load.
type loader struct {
	client rueidis.Client
	mu     sync.Mutex    // held while loading
	gen    atomic.Uint64 // loads done
	after  func(ctx context.Context) error
}

// load loads the library on every node unless a load finished after the caller's call
// failed (seen is the generation the caller observed before its call).
func (l *loader) load(ctx context.Context, seen uint64) error {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.gen.Load() != seen {
		return nil
	}
	if err := loadLibrary(ctx, l.client); err != nil {
		return err
	}
	if l.after != nil {
		if err := l.after(ctx); err != nil {
			return err
		}
	}
	l.gen.Add(1)
	return nil
}

func (l *loader) generation() uint64 { return l.gen.Load() }

// loadLibrary loads the library with FUNCTION LOAD REPLACE on every node that takes
// writes (replicas get it from their primary). Loading the same source again changes
// nothing, so it is safe to do at any time from any number of processes.
func loadLibrary(ctx context.Context, client rueidis.Client) error {
	var errs []error
	loaded := 0
	for addr, node := range client.Nodes() {
		err := node.Do(ctx, node.B().FunctionLoad().Replace().FunctionCode(librarySource).Build()).Error()
		var re *rueidis.RedisError
		if errors.As(err, &re) && errorCode(re) == "READONLY" {
			continue // a replica
		}
		if err != nil {
			errs = append(errs, fmt.Errorf("%s: %w", addr, err))
			continue
		}
		loaded++
	}
	if len(errs) > 0 {
		return translate(errors.Join(errs...), "loading the function library "+LibraryName)
	}
	if loaded == 0 {
		return translate(errors.New("no primary node is known"), "loading the function library "+LibraryName)
	}
	return nil
}

// do runs the command build returns, retrying (with a fresh command each time) while the
// server answers that it did not run it: TRYAGAIN, CLUSTERDOWN, LOADING, MASTERDOWN,
// READONLY, a connection that could not be made, and — after loading the library again —
// a missing function (a server restarted without persistence, or a failover to a node
// without the library). MOVED and ASK are followed by the client. An idempotent command
// (a read, or a write whose second run changes nothing) is also retried after a network
// error, which may have lost only the reply. How long it keeps trying is the retry
// policy's (see retryBusyMax). op names the call for errors.
func (s *Store) do(ctx context.Context, op string, idempotent bool, build func() rueidis.Completed) (rueidis.RedisResult, error) {
	res, _, err := s.doRiding(ctx, op, idempotent, build)
	return res, err
}

// doRiding is do with riders: commands sent in the same round trip as the first attempt
// of build's, whose results it returns. If that attempt fails, the riders are not sent
// again and their results are nil. Riders must not depend on whether build's command ran.
func (s *Store) doRiding(ctx context.Context, op string, idempotent bool, build func() rueidis.Completed, riders ...rueidis.Completed) (res rueidis.RedisResult, rode []rueidis.RedisResult, err error) {
	err = s.retry(ctx, op, idempotent, func(first bool) error {
		if first && len(riders) > 0 {
			all := s.client.DoMulti(ctx, append([]rueidis.Completed{build()}, riders...)...)
			res, rode = all[0], all[1:]
		} else {
			res, rode = s.client.Do(ctx, build()), nil
		}
		return replyError(res)
	})
	if err != nil {
		return res, nil, err
	}
	return res, rode, nil
}

// doMulti runs idempotent commands in one round trip (pipelined per node), retrying the
// whole batch as do does.
func (s *Store) doMulti(ctx context.Context, op string, build func() []rueidis.Completed) (res []rueidis.RedisResult, err error) {
	err = s.retry(ctx, op, true, func(bool) error {
		res = s.client.DoMulti(ctx, build()...)
		for _, r := range res {
			if err := replyError(r); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	return res, nil
}

// replyError is the error of a reply, if any; a nil reply is not one.
func replyError(res rueidis.RedisResult) error {
	if err := res.Error(); err != nil && !rueidis.IsRedisNil(err) {
		return err
	}
	return nil
}

// retry calls attempt (first is set on the first call) until it returns nil, ctx ends, or
// it fails in a way do's rules do not retry, and returns attempt's last error translated
// (or ctx's).
func (s *Store) retry(ctx context.Context, op string, idempotent bool, attempt func(first bool) error) error {
	for b := newBackoff(); ; b.attempt++ {
		seen := s.loader.generation()
		err := attempt(b.attempt == 1)
		if err == nil {
			return nil
		}
		class := classify(ctx, err)
		if class == classAmbiguous && idempotent {
			class = classRetry
		}
		switch {
		case class == classContextEnd:
			return ffstore.ContextEnded(ctx, "ffvalkey", op)
		case !b.again(ctx, class):
			return translate(err, op)
		case class == classReload:
			s.log.Warn("ffvalkey: the function library is missing; loading it again", "err", err)
			lerr := s.loader.load(ctx, seen)
			if lerr == nil {
				continue
			}
			if ctx.Err() != nil {
				return ffstore.ContextEnded(ctx, "ffvalkey", op)
			}
			s.log.Warn("ffvalkey: loading the function library failed", "err", lerr)
		}
		if !b.wait(ctx) {
			return ffstore.ContextEnded(ctx, "ffvalkey", op)
		}
	}
}

// sleepCtx waits d or until ctx ends; it reports whether d passed.
func sleepCtx(ctx context.Context, d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return false
	case <-t.C:
		return true
	}
}
