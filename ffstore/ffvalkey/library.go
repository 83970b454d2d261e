package ffvalkey

import (
	"context"
	_ "embed"
	"errors"
	"fmt"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/redis/rueidis"
)

// librarySource is the store's function library. Its name, flowfabric_v3, and its
// function names (ffv3_*) carry the version, so that binaries of two versions can run
// against one server during a rolling upgrade, each with its own functions.
//
//go:embed library.lua
var librarySource string

// LibraryName is the name of the function library this binary loads.
const LibraryName = "flowfabric_v3"

// Function names of the library.
const (
	fnPop     = "ffv3_pop"
	fnRelease = "ffv3_release"
	fnRange   = "ffv3_range"
	fnBounds  = "ffv3_bounds"
	fnUnit    = "ffv3_unit"
	fnCheck   = "ffv3_check"
	fnTrim    = "ffv3_trim"
	fnUnhint  = "ffv3_unhint"
)

// Retry policy of calls whose command did not run (TRYAGAIN, CLUSTERDOWN, LOADING, a
// connection that could not be made) or found the library missing.
const (
	retryAttempts = 8
	retryFirst    = 5 * time.Millisecond
	retryMax      = 500 * time.Millisecond
)

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
		if errors.As(err, &re) && strings.HasPrefix(re.Error(), "READONLY") {
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
// without the library). MOVED and ASK are followed by the client. readOnly commands are
// also retried after network errors, which may have lost only the reply. op names the
// call for errors.
func (s *Store) do(ctx context.Context, op string, readOnly bool, build func() rueidis.Completed) (rueidis.RedisResult, error) {
	res, _, err := s.doRiding(ctx, op, readOnly, build)
	return res, err
}

// doRiding is do with riders: commands sent in the same round trip as the first attempt
// of build's, whose results it returns. If that attempt fails, the riders are not sent
// again and their results are nil. Riders must not depend on whether build's command ran.
func (s *Store) doRiding(ctx context.Context, op string, readOnly bool, build func() rueidis.Completed, riders ...rueidis.Completed) (rueidis.RedisResult, []rueidis.RedisResult, error) {
	delay := retryFirst
	for attempt := 1; ; attempt++ {
		seen := s.loader.generation()
		var res rueidis.RedisResult
		var rode []rueidis.RedisResult
		if attempt == 1 && len(riders) > 0 {
			all := s.client.DoMulti(ctx, append([]rueidis.Completed{build()}, riders...)...)
			res, rode = all[0], all[1:]
		} else {
			res = s.client.Do(ctx, build())
		}
		err := res.Error()
		if err == nil || rueidis.IsRedisNil(err) {
			return res, rode, nil
		}
		class := classify(ctx, err)
		if class == classAmbiguous && readOnly {
			class = classRetry
		}
		switch {
		case class == classContextEnd:
			return res, nil, ctx.Err()
		case class == classReload && attempt < retryAttempts:
			s.log.Warn("ffvalkey: the function library is missing; loading it again", "err", err)
			if lerr := s.loader.load(ctx, seen); lerr != nil {
				if ctx.Err() != nil {
					return res, nil, ctx.Err()
				}
				s.log.Warn("ffvalkey: loading the function library failed", "err", lerr)
				if !sleepCtx(ctx, delay) {
					return res, nil, ctx.Err()
				}
				delay = min(2*delay, retryMax)
			}
			continue
		case class == classRetry && attempt < retryAttempts:
			if !sleepCtx(ctx, delay) {
				return res, nil, ctx.Err()
			}
			delay = min(2*delay, retryMax)
			continue
		}
		return res, nil, translate(err, op)
	}
}

// doMulti runs read-only commands in one round trip (pipelined per node), retrying the
// whole batch as do does.
func (s *Store) doMulti(ctx context.Context, op string, build func() []rueidis.Completed) ([]rueidis.RedisResult, error) {
	delay := retryFirst
	for attempt := 1; ; attempt++ {
		seen := s.loader.generation()
		res := s.client.DoMulti(ctx, build()...)
		var err error
		for _, r := range res {
			if e := r.Error(); e != nil && !rueidis.IsRedisNil(e) {
				err = e
				break
			}
		}
		if err == nil {
			return res, nil
		}
		class := classify(ctx, err)
		if class == classAmbiguous {
			class = classRetry
		}
		switch {
		case class == classContextEnd:
			return nil, ctx.Err()
		case class == classReload && attempt < retryAttempts:
			if lerr := s.loader.load(ctx, seen); lerr != nil && !sleepCtx(ctx, delay) {
				return nil, ctx.Err()
			}
			continue
		case class == classRetry && attempt < retryAttempts:
			if !sleepCtx(ctx, delay) {
				return nil, ctx.Err()
			}
			delay = min(2*delay, retryMax)
			continue
		}
		return nil, translate(err, op)
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
