// Package ffvalkey is the Valkey / Redis store: standalone servers and Clusters, Redis 7.0+
// and Valkey 7.2+, through the pipelining client github.com/redis/rueidis.
//
// # Connecting
//
// [Open] takes a URL (see [ParseURL]): redis://:password@host:port/db, rediss:// for TLS,
// redis+cluster:// and rediss+cluster:// for a Cluster, valkey aliases of each. Over TLS
// the server's certificate is checked against the system's CAs, or against those of the
// PEM file a ca_file parameter names, for a server whose certificate a private CA signed:
//
//	rediss://:secret@cache.internal:6380/2?ca_file=/etc/ff/redis-ca.pem
//
// # Layout
//
// The store keeps each shard under one hash tag, so a Cluster holds a shard in one slot
// and every unit (one shard) runs on one node; the tags are chosen so that the shards
// spread evenly over the slots (keys.go describes every key). Records are strings that
// start with an 8-byte version. A queue is a sorted set whose members all score 0 and
// encode (score, member) so that their byte order is the exact int64 order, beside a hash
// of each member's score and a hash of pop marks. Each shard's event log is a stream whose
// entry ids are the events' gap-free Seq numbers.
//
// # Units
//
// A unit's reads are made from Go: Get and Prefetch read records with their versions
// (MGET), Range reads a queue, PopDue marks items as popped by the unit (a function call
// that skips items other units are popping). Writes are buffered. At commit one function
// call, ffv5_unit of the library flowfabric_v5, receives every version and queue item the
// unit read and every item it popped, checks that they all still hold, and then applies
// the writes, appends the events with the next Seq numbers and publishes a wake-up — or,
// if anything changed, writes nothing, releases the pops and answers with a conflict,
// which [Store.Update] returns as an error matching [fftype.ErrStoreConflict] for the
// engine to retry. A unit that popped items and does not commit releases them; if its
// process dies first, its marks lapse after 15 seconds and the items can be popped again.
// Either way an item is never handed to two units that both commit: a commit removes only
// items whose marks are still its own. A Range is checked for the items it returned, not
// for items that entered its range since, and a record read as missing is checked to be
// still missing: the limits ffstore.Store.Update states.
//
// Two shortcuts save round trips, each checked at commit like any read. A commit that
// took items from a queue also reads the records of the items its pop saw next, and the
// next claim's pop of that queue in this process takes them without a round trip (a
// foreseen pop): its commit checks that they are still, in order, the first items of the
// queue that no other unit holds. And a unit takes the records this process wrote last
// from memory, checked by a digest of their value and version. A shortcut that no longer
// holds is a conflict, and the unit's next run reads the server.
//
// # Durability
//
// A unit is acknowledged when the server has applied it; it survives a restart of the
// server only as far as the server's persistence goes. With appendonly yes and
// appendfsync always nothing acknowledged is lost; with everysec up to about a second of
// units may be; without persistence a restart loses everything, and the store loads its
// function library again by itself. Replication is asynchronous: a failover to a replica
// can lose the units the old primary acknowledged but had not yet sent to it. The store
// does not call WAIT, so a failover may roll the store back by the replication lag.
package ffvalkey

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"math"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/redis/rueidis"

	"github.com/flowfabric/flowfabric/ffstore"
	"github.com/flowfabric/flowfabric/fftype"
)

// Defaults for [Options].
const (
	DefaultShards    = 16
	DefaultKeyPrefix = "ff"
)

// dataFormat is the version of the key layout this binary writes, kept in the meta key.
const dataFormat = 1

// defaultPopTTL is how long a pop mark keeps an item from other units: the longest a
// unit that popped may take to commit, and how long the items popped by a unit whose
// process died stay hidden from other pops.
const defaultPopTTL = 15 * time.Second

// maxViewRuns bounds how often View runs fn to get a consistent snapshot.
const maxViewRuns = 8

// Options configures [Open]. The zero value, or nil, gives the defaults.
type Options struct {
	// Shards is the shard count given to a new store, 1 to [fftype.MaxShards]; 0 means
	// the stored count for an existing store and [DefaultShards] for a new one. It is
	// fixed when the store is created: opening it with a different non-zero count fails
	// with a validation error coded [CodeShardCountMismatch].
	Shards int

	// KeyPrefix starts every key of the store, so that several stores (or other data)
	// can share a server; "" means [DefaultKeyPrefix]. At most 64 bytes, no braces,
	// spaces or control bytes.
	KeyPrefix string

	// Logger receives the store's rare log lines (no AOF at start, the function library
	// reloaded, the change subscription lost). nil discards them.
	Logger *slog.Logger

	skipVerify bool          // from the URL
	popTTL     time.Duration // tests shorten it; 0 means defaultPopTTL
}

// merge returns o with the fields of over that are set.
func (o Options) merge(over *Options) Options {
	if over == nil {
		return o
	}
	if over.Shards != 0 {
		o.Shards = over.Shards
	}
	if over.KeyPrefix != "" {
		o.KeyPrefix = over.KeyPrefix
	}
	if over.Logger != nil {
		o.Logger = over.Logger
	}
	if over.popTTL != 0 {
		o.popTTL = over.popTTL
	}
	return o
}

