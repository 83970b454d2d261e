package ffvalkey

import (
	"context"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/flowfabric/flowfabric/ffstore"
)

// headsTTL is how long QueueHeads serves a set of heads from memory before it reads them
// again. It bounds how late this process learns of heads that other processes moved,
// should their wake-up messages be lost.
const headsTTL = 250 * time.Millisecond

// fullScanEvery is how long a set of heads is read through the store's hint alone: the
// first read after it reads every shard's directory, and repairs the hint. It bounds how
// late this process sees a queue the hint misses (a writer died between its commit and
// adding the hint) should the commit's wake-up message be lost too.
const fullScanEvery = 2 * time.Second

// headsCache keeps, per set of prefixes QueueHeads was asked for, the heads it read,
// patched by every commit of this process (each commit returns the new heads of the
// queues it wrote, stamped with its shard's commit number, so late replies never undo
// newer ones). Commits of other processes that may have moved a head earlier publish
// that in their wake-up message, which marks every set stale; other changes are picked
// up by the next read after headsTTL. QueueHeads is a hint by contract, so this only
// trades a bounded delay in seeing other processes' work for not reading every shard on
// every claim.
//
// A read goes through the store's hint of the shards whose queues may be non-empty
// ("<prefix>:hint", one ZSET for every shard and queue, see keys.go): it reads the hint's
// entries for the prefixes, then the heads of just those queues, so an idle lane costs
// one command per prefix instead of two per shard. Every commit that fills an empty queue
// and finds it missing from its shard's hinted set adds the entry right after committing,
// and its wake-up message names its shard, which the next read of every other process
// reads in full (the hint may not have the entry yet). Entries are removed lazily, by
// full reads (every fullScanEvery, at the first read of a set and after a lost
// subscription): they read every shard's directory, add the entries it shows missing and
// remove those whose queues are empty. A stale entry costs a read; a missing one delays
// the queue's heads until the next full read at worst.
type headsCache struct {
	mu    sync.Mutex
	sets  map[string]*headSet
	epoch uint64 // bumped when every set is marked stale
	seq   uint64 // bumped by every patch
}

// headSet is the cached heads of one set of disjoint prefixes.
type headSet struct {
	prefixes []string
	refresh  sync.Mutex // held while the set is read from the server

	// Guarded by headsCache.mu.
	at       time.Time
	fullAt   time.Time // when the last full read began
	needFull bool      // the next read must be full
	woken    map[int]bool
	epoch    uint64
	loaded   bool
	shards   []map[string]headEntry
}

// headsPlan says what a read of a set of heads covers besides the hint.
type headsPlan struct {
	full  bool  // every shard's directory, repairing the hint
	woken []int // shards whose directories are read (ascending)
}

// headEntry is what the cache knows of one queue on one shard: its head, or that it is
// empty, as of the shard's commit number ver. seq orders the patches of this process.
type headEntry struct {
	item  ffstore.QueueItem
	empty bool
	ver   uint64
	seq   uint64
}

// invalidate marks every set stale, to be read in full, and forgets what the sets knew.
// It is called when the server may have lost its data, and with it its commit numbers:
// entries numbered by the old counter would make every patch numbered by the new one look
// late, and patch would drop it.
func (c *headsCache) invalidate() {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.epoch++
	for _, hs := range c.sets {
		hs.needFull = true
		for shard := range hs.shards {
			hs.shards[shard] = nil
		}
	}
}

// wake marks every set stale, with shard to be read in full: another process's commit
// there may have moved a head earlier, before the hint says so.
func (c *headsCache) wake(shard int) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.epoch++
	for _, hs := range c.sets {
		if hs.woken == nil {
			hs.woken = map[int]bool{}
		}
		hs.woken[shard] = true
	}
}

// plan decides what the read of hs beginning at began covers, and clears what it takes
// over. The caller holds headsCache.mu.
func (hs *headSet) plan(began time.Time) headsPlan {
	p := headsPlan{full: !hs.loaded || hs.needFull || began.Sub(hs.fullAt) >= fullScanEvery}
	if !p.full {
		for shard := range hs.woken {
			p.woken = append(p.woken, shard)
		}
		slices.Sort(p.woken)
	}
	hs.needFull, hs.woken = false, nil
	return p
}

// set returns the set for prefixes (disjoint and sorted), creating it.
func (c *headsCache) set(prefixes []string, shards int) *headSet {
	key := setKey(prefixes)
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.sets == nil {
		c.sets = map[string]*headSet{}
	}
	hs := c.sets[key]
	if hs == nil {
		hs = &headSet{prefixes: slices.Clone(prefixes), shards: make([]map[string]headEntry, shards)}
		c.sets[key] = hs
	}
	return hs
}

// setKey is the key of the set for prefixes in headsCache.sets: each prefix preceded by
// its length, as a prefix may hold any byte a separator could be.
func setKey(prefixes []string) string {
	var b strings.Builder
	for _, p := range prefixes {
		b.WriteString(strconv.Itoa(len(p)))
		b.WriteByte(':')
		b.WriteString(p)
	}
	return b.String()
}

