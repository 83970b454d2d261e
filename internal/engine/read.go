package engine

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"sort"
	"strconv"
	"strings"

	"github.com/flowfabric/flowfabric/ffstore"
	"github.com/flowfabric/flowfabric/fftype"
)

// Listing bounds.
const (
	defaultListLimit = 100
	maxListLimit     = 1000
	listBatch        = 256
	maxListScan      = 4096 // records examined per shard per page before a partial page is returned
)

// view runs fn on the shard of id.
func (e *Engine) view(ctx context.Context, id fftype.ExecutionID, fn func(tx ffstore.ReadTx) error) error {
	shard, err := e.checkID(id)
	if err != nil {
		return err
	}
	return e.store.View(ctx, shard, fn)
}

// Get returns the execution record.
func (e *Engine) Get(ctx context.Context, id fftype.ExecutionID) (*fftype.Execution, error) {
	var x *fftype.Execution
	err := e.view(ctx, id, func(tx ffstore.ReadTx) error {
		var err error
		x, err = getExec(tx, id)
		return err
	})
	return x, err
}

// Attempts returns the execution's attempts, oldest first.
func (e *Engine) Attempts(ctx context.Context, id fftype.ExecutionID) ([]*fftype.Attempt, error) {
	var out []*fftype.Attempt
	err := e.view(ctx, id, func(tx ffstore.ReadTx) error {
		x, err := getExec(tx, id)
		if err != nil {
			return err
		}
		if x.TotalAttempts == 0 {
			out = []*fftype.Attempt{}
			return nil
		}
		// The latest attempt is the execution's; the earlier ones are stored apart.
		keys := make([]string, x.TotalAttempts-1)
		for i := range keys {
			keys[i] = attemptKey(id, i)
		}
		if err := tx.Prefetch(keys...); err != nil {
			return err
		}
		out = make([]*fftype.Attempt, 0, x.TotalAttempts)
		for i := range keys {
			a, err := getAttempt(tx, id, i)
			if err != nil {
				return err
			}
			out = append(out, a)
		}
		latest, err := latestAttempt(x)
		if err != nil {
			return err
		}
		out = append(out, latest)
		return nil
	})
	return out, err
}

// Result returns the result a completed execution stored (nil if it stored none). It
// fails with a state error if the execution has not completed.
func (e *Engine) Result(ctx context.Context, id fftype.ExecutionID) ([]byte, fftype.PayloadEncoding, error) {
	var out []byte
	enc := fftype.EncodingJSON
	err := e.view(ctx, id, func(tx ffstore.ReadTx) error {
		if err := tx.Prefetch(execKey(id), resultKey(id), binaryResultKey(id)); err != nil {
			return err
		}
		x, err := getExec(tx, id)
		if err != nil {
			return err
		}
		if x.Outcome != fftype.OutcomeSuccess {
			return fftype.Statef(fftype.CodeResultNotFound, "execution %s is %s; only completed executions have a result", id, x.PublicState())
		}
		b, ok, err := tx.Get(binaryResultKey(id))
		if err != nil || ok {
			out, enc = b, fftype.EncodingBinary
			return err
		}
		out, _, err = tx.Get(resultKey(id))
		if len(out) > 0 && !json.Valid(out) {
			enc = fftype.EncodingBinary // a binary result kept before they had their own key
		}
		return err
	})
	return out, enc, err
}

// Payload returns the execution's input payload.
func (e *Engine) Payload(ctx context.Context, id fftype.ExecutionID) ([]byte, error) {
	var out []byte
	err := e.view(ctx, id, func(tx ffstore.ReadTx) error {
		if err := tx.Prefetch(execKey(id), payloadKey(id)); err != nil {
			return err
		}
		if _, err := getExec(tx, id); err != nil {
			return err
		}
		var err error
		out, _, err = tx.Get(payloadKey(id))
		return err
	})
	return out, err
}

// listed is one execution found by a listing, with its position in the index.
type listed struct {
	pos ffstore.QueueItem
	x   *fftype.Execution
}

// shardScan is what one shard contributed to a page.
type shardScan struct {
	found     []listed
	last      *ffstore.QueueItem // last index entry examined
	exhausted bool
}