func (o Options) withDefaults() (Options, error) {
	out := o
	if out.Shards < 0 || out.Shards > fftype.MaxShards {
		return out, fftype.Validationf(fftype.CodeInvalidInput, "ffvalkey: Options.Shards is %d, want 0 (default) or 1 to %d", out.Shards, fftype.MaxShards)
	}
	if out.KeyPrefix == "" {
		out.KeyPrefix = DefaultKeyPrefix
	}
	if err := checkPrefix(out.KeyPrefix); err != nil {
		return out, err
	}
	if out.Logger == nil {
		out.Logger = slog.New(slog.DiscardHandler)
	}
	if out.popTTL <= 0 {
		out.popTTL = defaultPopTTL
	}
	return out, nil
}

// Store is an [ffstore.Store] on a Valkey or Redis server or Cluster. All methods are
// safe for concurrent use. Create one with [Open] and Close it when done.
type Store struct {
	client  rueidis.Client
	cluster bool
	prefix  string
	shards  int
	keys    []shardKeys
	log     *slog.Logger
	channel string
	popTTL  string // ms, as the pop function takes it
	loader  *loader

	instance  string // random, starts every unit token of this store
	units     atomic.Uint64
	conflicts ffstore.ConflictCounter // injected conflicts still to deliver
	changes   ffstore.Notifier
	heads     headsCache
	gates     []commitGate   // per shard: see commitGate
	foresight foresight      // what pops saw next, for the next pops
	written   writtenRecords // what units wrote last, for the next units that read it

	subOnce   sync.Once
	subCancel context.CancelFunc
	subDone   chan struct{}

	// mu guards closed and inflight; idle is signalled when inflight drops to 0.
	mu       sync.Mutex
	idle     *sync.Cond
	inflight int
	closed   bool
}

var (
	_ ffstore.Store          = (*Store)(nil)
	_ ffstore.ChangeNotifier = (*Store)(nil)
	_ ffstore.UnitMerger     = (*Store)(nil)
)

// Open connects to the server or Cluster named by rawURL (see [ParseURL] for the syntax)
// and opens the store there, creating it if it does not exist. opts may be nil; its set
// fields override the URL's parameters.
//
// Open checks the server and fails with an unavailable error if it cannot be reached
// (retryable) or refuses the credentials or another setting of the URL, such as a
// database out of range or a client_name (not retryable), and one coded
// [CodeServerTooOld] for a server older than Redis 7.0 or Valkey 7.2 (on a Cluster, every
// node is checked). It logs a warning when a server has AOF off. It loads the function
// library on every primary. It returns a validation error for a bad URL or options, for a
// database other than 0 on a Cluster node, for a shard count that differs from the
// store's ([CodeShardCountMismatch]), and an unavailable error coded [CodeFormatTooNew]
// for a store written by a newer binary.
func Open(ctx context.Context, rawURL string, opts *Options) (*Store, error) {
	s, o, err := dial(rawURL, opts)
	if err != nil {
		return nil, err
	}
	if err := s.open(ctx, o.Shards); err != nil {
		s.client.Close()
		return nil, err
	}
	return s, nil
}

// Migrate brings the store rawURL names up to this binary's version without creating it:
// it checks the servers and loads the function library on every primary, as [Open] does.
// Like the Postgres store's Migrate, it does not choose the shard count (Options.Shards is
// not used): the first Open chooses it. It writes nothing of the store, and refuses, as
// Open does, one written by a newer binary or whose stored count is malformed. opts may
// be nil; it returns Open's errors.
func Migrate(ctx context.Context, rawURL string, opts *Options) error {
	s, _, err := dial(rawURL, opts)
	if err != nil {
		return err
	}
	defer s.client.Close()
	if err := s.checkServers(ctx); err != nil {
		return err
	}
	if err := loadLibrary(ctx, s.client); err != nil {
		return err
	}
	meta, err := s.readMeta(ctx)
	if err != nil || meta["shards"] == "" {
		return err
	}
	_, err = s.checkMeta(meta, 0)
	return err
}

// dial parses rawURL and opts, connects a client to the server or Cluster and returns the
// store on it, not yet opened, with its options. The caller closes the store's client.
func dial(rawURL string, opts *Options) (*Store, Options, error) {
	cfg, err := parseURL(rawURL)
	if err != nil {
		return nil, Options{}, err
	}
	o, err := cfg.opts.merge(opts).withDefaults()
	if err != nil {
		return nil, o, err
	}
	copt := cfg.client
	copt.DisableCache = true
	// The store retries by its own policy (do): left to the client, a read would be tried
	// again and again while the server is down, until its context ended.
	copt.DisableRetry = true
	if copt.Dialer.Timeout == 0 {
		copt.Dialer.Timeout = 5 * time.Second
	}
	where := strings.Join(copt.InitAddress, ",")
	client, err := rueidis.NewClient(copt)
	if err != nil {
		return nil, o, connectError(err, where+" ("+redact(rawURL)+")", copt.SelectDB)
	}
	var id [8]byte
	_, _ = rand.Read(id[:])
	s := &Store{
		client:   client,
		cluster:  client.Mode() == rueidis.ClientModeCluster,
		prefix:   o.KeyPrefix,
		log:      o.Logger.With("store", "ffvalkey", "prefix", o.KeyPrefix),
		channel:  changesChannel(o.KeyPrefix),
		popTTL:   strconv.FormatInt(max(o.popTTL.Milliseconds(), 1), 10),
		instance: hex.EncodeToString(id[:]),
	}
	s.idle = sync.NewCond(&s.mu)
	s.loader = &loader{client: client}
	if cfg.cluster && !s.cluster {
		client.Close()
		return nil, o, fftype.Validationf(fftype.CodeInvalidInput, "ffvalkey: %s asks for a Cluster, but %s is not in cluster mode; use redis://", redact(rawURL), where)
	}
	return s, o, nil
}

