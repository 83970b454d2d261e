package ffvalkey

import (
	"encoding/binary"
	"strconv"
	"strings"

	"github.com/flowfabric/flowfabric/ffstore"
)

// Key layout. Every key of shard s is "<prefix>:{ff:s<s>:<salt>}:<name>": the part in
// braces is the shard's hash tag, so a cluster keeps all of a shard's keys in one slot and
// every unit, being one shard, runs in one slot. The salt is the smallest number that puts
// the tag's slot in the middle of the shard's band of the slot space (see tagFor), so the
// shards spread evenly over any even split of the slots between primaries. Two keys live
// outside the shards: "<prefix>:meta", a HASH holding the shard count and the data format,
// and "<prefix>:hint", a ZSET of "<queue name>\x00<shard>" members, all scored 0: the
// shards whose queue of that name may be non-empty (see heads_cache.go). A commit cannot
// write it (it is on another slot), so the caller adds what a commit reports.
//
// Per shard, after the tag:
//
//	v            STRING  commit counter: numbers every commit, and is the version stamped on
//	                     every record a commit writes
//	d            STRING  delete counter; bumped by a commit that deletes an existing record,
//	                     for processes of builds that load library v3 and check it (each
//	                     record read as missing is now checked to be missing still)
//	trim         STRING  the log's trim point
//	ev           STREAM  the event log, entry ids "0-<seq>" (XADD 0-*), one field "e" each
//	dir          ZSET    names of the non-empty queues, all scored 0 (ordered by name)
//	hinted       SET     names of queues the store's hint lists for this shard (a commit
//	                     that fills a queue not in it adds it and reports it)
//	r:<key>      STRING  a record: 8-byte big-endian version, then the value
//	q:<name>     ZSET    a queue's items, all scored 0, member = encoded item (see encodeItem)
//	qs:<name>    HASH    a queue's member -> 8-byte encoded score
//	qm:<name>    HASH    a queue's pop marks: member -> 13-digit deadline (ms) + unit token

// slotCount is the number of hash slots of a Redis or Valkey cluster.
const slotCount = 16384

// crc16tab is the CRC16-CCITT (XMODEM) table Redis uses for key slots.
var crc16tab = func() (t [256]uint16) { //nolint:gochecknoglobals // a constant table
	for i := range t {
		c := uint16(i) << 8
		for range 8 {
			if c&0x8000 != 0 {
				c = c<<1 ^ 0x1021
			} else {
				c <<= 1
			}
		}
		t[i] = c
	}
	return t
}()

func crc16(s string) uint16 {
	var c uint16
	for i := 0; i < len(s); i++ {
		c = c<<8 ^ crc16tab[byte(c>>8)^s[i]]
	}
	return c
}

// keySlot returns the cluster slot of key, honouring a hash tag as Redis does: the first
// "{...}" with something inside.
func keySlot(key string) int {
	for i := 0; i < len(key); i++ {
		if key[i] != '{' {
			continue
		}
		for j := i + 1; j < len(key); j++ {
			if key[j] == '}' {
				if j > i+1 {
					key = key[i+1 : j]
				}
				return int(crc16(key) % slotCount)
			}
		}
		break
	}
	return int(crc16(key) % slotCount)
}

// shardBand returns the slots [lo, hi) whose middle shard s of n aims at: the middle
// quarter of the s-th of n equal bands of the slot space (at least one slot).
func shardBand(s, n int) (lo, hi int) {
	center := (2*s + 1) * slotCount / (2 * n)
	half := max(slotCount/(8*n), 1)
	lo, hi = max(center-half, 0), min(center+half, slotCount)
	if hi <= lo {
		hi = lo + 1
	}
	return lo, hi
}

// tagFor returns the hash tag of shard s of n, braces included: "{ff:s<s>:<salt>}" with
// the smallest salt whose slot lies in shardBand(s, n). The tag depends only on s and n,
// which the store fixes when it is created, so it never changes.
func tagFor(s, n int) string {
	lo, hi := shardBand(s, n)
	base := "ff:s" + strconv.Itoa(s) + ":"
	for salt := 0; ; salt++ {
		t := base + strconv.Itoa(salt)
		if slot := int(crc16(t) % slotCount); slot >= lo && slot < hi {
			return "{" + t + "}"
		}
	}
}

// shardKeys are the fixed keys of one shard, and the prefix of its others.
type shardKeys struct {
	base   string // "<prefix>:{tag}:"
	ver    string
	del    string
	trim   string
	stream string
	dir    string
	hinted string
	// absent is never written. A commit declares it among its keys so that, while the
	// shard's slot migrates between Cluster nodes, the server refuses the call at once
	// (TRYAGAIN, retried) rather than run it: a migrating slot refuses, mid-function, a
	// key the function itself emptied and then touches again, and the function would stop
	// half-way through its writes.
	absent string
	slot   int
}