// List returns executions matching p's filters, oldest first, a page at a time.
func (e *Engine) List(ctx context.Context, p fftype.ListParams) (*fftype.ListPage, error) {
	if p.Namespace != "" {
		if err := fftype.ValidateNamespace(p.Namespace); err != nil {
			return nil, err
		}
	}
	if p.Lane != "" {
		if err := fftype.ValidateLane(p.Lane); err != nil {
			return nil, err
		}
	}
	if p.Kind != "" {
		if err := fftype.ValidateKind(p.Kind); err != nil {
			return nil, err
		}
	}
	if p.State != "" && !p.State.Valid() {
		return nil, fftype.Validationf(fftype.CodeInvalidInput, "state %q is not a public state", p.State)
	}
	limit := p.Limit
	if limit == 0 {
		limit = defaultListLimit
	}
	if limit < 0 || limit > maxListLimit {
		return nil, fftype.Validationf(fftype.CodeInvalidInput, "limit must be between 1 and %d", maxListLimit)
	}
	after, err := decodeCursor(p.Cursor)
	if err != nil {
		return nil, err
	}
	match := func(x *fftype.Execution) bool {
		return (p.Namespace == "" || x.Namespace == p.Namespace) && (p.Lane == "" || x.Lane == p.Lane) &&
			(p.Kind == "" || x.Kind == p.Kind) && (p.State == "" || x.PublicState() == p.State)
	}

	scans := make([]shardScan, e.shards)
	for s := 0; s < e.shards; s++ {
		if err := e.store.View(ctx, s, func(tx ffstore.ReadTx) error {
			scans[s] = shardScan{}
			return scanShard(tx, after, limit, match, &scans[s])
		}); err != nil {
			return nil, err
		}
	}

	var bound *ffstore.QueueItem
	var all []listed
	for i := range scans {
		sc := &scans[i]
		all = append(all, sc.found...)
		if !sc.exhausted && (bound == nil || sc.last.Less(*bound)) {
			bound = sc.last
		}
	}
	sort.Slice(all, func(i, j int) bool { return all[i].pos.Less(all[j].pos) })
	page := &fftype.ListPage{Executions: []*fftype.Execution{}}
	more := bound != nil // a shard has more to scan
	var last ffstore.QueueItem
	for _, l := range all {
		if bound != nil && bound.Less(l.pos) {
			break
		}
		if len(page.Executions) == limit {
			more = true // a match beyond the page
			break
		}
		page.Executions = append(page.Executions, l.x)
		last = l.pos
	}
	switch {
	case !more:
	case len(page.Executions) == limit:
		page.Cursor = encodeCursor(last)
	default:
		page.Cursor = encodeCursor(*bound)
	}
	return page, nil
}

// scanShard scans one shard's listing index after the position after for executions that
// match: one more than a page of them (so that a full page knows whether any follow), and
// at most maxListScan entries.
func scanShard(tx ffstore.ReadTx, after *ffstore.QueueItem, limit int, match func(*fftype.Execution) bool, sc *shardScan) error {
	pos := after
	scanned := 0
	for {
		items, err := tx.Range(queueAll, pos, ffstore.MaxScore, listBatch)
		if err != nil {
			return err
		}
		if err := prefetchExecs(tx, items); err != nil {
			return err
		}
		for i := range items {
			it := items[i]
			pos, sc.last = &it, &it
			scanned++
			x, err := getExec(tx, fftype.ExecutionID(it.Member))
			if err != nil {
				return err
			}
			if match(x) {
				sc.found = append(sc.found, listed{pos: it, x: x})
				if len(sc.found) > limit { // one more than a page, to tell whether any follow
					return nil
				}
			}
			if scanned >= maxListScan {
				return nil
			}
		}
		if len(items) < listBatch {
			sc.exhausted = true
			return nil
		}
	}
}

// A cursor is the index position of the last execution a page covered:
// base64url("1:<score>:<member>").
func encodeCursor(pos ffstore.QueueItem) string {
	return base64.RawURLEncoding.EncodeToString([]byte("1:" + strconv.FormatInt(pos.Score, 10) + ":" + pos.Member))
}

func decodeCursor(c string) (*ffstore.QueueItem, error) {
	if c == "" {
		return nil, nil
	}
	bad := fftype.Validationf(fftype.CodeInvalidCursor, "cursor is not one this server issued")
	if len(c) > 256 {
		return nil, bad
	}
	b, err := base64.RawURLEncoding.DecodeString(c)
	if err != nil {
		return nil, bad
	}
	parts := strings.SplitN(string(b), ":", 3)
	if len(parts) != 3 || parts[0] != "1" {
		return nil, bad
	}
	score, err := strconv.ParseInt(parts[1], 10, 64)
	if err != nil || score < 0 {
		return nil, bad
	}
	if _, err := fftype.ParseExecutionID(parts[2]); err != nil {
		return nil, bad
	}
	return &ffstore.QueueItem{Score: score, Member: parts[2]}, nil
}

// maxDepthCount bounds how many items QueueDepths counts per queue.
const maxDepthCount = 1_000_000

// QueueDepths returns how many executions wait eligible in each lane (across namespaces
// and capability sets), counting at most a million per queue. It reads every eligible
// item, so it is meant for metrics scrapes, not hot paths.
func (e *Engine) QueueDepths(ctx context.Context) (map[string]int, error) {
	heads, err := e.store.QueueHeads(ctx, []string{eligiblePrefix})
	if err != nil {
		return nil, err
	}
	out := map[string]int{}
	for _, h := range heads {
		lane, _, _, ok := parseEligibleQueue(h.Queue)
		if !ok {
			continue
		}
		n := 0
		err := e.store.View(ctx, h.Shard, func(tx ffstore.ReadTx) error {
			n = 0
			var after *ffstore.QueueItem
			for n < maxDepthCount {
				items, err := tx.Range(h.Queue, after, ffstore.MaxScore, 1024)
				if err != nil {
					return err
				}
				n += len(items)
				if len(items) < 1024 {
					return nil
				}
				after = &items[len(items)-1]
			}
			return nil
		})
		if err != nil {
			return nil, err
		}
		out[lane] += n
	}
	return out, nil
}