func (s *Store) open(ctx context.Context, shards int) error {
	if err := s.checkServers(ctx); err != nil {
		return err
	}
	if err := loadLibrary(ctx, s.client); err != nil {
		return err
	}
	if err := s.checkPublish(ctx); err != nil {
		return err
	}
	n, err := s.ensureMeta(ctx, shards)
	if err != nil {
		return err
	}
	s.shards = n
	s.keys = make([]shardKeys, n)
	s.gates = make([]commitGate, n)
	for i := range s.keys {
		s.keys[i] = newShardKeys(s.prefix, i, n)
	}
	// A server that lost everything (a restart without persistence) has lost the meta key
	// too: whoever loads the library again writes it back.
	s.loader.after = func(ctx context.Context) error {
		s.heads.invalidate() // commit numbers may have started again too
		_, err := s.ensureMeta(ctx, s.shards)
		return err
	}
	return nil
}

// restoreMeta writes the meta key back if it is missing; a full read of the queue heads
// calls it. The loader writes it back when this process is the one that loads the library
// again after the server lost everything, but another process (of another store on the
// server) may load it first, and on a Cluster the node holding the meta key may hold none
// of the store's shards, whose calls would find the library missing: without this, a
// process opening the store afterwards would create it anew with the default shard count.
// A failure to look is ignored (the node holding the key may be away while the store's
// shards are not): the next full read looks again.
func (s *Store) restoreMeta(ctx context.Context) {
	there, err := s.client.Do(ctx, s.client.B().Hexists().Key(metaKey(s.prefix)).Field("shards").Build()).AsBool()
	if err != nil || there {
		return
	}
	if _, err := s.ensureMeta(ctx, s.shards); err != nil {
		s.log.Warn("ffvalkey: the store's meta key was missing and could not be written back", "err", err)
		return
	}
	s.log.Warn("ffvalkey: the store's meta key was missing (did the server lose its data?); wrote it back",
		"shards", s.shards)
}

// checkServers checks the version of every node and warns about nodes without AOF.
func (s *Store) checkServers(ctx context.Context) error {
	for addr, node := range s.client.Nodes() {
		reply, err := infoOf(ctx, node)
		if err != nil {
			return translate(err, "INFO on "+addr)
		}
		info, err := checkServer(addr, reply)
		if err != nil {
			return err
		}
		role := parseInfo(reply)["role"]
		if info.AOFKnown && !info.AOF && role != "slave" {
			s.log.Warn("ffvalkey: the server has appendonly off: a restart loses every unit acknowledged since the last snapshot (enable appendonly yes, appendfsync everysec or always)",
				"server", addr, "version", info.Product+" "+info.VersionRaw)
		}
	}
	return nil
}

// checkPublish makes sure the store's user may publish on the store's channel, as every
// commit does after its writes: a refused PUBLISH would leave a unit applied but reported
// failed, to be applied again by a retry. Redis 7 gives an ACL user made without channel
// rules no channels at all. The message names no shard, so readers only wake.
func (s *Store) checkPublish(ctx context.Context) error {
	_, err := s.do(ctx, "publish on the store's channel", false, func() rueidis.Completed {
		return s.client.B().Publish().Channel(s.channel).Message(s.instance + ".").Build()
	})
	if noPermission(err) {
		return fftype.Validationf(fftype.CodeInvalidInput,
			"ffvalkey: the server's user may not publish to the channel %q, which every commit does; grant it the command and the channel (ACL SETUSER <user> +publish &%s)", s.channel, s.channel)
	}
	return err
}

// infoOf returns node's INFO sections server, persistence, cluster and replication.
// Redis before 7.0 answers an error to INFO with several sections; to such a server
// infoOf sends a plain INFO, whose default sections include these four, so that the
// version check can refuse it by name rather than fail on the error.
func infoOf(ctx context.Context, node rueidis.Client) (string, error) {
	reply, err := node.Do(ctx, node.B().Info().Section("server", "persistence", "cluster", "replication").Build()).ToString()
	var re *rueidis.RedisError
	if errors.As(err, &re) {
		return node.Do(ctx, node.B().Info().Build()).ToString()
	}
	return reply, err
}