func newShardKeys(prefix string, s, n int) shardKeys {
	base := prefix + ":" + tagFor(s, n) + ":"
	return shardKeys{
		base: base, ver: base + "v", del: base + "d", trim: base + "trim",
		stream: base + "ev", dir: base + "dir", hinted: base + "hinted", absent: base + "absent", slot: keySlot(base),
	}
}

func (k *shardKeys) record(key string) string  { return k.base + "r:" + key }
func (k *shardKeys) queue(name string) string  { return k.base + "q:" + name }
func (k *shardKeys) scores(name string) string { return k.base + "qs:" + name }
func (k *shardKeys) marks(name string) string  { return k.base + "qm:" + name }
func metaKey(prefix string) string             { return prefix + ":meta" }
func hintKey(prefix string) string             { return prefix + ":hint" }
func changesChannel(prefix string) string      { return prefix + ":changes" }
func (k *shardKeys) queueKeys(name string) [3]string {
	return [3]string{k.queue(name), k.scores(name), k.marks(name)}
}

// versionLen is the length of the version that prefixes every stored record.
const versionLen = 8

// versionString is a record's stored version: the number of the commit that wrote it, 8
// bytes big-endian, as the library stamps it.
func versionString(v uint64) string {
	var b [versionLen]byte
	binary.BigEndian.PutUint64(b[:], v)
	return string(b[:])
}

// Queue items. A queue is a ZSET whose members all score 0, so that the server orders
// them bytewise ("lex"), and each member is the item's score encoded in 8 bytes that sort
// like the int64 they encode, followed by the item's member. That keeps the exact int64
// order of (score, member) — a ZSET score, a float64, would lose it above 2^53 — and lets
// ZRANGE BYLEX answer every range and bound.

// encodeScore returns the 8 bytes of score that sort bytewise as the int64 sorts.
func encodeScore(score int64) string {
	var b [8]byte
	binary.BigEndian.PutUint64(b[:], uint64(score)^(1<<63))
	return string(b[:])
}

// decodeScore is the inverse of encodeScore; s holds at least 8 bytes.
func decodeScore(s string) int64 {
	return int64(binary.BigEndian.Uint64([]byte(s[:8])) ^ (1 << 63))
}

// encodeItem returns the ZSET member of an item.
func encodeItem(score int64, member string) string { return encodeScore(score) + member }

// decodeItem splits a ZSET member into the item's score and member. ok is false if enc is
// too short to be one.
func decodeItem(enc string) (score int64, member string, ok bool) {
	if len(enc) < 8 {
		return 0, "", false
	}
	return decodeScore(enc), enc[8:], true
}

// lexAfter returns the ZRANGE BYLEX start bound for items strictly after (score, member),
// or from the beginning when after is nil.
func lexAfter(after *ffstore.QueueItem) string {
	if after == nil {
		return "-"
	}
	return "(" + encodeItem(after.Score, after.Member)
}

// lexUpTo returns the ZRANGE BYLEX end bound for items with score at most maxScore.
func lexUpTo(maxScore int64) string {
	if maxScore == ffstore.MaxScore {
		return "+"
	}
	// Every item of score maxScore sorts below the bare encoding of maxScore+1.
	return "(" + encodeScore(maxScore+1)
}

// scoreBound returns the largest due score as ffv5_pop and ffv5_range take it: its 8-byte
// encoding, or "" for no bound.
func scoreBound(maxScore int64) string {
	if maxScore == ffstore.MaxScore {
		return ""
	}
	return encodeScore(maxScore)
}

// prefixBounds returns the ZRANGE BYLEX bounds of the names that start with p.
func prefixBounds(p string) (lo, hi string) {
	lo = "[" + p
	if p == "" {
		lo = "-"
	}
	hi = "+"
	if end, ok := ffstore.PrefixEnd(p); ok {
		hi = "(" + end
	}
	return lo, hi
}

// hintMember returns the member of the store's hint that says queue name of shard may be
// non-empty. The name comes first, so the members of the queues with a prefix are one
// ZRANGE BYLEX range (see prefixBounds).
func hintMember(name string, shard int) string { return name + "\x00" + strconv.Itoa(shard) }

// parseHintMember is the inverse of hintMember; ok is false for a malformed member.
func parseHintMember(m string, shards int) (name string, shard int, ok bool) {
	i := strings.LastIndexByte(m, 0)
	if i < 0 {
		return "", 0, false
	}
	shard, err := strconv.Atoi(m[i+1:])
	if err != nil || shard < 0 || shard >= shards {
		return "", 0, false
	}
	return m[:i], shard, true
}
