package engine

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"strings"

	"github.com/flowfabric/flowfabric/ffstore"
	"github.com/flowfabric/flowfabric/fftype"
)

// An eligible queue's name carries its required capability set, so that a claim tells
// from the queue heads alone which queues a worker may take from. A set may be 4,096 bytes
// joined, too long for a name: Postgres refuses index rows over about 2.7 KB, and on Redis
// the name is part of every key of the queue. So a set longer than maxInlineCaps is named
// by its digest instead, and a record on the shard ("caps:~<digest>") holds the set. The
// record is written by every unit that puts an execution in such a queue (its content is
// fixed by its digest, so writing it again changes nothing) and never deleted; claims
// resolve a digest through a cache of the engine's, reading the record on a miss.

// maxInlineCaps is the longest comma-joined capability set that an eligible queue's name
// carries as it is. 256 bytes holds the sets workers use in practice (a handful of tokens)
// inline, so that they cost no record and no read and their queues are named as they
// always were; and it keeps every name short: with a lane and a namespace of at most 64
// bytes each, under 400 bytes, a seventh of what a Postgres index row may hold.
const maxInlineCaps = 256

// capsDigestMark starts the capability part of a queue name that names its set by
// digest; the hex SHA-256 of the comma-joined set follows. An inline set never contains
// it: capability tokens hold no control characters.
const capsDigestMark = "\x1e"

// capsDigestLen is the length of a hex SHA-256 digest.
const capsDigestLen = 2 * sha256.Size

// maxCachedCapSets bounds the engine's cache of capability sets named by digest (at most
// 4 KB each), for when many distinct long sets are in use.
const maxCachedCapSets = 1024

// capsPart is the capability part of the name of an eligible queue whose executions
// require the sorted set caps: the comma-joined set when it is at most maxInlineCaps
// bytes, else capsDigestMark and the set's digest.
func capsPart(caps []string) string {
	joined := strings.Join(caps, ",")
	if len(joined) <= maxInlineCaps {
		return joined
	}
	sum := sha256.Sum256([]byte(joined))
	return capsDigestMark + hex.EncodeToString(sum[:])
}

// capsKey is the record holding the comma-joined capability set whose digest is digest.
func capsKey(digest string) string { return "caps:~" + digest }

// capsDigestOfQueue returns the digest that eligible queue q is named by, and false when
// q is not an eligible queue named by digest. It reads only the ends of q, so that units
// may ask it of every queue they add to.
func capsDigestOfQueue(q string) (string, bool) {
	const n = len(capsDigestMark) + capsDigestLen
	if len(q) < len(eligiblePrefix)+n || !strings.HasPrefix(q[len(q)-n:], capsDigestMark) || !strings.HasPrefix(q, eligiblePrefix) {
		return "", false
	}
	return q[len(q)-capsDigestLen:], true
}

// putCapsRecord writes the record of the capability set caps, whose digest is digest.
func putCapsRecord(tx ffstore.Tx, digest string, caps []string) {
	tx.Put(capsKey(digest), []byte(strings.Join(caps, ",")))
}

// joinedLen returns the length of the comma-joined set caps.
func joinedLen(caps []string) int {
	n := max(len(caps)-1, 0)
	for _, c := range caps {
		n += len(c)
	}
	return n
}

// covers reports whether a worker holding the sorted set caps, whose joined length is
// capsLen, covers the set that the capability part part (parseEligibleQueue) of an
// eligible queue on shard names. A set named by digest is read from its record unless the
// worker's set is too short to cover it, or the cache holds it. A missing record (which
// the engine never deletes) is logged, and its queue is not covered.
func (e *Engine) covers(ctx context.Context, shard int, caps []string, capsLen int, part string) (bool, error) {
	digest, long := strings.CutPrefix(part, capsDigestMark)
	if !long {
		var need []string
		if part != "" {
			need = strings.Split(part, ",")
		}
		return fftype.CoversCapabilities(caps, need), nil
	}
	if capsLen <= maxInlineCaps {
		return false, nil // a set is at least as long as each set it covers
	}
	need, err := e.capSet(ctx, shard, digest)
	if err != nil || need == nil {
		return false, err
	}
	return fftype.CoversCapabilities(caps, need), nil
}

// capSet returns the capability set named by digest, from the cache or else from its
// record on shard; nil if the record is missing. The cache never goes stale: a digest
// names one set forever.
func (e *Engine) capSet(ctx context.Context, shard int, digest string) ([]string, error) {
	e.capsMu.Lock()
	need, ok := e.capSets[digest]
	e.capsMu.Unlock()
	if ok {
		return need, nil
	}
	err := e.store.View(ctx, shard, func(tx ffstore.ReadTx) error {
		v, found, err := tx.Get(capsKey(digest))
		need = nil
		if found {
			need = strings.Split(string(v), ",")
		}
		return err
	})
	if err != nil {
		return nil, err
	}
	if need == nil {
		e.log.Warn("the record of an eligible queue's capability set is missing: its executions cannot be claimed",
			"shard", shard, "key", capsKey(digest))
		return nil, nil
	}
	e.capsMu.Lock()
	if len(e.capSets) >= maxCachedCapSets {
		for d := range e.capSets {
			delete(e.capSets, d) // any one: every entry can be read again
			break
		}
	}
	e.capSets[digest] = need
	e.capsMu.Unlock()
	return need, nil
}