// ensureMeta creates the meta key if it is missing and returns the store's shard count.
func (s *Store) ensureMeta(ctx context.Context, shards int) (int, error) {
	meta, err := s.readMeta(ctx)
	if err != nil {
		return 0, err
	}
	if meta["shards"] == "" {
		n := shards
		if n == 0 {
			n = DefaultShards
		}
		key := metaKey(s.prefix)
		// HSETNX, so that of two processes creating the store at once the first wins and
		// the second reads its count below.
		_, err := s.doMulti(ctx, "create the store's meta key", func() []rueidis.Completed {
			return []rueidis.Completed{
				s.client.B().Hsetnx().Key(key).Field("shards").Value(strconv.Itoa(n)).Build(),
				s.client.B().Hsetnx().Key(key).Field("format").Value(strconv.Itoa(dataFormat)).Build(),
			}
		})
		if err != nil {
			return 0, err
		}
		if meta, err = s.readMeta(ctx); err != nil {
			return 0, err
		}
	}
	return s.checkMeta(meta, shards)
}

// readMeta returns the fields of the store's meta key, none if the store does not exist.
// It refuses a store written in a data format newer than this binary's, whatever else the
// key holds: such a format may keep its fields elsewhere, and nothing of it is to be
// written.
func (s *Store) readMeta(ctx context.Context) (map[string]string, error) {
	res, err := s.do(ctx, "read the store's meta key", true, func() rueidis.Completed {
		return s.client.B().Hgetall().Key(metaKey(s.prefix)).Build()
	})
	if err != nil {
		return nil, err
	}
	m, err := res.AsStrMap()
	if err != nil {
		return nil, translate(err, "read the store's meta key")
	}
	if f, _ := strconv.Atoi(m["format"]); f > dataFormat {
		e := fftype.NewError(fftype.KindUnavailable, CodeFormatTooNew,
			"ffvalkey: the store under prefix %q was written in data format %d by a newer binary; this one knows format %d", s.prefix, f, dataFormat)
		e.Retryable = false
		return nil, e
	}
	return m, nil
}

// checkMeta returns the shard count of an existing store's meta fields (as readMeta
// returns them), refusing a malformed count and a non-zero shards that differs from the
// stored count.
func (s *Store) checkMeta(meta map[string]string, shards int) (int, error) {
	stored, err := strconv.Atoi(meta["shards"])
	if err != nil || stored < 1 || stored > fftype.MaxShards {
		return 0, fftype.NewError(fftype.KindUnavailable, fftype.CodeCorruption, "ffvalkey: the meta key %s holds shards=%q", metaKey(s.prefix), meta["shards"])
	}
	if shards != 0 && shards != stored {
		return 0, fftype.Validationf(CodeShardCountMismatch,
			"ffvalkey: the store under prefix %q has %d shards; it was opened with Shards=%d (the count is fixed when a store is created: pass 0 to use the stored one)", s.prefix, stored, shards)
	}
	return stored, nil
}

// InjectConflicts makes the next n units that would commit fail instead with an error
// matching [fftype.ErrStoreConflict], after fn ran, writing nothing. It is the store's
// ffstoretest.ConflictInjector ability, for testing callers' retries.
func (s *Store) InjectConflicts(n int) { s.conflicts.Inject(n) }

// Shards returns the shard count stored with the store.
func (s *Store) Shards() int { return s.shards }

// KeyPrefix returns the prefix of the store's keys.
func (s *Store) KeyPrefix() string { return s.prefix }

// Cluster reports whether the store runs on a Cluster.
func (s *Store) Cluster() bool { return s.cluster }

// enterShard admits a call about one shard: it fails for a bad shard, then as enter.
func (s *Store) enterShard(ctx context.Context, shard int) error {
	if shard < 0 || shard >= s.shards {
		return fftype.Validationf(fftype.CodeShardOutOfRange, "shard %d is out of range: the store has shards 0 to %d", shard, s.shards-1)
	}
	return s.enter(ctx)
}

// enter admits a call: it fails after Close and when ctx is done. A call that entered
// must leave.
func (s *Store) enter(ctx context.Context) error {
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		return errClosed()
	}
	s.inflight++
	s.mu.Unlock()
	if err := ctx.Err(); err != nil {
		s.leave()
		return err
	}
	return nil
}

func (s *Store) leave() {
	s.mu.Lock()
	s.inflight--
	if s.inflight == 0 {
		s.idle.Broadcast()
	}
	s.mu.Unlock()
}

// QueueHeads returns the first item of every non-empty queue, on any shard, whose name
// starts with one of prefixes; a queue matched by two prefixes is reported once. The
// heads include items that in-flight units are popping. Order is unspecified.
//
// The result is a hint, and is served from memory (see headsCache): commits of this
// process update it at once, and it is read again from the server when it is older than
// 250ms, or when another process's commit said that it may have moved a head earlier (a
// wake-up message on the store's channel, naming the commit's shard). A read takes the
// store's hint of the queues that may be non-empty (one command per prefix: an idle lane
// costs no more), the directories of the shards wake-ups named, then the hinted and
// listed queues' first items, in at most two pipelined round trips; every 2s, and after
// the change subscription was lost, it reads every shard's directory instead and
// repairs the hint.
func (s *Store) QueueHeads(ctx context.Context, prefixes []string) ([]ffstore.QueueHead, error) {
	if err := s.enter(ctx); err != nil {
		return nil, err
	}
	defer s.leave()
	prefixes = ffstore.DisjointPrefixes(prefixes)
	if len(prefixes) == 0 {
		return nil, nil
	}
	s.subOnce.Do(s.subscribe) // wake-ups from other processes keep the cache fresh
	return s.heads.queueHeads(ctx, prefixes, s.shards, s.readHeads)
}