// fresh returns the set's heads if they may be served from memory.
func (c *headsCache) fresh(hs *headSet, now time.Time) ([]ffstore.QueueHead, bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if !hs.loaded || hs.epoch != c.epoch || now.Sub(hs.at) >= headsTTL {
		return nil, false
	}
	return hs.heads(), true
}

// heads lists the set's non-empty queues in shard order, then by name, as the other
// stores do (the contract leaves the order open, but the engine's timer loop handles due
// queues in the order given). The caller holds headsCache.mu.
func (hs *headSet) heads() []ffstore.QueueHead {
	var out []ffstore.QueueHead
	for shard, m := range hs.shards {
		start := len(out)
		for name, e := range m {
			if !e.empty {
				out = append(out, ffstore.QueueHead{Shard: shard, Queue: name, Item: e.item})
			}
		}
		slices.SortFunc(out[start:], func(a, b ffstore.QueueHead) int { return strings.Compare(a.Queue, b.Queue) })
	}
	return out
}

func matchesAny(name string, prefixes []string) bool {
	for _, p := range prefixes {
		if strings.HasPrefix(name, p) {
			return true
		}
	}
	return false
}

// headsRead is what one read of a set of heads saw, shard by shard: the heads of the
// non-empty queues it read (found), the shard's commit number read before them (vers; 0
// when none was read), and what it covered. A scanned shard's directory was read, so the
// read covers every queue of the set there; on any other shard it covers only the queues
// the hint named (read), and says nothing of the others.
type headsRead struct {
	found   []map[string]ffstore.QueueItem
	vers    []uint64
	scanned []bool
	read    []map[string]bool
}

// load replaces what the set knew of the queues a read covered with what it saw. Entries
// that commits of this process patched during the read, with numbers not below the
// read's, are kept; everything older that the read covered is replaced, so that a commit
// counter that restarted (the server lost its data) cannot pin stale entries. Queues the
// read did not cover keep their entries: a commit of this process that fills an empty
// queue adds it to the hint only after it returns, so a read in between finds it neither
// in the hint nor, on a shard it does not scan, anywhere else, and must not forget the
// head that commit patched in. Full reads cover every queue. epoch and seq are the
// cache's when the read began.
func (c *headsCache) load(hs *headSet, r headsRead, began time.Time, epoch, seq uint64, full bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if full {
		hs.fullAt = began
	}
	for shard, old := range hs.shards {
		next := make(map[string]headEntry, len(r.found[shard]))
		for name, it := range r.found[shard] {
			next[name] = headEntry{item: it, ver: r.vers[shard]}
		}
		for name, e := range old {
			covered := r.scanned[shard] || r.read[shard][name]
			if !covered || e.seq > seq && e.ver >= r.vers[shard] {
				next[name] = e
			}
		}
		hs.shards[shard] = next
	}
	hs.loaded, hs.at, hs.epoch = true, began, epoch
}

// patch records the heads a commit on shard, numbered ver, left in the queues it wrote
// (heads[name] nil: the queue is empty).
func (c *headsCache) patch(shard int, ver uint64, names []string, heads []*ffstore.QueueItem) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.seq++
	for _, hs := range c.sets {
		for i, name := range names {
			if !matchesAny(name, hs.prefixes) {
				continue
			}
			m := hs.shards[shard]
			if m == nil {
				m = map[string]headEntry{}
				hs.shards[shard] = m
			}
			if e, ok := m[name]; ok && e.ver > ver {
				continue
			}
			if heads[i] == nil {
				m[name] = headEntry{empty: true, ver: ver, seq: c.seq}
			} else {
				m[name] = headEntry{item: *heads[i], ver: ver, seq: c.seq}
			}
		}
	}
}

// queueHeads serves QueueHeads from the cache, reading the set from the server with read
// when it is stale. Concurrent callers of one set share one read.
func (c *headsCache) queueHeads(ctx context.Context, prefixes []string, shards int,
	read func(ctx context.Context, prefixes []string, plan headsPlan) (headsRead, error)) ([]ffstore.QueueHead, error) {
	hs := c.set(prefixes, shards)
	if heads, ok := c.fresh(hs, time.Now()); ok {
		return heads, nil
	}
	hs.refresh.Lock()
	defer hs.refresh.Unlock()
	began := time.Now()
	if heads, ok := c.fresh(hs, began); ok {
		return heads, nil // another caller read it meanwhile
	}
	c.mu.Lock()
	epoch, seq := c.epoch, c.seq
	plan := hs.plan(began)
	c.mu.Unlock()
	r, err := read(ctx, hs.prefixes, plan)
	if err != nil {
		c.mu.Lock()
		hs.needFull = true // what the plan took over is not done
		c.mu.Unlock()
		return nil, err
	}
	c.load(hs, r, began, epoch, seq, plan.full)
	c.mu.Lock()
	defer c.mu.Unlock()
	return hs.heads(), nil
}
