package ffsqlite

import "bytes"

// The writer's record cache. A transition reads back what an earlier one wrote moments
// ago (a claim writes the execution, the completion reads it back), and on the writer
// connection every such Get is two B-tree searches. The writer therefore keeps the small
// records it read or wrote, exactly as they are in the file:
//
//   - Put and Delete update the entry in the same step as the statement, so a hit is
//     always the value the unit's own transaction would read.
//   - A unit rolled back to its savepoint drops the entries it wrote; a transaction rolled
//     back whole drops every entry.
//   - Another process's commit (seen through PRAGMA data_version at the start of a
//     write transaction, while the write lock is held) drops every entry.
//
// Values larger than cacheMaxValue (payloads, results: written once, read once) are not
// kept. When the cache holds more than cacheMaxBytes it evicts entries in map order,
// which Go randomises, down to cacheLowBytes: starting an iteration of a large map costs
// far more than dropping an entry, so a full cache evicts in bulk, not one entry per set.
const (
	cacheMaxValue = 2 << 10
	cacheMaxBytes = 16 << 20
	cacheLowBytes = cacheMaxBytes - cacheMaxBytes/16
)

type cacheKey struct {
	shard int
	key   string
}

// cacheEntry is a cached record; ok false caches its absence.
type cacheEntry struct {
	value []byte
	ok    bool
}

type recordCache struct {
	m     map[cacheKey]cacheEntry
	bytes int
}

func newRecordCache() *recordCache { return &recordCache{m: map[cacheKey]cacheEntry{}} }

// get returns a copy of the cached record, and whether the cache knows it.
func (c *recordCache) get(k cacheKey) (value []byte, ok, hit bool) {
	e, hit := c.m[k]
	if !hit {
		return nil, false, false
	}
	if !e.ok {
		return nil, false, true
	}
	return bytes.Clone(e.value), true, true
}

// set records that k now holds a copy of value (ok) or nothing (!ok). A value too large
// to keep drops the entry instead.
func (c *recordCache) set(k cacheKey, value []byte, ok bool) {
	if ok && len(value) <= cacheMaxValue {
		value = bytes.Clone(value)
	}
	c.keep(k, value, ok)
}

// keep is set for a value nobody changes afterwards (one a unit put: the Tx contract
// gives it to the store), so the cache holds it without a copy.
func (c *recordCache) keep(k cacheKey, value []byte, ok bool) {
	c.drop(k)
	if len(value) > cacheMaxValue {
		return
	}
	e := cacheEntry{ok: ok}
	if ok {
		e.value = value
		if e.value == nil {
			e.value = []byte{}
		}
	}
	c.m[k] = e
	c.bytes += entrySize(k, e)
	if c.bytes <= cacheMaxBytes {
		return
	}
	for k2 := range c.m {
		if c.bytes <= cacheLowBytes {
			break
		}
		c.drop(k2)
	}
}

func (c *recordCache) drop(k cacheKey) {
	if e, ok := c.m[k]; ok {
		c.bytes -= entrySize(k, e)
		delete(c.m, k)
	}
}

func (c *recordCache) clear() {
	clear(c.m)
	c.bytes = 0
}

// entrySize approximates the memory an entry holds.
func entrySize(k cacheKey, e cacheEntry) int { return len(k.key) + len(e.value) + 64 }