// queueRef names one queue of one shard.
type queueRef struct {
	shard int
	name  string
}

// readHeads reads the first item of every non-empty queue matching prefixes that the
// store's hint lists, or that the directories of the shards plan names list (every shard
// for a full read), with the commit number of each shard read from before its heads; see
// headsCache. A full read also repairs the hint: it adds the queues found non-empty that
// the hint misses and removes those it lists that are empty.
func (s *Store) readHeads(ctx context.Context, prefixes []string, plan headsPlan) (headsRead, error) {
	type bound struct{ lo, hi string }
	bounds := make([]bound, len(prefixes))
	for i, p := range prefixes {
		bounds[i].lo, bounds[i].hi = prefixBounds(p)
	}
	scanned := plan.woken
	if plan.full {
		scanned = make([]int, s.shards)
		for i := range scanned {
			scanned[i] = i
		}
	}
	// One round trip: the hint's entries for the prefixes, and the scanned shards'
	// commit numbers and directories.
	hint := hintKey(s.prefix)
	per := 1 + len(bounds)
	res, err := s.doMulti(ctx, "read queue directories", func() []rueidis.Completed {
		cmds := make([]rueidis.Completed, 0, len(bounds)+len(scanned)*per)
		for _, b := range bounds {
			cmds = append(cmds, s.client.B().Zrange().Key(hint).Min(b.lo).Max(b.hi).Bylex().Build())
		}
		for _, shard := range scanned {
			k := &s.keys[shard]
			cmds = append(cmds, s.client.B().Get().Key(k.ver).Build())
			for _, b := range bounds {
				cmds = append(cmds, s.client.B().Zrange().Key(k.dir).Min(b.lo).Max(b.hi).Bylex().Build())
			}
		}
		return cmds
	})
	if err != nil {
		return headsRead{}, err
	}
	hinted := map[queueRef]bool{}
	for i := range bounds {
		members, err := res[i].AsStrSlice()
		if err != nil {
			return headsRead{}, translate(err, "read the hint of non-empty queues")
		}
		for _, m := range members {
			// The range holds every member starting with the prefix, and a member is the
			// name followed by a NUL byte: a prefix ending in NUL matches shorter names.
			if name, shard, ok := parseHintMember(m, s.shards); ok && strings.HasPrefix(name, prefixes[i]) {
				hinted[queueRef{shard, name}] = true
			}
		}
	}
	vers := make([]uint64, s.shards)
	isScanned := make([]bool, s.shards)
	read := make([]map[string]bool, s.shards)
	listed := map[queueRef]bool{}
	var refs []queueRef
	for j, shard := range scanned {
		isScanned[shard] = true
		base := len(bounds) + j*per
		if vers[shard], err = optUint(res[base]); err != nil {
			return headsRead{}, translate(err, "read queue directories")
		}
		for b := 1; b < per; b++ {
			names, err := res[base+b].AsStrSlice()
			if err != nil {
				return headsRead{}, translate(err, "read queue directories")
			}
			for _, name := range names {
				r := queueRef{shard, name}
				listed[r] = true
				refs = append(refs, r)
			}
		}
	}
	// The hinted queues of shards not scanned are read with their shard's commit number.
	var verShards []int
	for r := range hinted {
		if isScanned[r.shard] {
			continue
		}
		refs = append(refs, r)
		if read[r.shard] == nil {
			read[r.shard] = map[string]bool{}
			verShards = append(verShards, r.shard)
		}
		read[r.shard][r.name] = true
	}
	found := make([]map[string]ffstore.QueueItem, s.shards)
	for i := range found {
		found[i] = map[string]ffstore.QueueItem{}
	}
	if len(refs) > 0 {
		if err := s.readQueueHeads(ctx, refs, verShards, found, vers); err != nil {
			return headsRead{}, err
		}
	}
	if plan.full {
		s.repairHint(ctx, hinted, listed, found)
		s.restoreMeta(ctx)
	}
	return headsRead{found: found, vers: vers, scanned: isScanned, read: read}, nil
}

// readQueueHeads reads the first item of each queue of refs into found, and the commit
// number of each shard of verShards into vers, read before its heads.
func (s *Store) readQueueHeads(ctx context.Context, refs []queueRef, verShards []int, found []map[string]ffstore.QueueItem, vers []uint64) error {
	res, err := s.doMulti(ctx, "read queue heads", func() []rueidis.Completed {
		cmds := make([]rueidis.Completed, 0, len(verShards)+len(refs))
		for _, shard := range verShards {
			cmds = append(cmds, s.client.B().Get().Key(s.keys[shard].ver).Build())
		}
		for _, r := range refs {
			cmds = append(cmds, s.client.B().Zrange().Key(s.keys[r.shard].queue(r.name)).Min("0").Max("0").Build())
		}
		return cmds
	})
	if err != nil {
		return err
	}
	for i, shard := range verShards {
		if vers[shard], err = optUint(res[i]); err != nil {
			return translate(err, "read queue heads")
		}
	}
	res = res[len(verShards):]
	for i, r := range refs {
		encs, err := res[i].AsStrSlice()
		if err != nil {
			return translate(err, "read queue heads")
		}
		if len(encs) == 0 {
			continue // emptied since the directory was read, or a stale hint
		}
		score, member, ok := decodeItem(encs[0])
		if !ok {
			return fftype.NewError(fftype.KindUnavailable, fftype.CodeCorruption, "ffvalkey: queue %q of shard %d has a malformed head", r.name, r.shard)
		}
		found[r.shard][r.name] = ffstore.QueueItem{Member: member, Score: score}
	}
	return nil
}

// repairHint brings the hint in line with a full read: it adds the queues found
// non-empty that it misses, and removes those it lists that no directory listed. A
// removal takes the entries out first and then, per shard, drops the empty queues from
// the hinted set (ffv5_unhint), putting back those filled meanwhile: a commit that fills
// one after that adds it itself. Failures are logged; the next full read tries again.
func (s *Store) repairHint(ctx context.Context, hinted, listed map[queueRef]bool, found []map[string]ffstore.QueueItem) {
	var add, drop []string
	stale := map[int][]string{}
	for shard, m := range found {
		for name := range m {
			if !hinted[queueRef{shard, name}] {
				add = append(add, hintMember(name, shard))
			}
		}
	}
	for r := range hinted {
		if !listed[r] {
			drop = append(drop, hintMember(r.name, r.shard))
			stale[r.shard] = append(stale[r.shard], r.name)
		}
	}
	if len(drop) > 0 {
		back, err := s.dropHints(ctx, drop, stale)
		if err != nil {
			s.log.Warn("ffvalkey: removing stale entries of the hint of non-empty queues failed", "err", err)
		}
		add = append(add, back...)
	}
	if len(add) > 0 {
		s.zaddHint(ctx, add)
	}
}

// dropHints removes members from the hint, then the stale queues (by shard) from their
// shards' hinted sets, and returns the members of the queues filled meanwhile, which
// must go back.
func (s *Store) dropHints(ctx context.Context, members []string, stale map[int][]string) ([]string, error) {
	hint := hintKey(s.prefix)
	if _, err := s.do(ctx, "remove hints", true, func() rueidis.Completed {
		return s.client.B().Zrem().Key(hint).Member(members...).Build()
	}); err != nil {
		return nil, err
	}
	shards := make([]int, 0, len(stale))
	for shard := range stale {
		shards = append(shards, shard)
	}
	res, err := s.doMulti(ctx, "remove hints", func() []rueidis.Completed {
		cmds := make([]rueidis.Completed, len(shards))
		for i, shard := range shards {
			k := &s.keys[shard]
			cmds[i] = s.client.B().Fcall().Function(fnUnhint).Numkeys(2).Key(k.dir, k.hinted).Arg(stale[shard]...).Build()
		}
		return cmds
	})
	if err != nil {
		// Put every entry back: which shards forgot theirs is unknown.
		return members, err
	}
	var back []string
	for i, shard := range shards {
		names, err := res[i].AsStrSlice()
		if err != nil {
			return members, translate(err, "remove hints")
		}
		for _, name := range names {
			back = append(back, hintMember(name, shard))
		}
	}
	return back, nil
}

// addHints adds the queues a commit on shard reported to the hint.
func (s *Store) addHints(ctx context.Context, shard int, names []string) {
	members := make([]string, len(names))
	for i, name := range names {
		members[i] = hintMember(name, shard)
	}
	s.zaddHint(ctx, members)
}

// zaddHint adds members to the hint. A failure is logged: the queues' shards stay in the
// hinted sets, and the next full read of heads adds them.
func (s *Store) zaddHint(ctx context.Context, members []string) {
	hint := hintKey(s.prefix)
	if _, err := s.do(ctx, "add hints", true, func() rueidis.Completed {
		cmd := s.client.B().Zadd().Key(hint).ScoreMember()
		for _, m := range members {
			cmd = cmd.ScoreMember(0, m)
		}
		return cmd.Build()
	}); err != nil {
		s.log.Warn("ffvalkey: adding to the hint of non-empty queues failed; full reads of queue heads repair it", "err", err)
	}
}

// wakeMessage is the wake-up message of a commit on shard: "<instance>.<shard>", to which
// the commit appends ":h" when it moved a head earlier.
func (s *Store) wakeMessage(shard int) string { return s.instance + "." + strconv.Itoa(shard) }

// ReadEvents returns up to limit events of shard with Seq greater than after, in Seq
// order; limit <= 0 returns none. If events after `after` were trimmed it returns an
// error matching [fftype.ErrCursorExpired]. Argument errors are as for Update.
func (s *Store) ReadEvents(ctx context.Context, shard int, after uint64, limit int) ([]fftype.Event, error) {
	if err := s.enterShard(ctx, shard); err != nil {
		return nil, err
	}
	defer s.leave()
	if limit <= 0 || after >= math.MaxInt64 {
		return nil, nil
	}
	k := &s.keys[shard]
	start := "0-" + strconv.FormatUint(after+1, 10)
	// The trim point is read after the events, in the same round trip: it only grows, so
	// if after is not below it then, nothing the range needed had been trimmed.
	res, err := s.doMulti(ctx, "read events", func() []rueidis.Completed {
		return []rueidis.Completed{
			s.client.B().Xrange().Key(k.stream).Start(start).End("+").Count(int64(limit)).Build(),
			s.client.B().Get().Key(k.trim).Build(),
		}
	})
	if err != nil {
		return nil, err
	}
	entries, err := res[0].AsXRange()
	if err != nil {
		return nil, translate(err, "read events")
	}
	trimmed, err := optUint(res[1])
	if err != nil {
		return nil, translate(err, "read the trim point")
	}
	if len(entries) > 0 {
		s.gates[shard].wait() // this process's commits among them have patched their heads
	}
	if after < trimmed {
		return nil, ffstore.CursorExpired(shard, after, trimmed)
	}
	out := make([]fftype.Event, 0, len(entries))
	for _, e := range entries {
		_, seqText, _ := strings.Cut(e.ID, "-")
		seq, err := strconv.ParseUint(seqText, 10, 64)
		raw, ok := e.FieldValues["e"]
		ev := fftype.Event{Seq: seq, Shard: shard}
		if err == nil && ok {
			err = decodeEvent([]byte(raw), &ev)
		}
		if err != nil || !ok {
			return nil, &fftype.Error{Kind: fftype.KindUnavailable, Code: fftype.CodeCorruption,
				Message: fmt.Sprintf("ffvalkey: event %s of shard %d could not be decoded", e.ID, shard), Err: err}
		}
		out = append(out, ev)
	}
	return out, nil
}

// optUint reads an optional decimal reply; nil reads as 0.
func optUint(r rueidis.RedisResult) (uint64, error) {
	s, err := r.ToString()
	if rueidis.IsRedisNil(err) {
		return 0, nil
	}
	if err != nil {
		return 0, err
	}
	return strconv.ParseUint(s, 10, 64)
}

// EventBounds returns the trim point of shard's log and the Seq of its last event, read
// together in one function call. Argument errors are as for Update.
func (s *Store) EventBounds(ctx context.Context, shard int) (trimmed, last uint64, err error) {
	if err := s.enterShard(ctx, shard); err != nil {
		return 0, 0, err
	}
	defer s.leave()
	k := &s.keys[shard]
	res, err := s.do(ctx, "read event bounds", true, func() rueidis.Completed {
		return s.client.B().FcallRo().Function(fnBounds).Numkeys(2).Key(k.trim, k.stream).Build()
	})
	if err != nil {
		return 0, 0, err
	}
	arr, err := res.ToArray()
	if err != nil || len(arr) != 2 {
		return 0, 0, translate(errors.Join(err, errors.New("unexpected reply")), "read event bounds")
	}
	t, err1 := arr[0].AsInt64()
	l, err2 := arr[1].AsInt64()
	if err1 != nil || err2 != nil || t < 0 || l < t {
		return 0, 0, translate(errors.Join(err1, err2, errors.New("unexpected reply")), "read event bounds")
	}
	return uint64(t), uint64(l), nil
}

// TrimEvents deletes the events of shard up to Seq through (at most the last one) and
// raises the shard's trim point, in one function call. Argument errors are as for Update.
func (s *Store) TrimEvents(ctx context.Context, shard int, through uint64) error {
	if err := s.enterShard(ctx, shard); err != nil {
		return err
	}
	defer s.leave()
	k := &s.keys[shard]
	through = min(through, math.MaxInt64)
	_, err := s.do(ctx, "trim events", false, func() rueidis.Completed {
		return s.client.B().Fcall().Function(fnTrim).Numkeys(2).Key(k.trim, k.stream).
			Arg(strconv.FormatUint(through, 10)).Build()
	})
	return err
}

// Now returns the server's clock (TIME; on a Cluster, some node's).
func (s *Store) Now(ctx context.Context) (time.Time, error) {
	if err := s.enter(ctx); err != nil {
		return time.Time{}, err
	}
	defer s.leave()
	res, err := s.do(ctx, "read the server's clock", true, func() rueidis.Completed {
		return s.client.B().Time().Build()
	})
	if err != nil {
		return time.Time{}, err
	}
	parts, err := res.AsStrSlice()
	if err != nil || len(parts) != 2 {
		return time.Time{}, translate(errors.Join(err, errors.New("unexpected reply")), "read the server's clock")
	}
	sec, err1 := strconv.ParseInt(parts[0], 10, 64)
	usec, err2 := strconv.ParseInt(parts[1], 10, 64)
	if err1 != nil || err2 != nil {
		return time.Time{}, translate(errors.Join(err1, err2), "read the server's clock")
	}
	return time.Unix(sec, usec*1000), nil
}

// Changes implements [ffstore.ChangeNotifier]. It wakes after every commit of this store
// at once and, through one Pub/Sub subscription per store (every commit publishes on the
// store's channel, <prefix>:changes), soon after commits of other processes. Pub/Sub is a
// lossy doorbell: wake-ups from other processes are missed until the first subscription,
// which the first call starts and does not wait for, is in place, and while a dropped one
// is being renewed; so each time the subscription is in place every reader is woken and
// the queue heads are read in full. The log itself is never lossy.
func (s *Store) Changes(ctx context.Context) <-chan struct{} {
	ch := s.changes.Changes(ctx) // first: the wake-up for the first subscription reaches it
	s.subOnce.Do(s.subscribe)
	return ch
}

// subscribe starts the goroutine that holds the subscription until Close.
func (s *Store) subscribe() {
	ctx, cancel := context.WithCancel(context.Background())
	s.mu.Lock()
	closed := s.closed
	s.subCancel, s.subDone = cancel, make(chan struct{})
	s.mu.Unlock()
	if closed {
		cancel()
		close(s.subDone)
		return
	}
	go func() {
		defer close(s.subDone)
		delay := retryFirst
		for renewed := false; ctx.Err() == nil; renewed = true {
			// Receive ends when its connection drops (the client's retries are disabled),
			// and this loop subscribes again. Wake-ups published before a subscription is
			// in place (the first one, or a renewed one) reached nobody: each
			// confirmation makes up for them.
			hooked := rueidis.WithOnSubscriptionHook(ctx, func(sub rueidis.PubSubSubscription) {
				if sub.Kind != "subscribe" {
					return
				}
				s.heads.invalidate()
				s.changes.Notify()
				if renewed {
					s.log.Info("ffvalkey: the change subscription is back")
				}
			})
			err := s.client.Receive(hooked, s.client.B().Subscribe().Channel(s.channel).Build(), func(msg rueidis.PubSubMessage) {
				from, flag, _ := strings.Cut(msg.Message, ":")
				instance, shardText, _ := strings.Cut(from, ".")
				if instance == s.instance {
					return // this process's own commit, already seen
				}
				if flag == "h" {
					if shard, err := strconv.Atoi(shardText); err == nil && shard >= 0 && shard < s.shards {
						s.heads.wake(shard)
					} else {
						s.heads.invalidate() // a message without a shard: read them all
					}
				}
				s.changes.Notify()
			})
			if ctx.Err() != nil || errors.Is(err, rueidis.ErrClosing) {
				return
			}
			// The dropped connection may have taken wake-ups with it: read again now (those
			// published until the next subscription are made up for when it is in place).
			s.heads.invalidate()
			s.changes.Notify()
			s.log.Warn("ffvalkey: the change subscription ended; subscribing again", "err", err)
			if !sleepCtx(ctx, delay) {
				return
			}
			delay = min(2*delay, 5*time.Second)
		}
	}()
}

// Drop deletes every key of the store — its records, queues, event logs and meta key —
// from every node, leaving other data on the server alone. The store must not be used
// afterwards except to Close it. It is for benchmarks and tests that create a store
// under a fresh prefix and remove it when done.
func (s *Store) Drop(ctx context.Context) error {
	if err := s.enter(ctx); err != nil {
		return err
	}
	defer s.leave()
	// The shard keys are "<prefix>:{…": prefixes hold no braces, so no other store's keys
	// match, not even those of a store whose prefix extends this one's.
	pattern := globEscape(s.prefix) + ":{*"
	for _, key := range []string{metaKey(s.prefix), hintKey(s.prefix)} {
		if err := s.client.Do(ctx, s.client.B().Unlink().Key(key).Build()).Error(); err != nil {
			return translate(err, "delete the store's keys")
		}
	}
	for addr, node := range s.client.Nodes() {
		var cursor uint64
		for {
			entry, err := node.Do(ctx, node.B().Scan().Cursor(cursor).Match(pattern).Count(1000).Build()).AsScanEntry()
			if err != nil {
				return translate(err, "scan the store's keys on "+addr)
			}
			if len(entry.Elements) > 0 {
				cmds := make([]rueidis.Completed, len(entry.Elements))
				for i, key := range entry.Elements {
					cmds[i] = s.client.B().Unlink().Key(key).Build()
				}
				for _, r := range s.client.DoMulti(ctx, cmds...) {
					if err := r.Error(); err != nil {
						return translate(err, "delete the store's keys")
					}
				}
			}
			if cursor = entry.Cursor; cursor == 0 {
				break
			}
		}
	}
	s.heads.invalidate()
	return nil
}

// globEscape escapes the characters special to SCAN MATCH.
func globEscape(p string) string {
	var b strings.Builder
	for _, r := range p {
		if strings.ContainsRune(`*?[]\`, r) {
			b.WriteByte('\\')
		}
		b.WriteRune(r)
	}
	return b.String()
}

// MergeUnits implements [ffstore.UnitMerger]: every unit reads in a round trip of its
// own and commits with a function call that does some work once per call whatever the
// unit's size (the commit counter, the wake-up, one command per queue it touches, the
// new head of each), which pipelining does not share; so the engine merges concurrent
// small units. (The call itself costs the server little: about 3 µs for an empty unit.)
func (s *Store) MergeUnits() {}

// Close waits for the calls in progress to finish, then closes the connections. Later
// calls, Close included, return an unavailable error.
func (s *Store) Close() error {
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		return errClosed()
	}
	s.closed = true
	for s.inflight > 0 {
		s.idle.Wait()
	}
	cancel, done := s.subCancel, s.subDone
	s.mu.Unlock()
	if cancel != nil {
		cancel()
		<-done
	}
	s.client.Close()
	return nil
}
