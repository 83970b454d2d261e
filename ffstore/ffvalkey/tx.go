package ffvalkey

import (
	"bytes"
	"context"
	"errors"
	"math"
	"slices"
	"strconv"
	"time"

	"github.com/redis/rueidis"

	"github.com/flowfabric/flowfabric/ffstore"
	"github.com/flowfabric/flowfabric/fftype"
)

// commitTimeout bounds a commit, which runs even if the unit's ctx ends meanwhile so that
// an error from Update means, as far as the store can tell, that nothing was written.
const commitTimeout = 30 * time.Second

// lookahead is how many queue items after its pops a PopDue also reads, so that a Range
// of the queue right after it needs no round trip. A claim's pop (PopDueFetch with kinds)
// reads eight claims ahead as well, at most foreseeMax items, for the next claims to
// foresee (see foresight).
const (
	lookahead  = 2
	foreseeMax = 128
)

func errTxDone() error {
	return fftype.Validationf(fftype.CodeInvalidInput, "ffvalkey: transaction used after its unit ended")
}

// tx is a unit (update) or a View's reads. Reads go to the server at once and are kept
// with what is needed to check them at commit; writes are buffered until commit.
type tx struct {
	s      *Store
	k      *shardKeys
	shard  int
	ctx    context.Context
	update bool
	done   bool
	token  string // identifies the unit's pop marks
	rts    int    // server round trips made for reads
	// earlier is set once the unit took reads made before it began (foresee, or records
	// this process wrote): with them its reads are not one snapshot, however few its
	// round trips. remembered lists the Redis keys of those it took from writtenRecords.
	earlier    bool
	remembered []string

	reads map[string]*readEntry

	writes     map[string]*writeEntry
	writeOrder []string

	queues     map[string]*queueState
	queueOrder []string

	events []fftype.Event

	popFailed []string // queues whose PopDue failed: what it marked is unknown
}

// readEntry is a record as read: version "" means it did not exist.
type readEntry struct {
	version string
	// digest, for a record taken from writtenRecords, is the SHA-1 (hex) of what the
	// server should hold: the commit checks it instead of the version, since commit
	// numbers start again after the server lost data.
	digest string
	// value is the reply's own bytes (rueidis's AsBytes: the bulk string it read, which
	// it allocates per reply and keeps nowhere else, as bytes without a copy). The unit
	// reads it, and Get hands it out, without copying it; GetValueIsTheCallers in the
	// conformance suite fails if a later rueidis shares those bytes.
	value []byte
}

// writeEntry is the final write of a record in the unit.
type writeEntry struct {
	value []byte
	del   bool
}

// queueState is what a unit did with one queue.
type queueState struct {
	name    string
	reads   []string // encoded items returned by Range, checked at commit
	readSet map[string]bool
	pops    []string // encoded items popped
	// Encoded items taken without a pop, as foreseen (PopDueFetch): the commit checks
	// that they are still the first items of the queue this unit can see.
	foreseen []string
	kinds    []string // the record kinds PopDueFetch read for the items it took
	want     int      // about the most items the queue's recent pops asked for
	ops      map[string]queueOp
	opOrder  []string

	// The items after the unit's pops that the last PopDue saw, and whether they reach
	// the end of the queue: a Range inside them is answered without a round trip.
	ahead     []cachedItem
	aheadOK   bool
	aheadDone bool
}

type cachedItem struct {
	item ffstore.QueueItem
	enc  string
}

// queueOp is the final write of one member: remove, or add with score.
type queueOp struct {
	remove bool
	score  int64
}

func (s *Store) newTx(ctx context.Context, shard int, update bool) *tx {
	t := &tx{s: s, k: &s.keys[shard], shard: shard, ctx: ctx, update: update}
	if update {
		t.token = s.instance + "." + strconv.FormatUint(s.units.Add(1), 36)
	}
	return t
}

func (t *tx) queue(name string) *queueState {
	if q, ok := t.queues[name]; ok {
		return q
	}
	if t.queues == nil {
		t.queues = map[string]*queueState{}
	}
	q := &queueState{name: name}
	t.queues[name] = q
	t.queueOrder = append(t.queueOrder, name)
	return q
}

func (t *tx) live(op string) {
	if t.done {
		panic("ffvalkey: " + op + " on a transaction whose unit has ended (fn must not retain tx)")
	}
}

// Prefetch reads the keys not read or written yet in one round trip (MGET).
func (t *tx) Prefetch(keys ...string) error {
	if t.done {
		return errTxDone()
	}
	if need := t.unread(keys); len(need) > 0 {
		return t.fetch(need)
	}
	return nil
}

// fetch reads records, in one MGET, but in a unit takes those this process wrote last
// from writtenRecords.
func (t *tx) fetch(keys []string) error {
	if t.update {
		keys = t.recall(keys)
		if len(keys) == 0 {
			return nil
		}
	}
	full := t.mgetKeys(keys)
	t.rts++
	res, err := t.s.do(t.ctx, "read records", true, func() rueidis.Completed {
		return t.s.client.B().Mget().Key(full...).Build()
	})
	if err != nil {
		return err
	}
	return t.absorb(t.readMap(len(keys)), keys, res, nil)
}

// recall takes into the unit's reads the records of keys that this process wrote last,
// and returns the other keys.
func (t *tx) recall(keys []string) []string {
	rest := keys[:0:0]
	for _, k := range keys {
		rk := t.k.record(k)
		r, ok := t.s.written.get(rk)
		if !ok {
			rest = append(rest, k)
			continue
		}
		t.readMap(len(keys))[k] = r
		t.remembered = append(t.remembered, rk)
		t.earlier = true
	}
	return rest
}

// stale is called when a check of the unit's reads failed. The records it took from
// writtenRecords, or the items it foresaw, may be why: the unit's next run reads those
// records from the server, and the queues go without foresight for a while.
func (t *tx) stale() {
	t.s.written.forget(t.remembered)
	for _, name := range t.queueOrder {
		if len(t.queues[name].foreseen) > 0 {
			t.s.foresight.failed(t.shard, name)
		}
	}
}

// mgetKeys returns the keys of an MGET of records.
func (t *tx) mgetKeys(keys []string) []string {
	full := make([]string, 0, len(keys))
	for _, k := range keys {
		full = append(full, t.k.record(k))
	}
	return full
}

// readMap returns the unit's reads, made for n if need be.
func (t *tx) readMap(n int) map[string]*readEntry {
	if t.reads == nil {
		t.reads = make(map[string]*readEntry, n)
	}
	return t.reads
}

// absorb takes the reply of an MGET of mgetKeys(keys) into the unit's reads, those of
// keys for which keep (if not nil) says so.
func (t *tx) absorb(into map[string]*readEntry, keys []string, res rueidis.RedisResult, keep func(key string) bool) error {
	arr, err := res.ToArray()
	if err == nil && len(arr) != len(keys) {
		err = errors.New("MGET returned the wrong number of values")
	}
	if err != nil {
		return translate(err, "read records")
	}
	for i, k := range keys {
		if keep != nil && !keep(k) {
			continue
		}
		m := &arr[i]
		if m.IsNil() {
			into[k] = &readEntry{} // checked at commit as missing, like any version
			continue
		}
		v, err := m.ToString()
		if err != nil {
			return translate(err, "read records")
		}
		if len(v) < versionLen {
			return fftype.NewError(fftype.KindUnavailable, fftype.CodeCorruption, "ffvalkey: record %q of shard %d has no version", k, t.shard)
		}
		b, _ := m.AsBytes() // v's bytes, not a copy
		into[k] = &readEntry{version: v[:versionLen], value: b[versionLen:]}
	}
	return nil
}

// Get returns the value under key, from the unit's writes, its earlier reads, or the
// server (one round trip).
func (t *tx) Get(key string) ([]byte, bool, error) {
	if t.done {
		return nil, false, errTxDone()
	}
	if w, ok := t.writes[key]; ok {
		if w.del {
			return nil, false, nil
		}
		return bytes.Clone(w.value), true, nil
	}
	r, ok := t.reads[key]
	if !ok {
		if err := t.fetch([]string{key}); err != nil {
			return nil, false, err
		}
		r = t.reads[key]
	}
	if r.version == "" {
		return nil, false, nil
	}
	return r.value, true, nil
}

// Range returns up to n items of queue. In a unit it leaves out the items the unit
// popped and those other units are popping (as if they had committed; should one abort,
// its items reappear), and after a PopDue it is often answered from what the pop saw. In
// a View it reads the queue as committed. The items returned are checked at commit.
func (t *tx) Range(queue string, after *ffstore.QueueItem, maxScore int64, n int) ([]ffstore.QueueItem, error) {
	if t.done {
		return nil, errTxDone()
	}
	if n <= 0 {
		return nil, nil
	}
	q := t.queue(queue)
	if q.aheadOK {
		if items, ok := q.fromCache(after, maxScore, n); ok {
			out := make([]ffstore.QueueItem, len(items))
			for i, c := range items {
				out[i] = c.item
				q.read(c.enc)
			}
			return out, nil
		}
	}
	from := lexAfter(after)
	qk, mk := t.k.queue(queue), t.k.marks(queue)
	// Items the unit took by foresight carry no mark of its own: the server returns
	// them, and they are left out here.
	ask := strconv.Itoa(n)
	if n <= math.MaxInt-len(q.foreseen) {
		ask = strconv.Itoa(n + len(q.foreseen))
	}
	t.rts++
	res, err := t.s.do(t.ctx, "read queue", true, func() rueidis.Completed {
		if t.update {
			return t.s.client.B().FcallRo().Function(fnRange).Numkeys(2).Key(qk, mk).
				Arg(from, scoreBound(maxScore), ask, t.token).Build()
		}
		return t.s.client.B().Zrange().Key(qk).Min(from).Max(lexUpTo(maxScore)).Bylex().Limit(0, int64(n)).Build()
	})
	if err != nil {
		return nil, err
	}
	encs, err := res.AsStrSlice()
	if err != nil {
		return nil, translate(err, "read queue")
	}
	out := make([]ffstore.QueueItem, 0, len(encs))
	for _, enc := range encs {
		if len(out) == n {
			break
		}
		if slices.Contains(q.foreseen, enc) {
			continue
		}
		it, err := t.decode(queue, enc)
		if err != nil {
			return nil, err
		}
		q.read(enc)
		out = append(out, it)
	}
	return out, nil
}

func (t *tx) decode(queue, enc string) (ffstore.QueueItem, error) {
	score, member, ok := decodeItem(enc)
	if !ok {
		return ffstore.QueueItem{}, fftype.NewError(fftype.KindUnavailable, fftype.CodeCorruption, "ffvalkey: queue %q of shard %d holds a malformed item", queue, t.shard)
	}
	return ffstore.QueueItem{Member: member, Score: score}, nil
}

func (q *queueState) read(enc string) {
	if q.readSet[enc] {
		return
	}
	if q.readSet == nil {
		q.readSet = map[string]bool{}
	}
	q.readSet[enc] = true
	q.reads = append(q.reads, enc)
}

// fromCache answers a Range from the items the last PopDue saw, if they cover it.
func (q *queueState) fromCache(after *ffstore.QueueItem, maxScore int64, n int) ([]cachedItem, bool) {
	var out []cachedItem
	for _, c := range q.ahead {
		if after != nil && !after.Less(c.item) {
			continue
		}
		if c.item.Score > maxScore {
			return out, true
		}
		out = append(out, c)
		if len(out) == n {
			return out, true
		}
	}
	return out, q.aheadDone
}

// PopDue marks up to n due items of queue as popped by this unit (skipping items other
// units are popping) and returns them. The commit takes them out of the queue; if the
// unit does not commit they are released, or their marks lapse.
func (t *tx) PopDue(queue string, maxScore int64, n int) ([]ffstore.QueueItem, error) {
	return t.PopDueFetch(queue, maxScore, n)
}

// PopDueFetch implements [ffstore.PopFetcher]. If the commit of the last unit that took
// items of this queue in this process read, less than foresightFresh ago, the records of
// the n items after them, and they are due, it takes those (a foreseen pop, see
// foresight) without a round trip. Otherwise it pops, and the records of the members the
// store expects the pop to return — the items the last pop of this queue in this process
// saw after its own — are read in the same round trip as the pop; those of members it did
// not expect, in one more.
func (t *tx) PopDueFetch(queue string, maxScore int64, n int, kinds ...string) ([]ffstore.QueueItem, error) {
	if t.done {
		return nil, errTxDone()
	}
	if n <= 0 {
		return nil, nil
	}
	q := t.queue(queue)
	// The items this unit took by foresight carry no mark: a pop returns them first,
	// marked now as the unit's own, and the items after them are this pop's.
	took := q.foreseen
	var last *foreseen
	if len(kinds) > 0 && len(took) == 0 {
		q.want = t.s.foresight.asked(t.shard, queue, n)
		var warm bool
		last, warm = t.s.foresight.take(t.shard, queue)
		if warm && last != nil && len(q.pops) == 0 {
			if items, ok := t.foresee(q, last, maxScore, n, kinds); ok {
				return items, nil
			}
		}
	}
	qk, mk := t.k.queue(queue), t.k.marks(queue)
	look := strconv.Itoa(lookahead)
	if len(kinds) > 0 {
		look = strconv.Itoa(lookahead + min(8*n, foreseeMax)) // for the next pops
	}
	pop := func() rueidis.Completed {
		return t.s.client.B().Fcall().Function(fnPop).Numkeys(2).Key(qk, mk).
			Arg(scoreBound(maxScore), strconv.Itoa(n+len(took)), t.token, t.s.popTTL, look).Build()
	}
	guessed := t.unread(ffstore.MemberRecordKeys(last.members(n), kinds))
	var riders []rueidis.Completed
	if len(guessed) > 0 {
		riders = append(riders, t.s.client.B().Mget().Key(t.mgetKeys(guessed)...).Build())
	}
	t.rts++
	res, rode, err := t.s.doRiding(t.ctx, "pop queue items", false, pop, riders...)
	if err != nil {
		t.popFailed = append(t.popFailed, queue)
		return nil, err
	}
	if len(riders) > 0 && rode == nil {
		t.rts++ // the pop was sent again, without the reads
	}
	arr, err := res.ToArray()
	if err == nil && len(arr) != 3 {
		err = errors.New("unexpected reply")
	}
	var popped, ahead []string
	var done int64
	if err == nil {
		popped, err = arr[0].AsStrSlice()
	}
	if err == nil {
		ahead, err = arr[1].AsStrSlice()
	}
	if err == nil {
		done, err = arr[2].AsInt64()
	}
	if err != nil {
		return nil, translate(err, "pop queue items")
	}
	out := make([]ffstore.QueueItem, 0, len(popped))
	members := make([]string, 0, len(popped))
	for _, enc := range popped {
		it, err := t.decode(queue, enc)
		if err != nil {
			return nil, err
		}
		q.pops = append(q.pops, enc)
		out = append(out, it)
		members = append(members, it.Member)
	}
	if len(took) > 0 {
		// Every item popped is marked, and released if the unit does not commit.
		if len(popped) < len(took) || !slices.Equal(popped[:len(took)], took) {
			return nil, conflict("unit on shard %d popped queue %q again, and the items it had foreseen were no longer its head", t.shard, queue)
		}
		q.foreseen = nil
		out, members = out[len(took):], members[len(took):]
	}
	q.ahead = make([]cachedItem, 0, len(ahead))
	for _, enc := range ahead {
		it, err := t.decode(queue, enc)
		if err != nil {
			return nil, err
		}
		q.ahead = append(q.ahead, cachedItem{item: it, enc: enc})
	}
	q.aheadOK, q.aheadDone = true, done == 1
	if len(kinds) == 0 {
		return out, nil
	}
	q.kinds = slices.Clone(kinds)
	t.s.foresight.saw(t.shard, queue, &foreseen{items: q.ahead})
	need := t.unread(ffstore.MemberRecordKeys(members, kinds))
	if len(rode) > 0 && rode[0].Error() == nil { // else they are read below
		// Only the records of members popped count as read (and are checked at commit).
		popped := make(map[string]bool, len(need))
		for _, k := range need {
			popped[k] = true
		}
		if err := t.absorb(t.readMap(len(guessed)), guessed, rode[0], func(key string) bool { return popped[key] }); err != nil {
			return nil, err
		}
		need = t.unread(need)
	}
	if len(need) > 0 {
		if err := t.fetch(need); err != nil {
			return nil, err
		}
	}
	return out, nil
}

// foresee takes, as a pop would, the items that last says come next in q's queue, with
// their records read beside the commit that popped the items before them, if last tells
// them and has their records: no round trip. The commit checks that they are still the
// head of the queue.
func (t *tx) foresee(q *queueState, last *foreseen, maxScore int64, n int, kinds []string) ([]ffstore.QueueItem, bool) {
	items, ok := last.due(maxScore, n)
	if !ok {
		return nil, false
	}
	keys := ffstore.MemberRecordKeys(membersOf(items), kinds)
	recs, ok := last.recordsOf(keys, kinds)
	if !ok {
		return nil, false
	}
	reads := t.readMap(len(keys))
	for i, k := range keys {
		if _, read := reads[k]; !read {
			if _, written := t.writes[k]; !written {
				reads[k] = recs[i]
			}
		}
	}
	t.earlier = true
	out := make([]ffstore.QueueItem, len(items))
	for i, c := range items {
		out[i] = c.item
		q.foreseen = append(q.foreseen, c.enc)
	}
	q.kinds = slices.Clone(kinds)
	q.ahead = last.items[len(items):]
	// What the last pop saw after these items, for the records the commit reads ahead.
	// It may be many foreseen pops old: a Range of the queue goes to the server.
	q.aheadOK, q.aheadDone = false, false
	t.s.foresight.saw(t.shard, q.name, &foreseen{items: q.ahead})
	return out, true
}

// oneSnapshot reports whether the unit's reads were all made in one round trip, so that
// they need no check to be consistent with each other.
func (t *tx) oneSnapshot() bool { return t.rts < 2 && !t.earlier }

// unread returns the keys, once each, that the unit has neither read nor written.
func (t *tx) unread(keys []string) []string {
	var out []string
	seen := make(map[string]bool, len(keys))
	for _, k := range keys {
		if seen[k] {
			continue
		}
		seen[k] = true
		if _, ok := t.reads[k]; ok {
			continue
		}
		if _, ok := t.writes[k]; ok {
			continue
		}
		out = append(out, k)
	}
	return out
}

// Put buffers a write of key.
func (t *tx) Put(key string, value []byte) {
	t.live("Put")
	if value == nil {
		value = []byte{}
	}
	t.write(key, &writeEntry{value: value})
}

// Delete buffers the removal of key.
func (t *tx) Delete(key string) {
	t.live("Delete")
	t.write(key, &writeEntry{del: true})
}

func (t *tx) write(key string, w *writeEntry) {
	if t.writes == nil {
		t.writes = map[string]*writeEntry{}
	}
	if _, ok := t.writes[key]; !ok {
		t.writeOrder = append(t.writeOrder, key)
	}
	t.writes[key] = w
}

// QueueAdd buffers putting member into queue with score.
func (t *tx) QueueAdd(queue, member string, score int64) {
	t.live("QueueAdd")
	t.queue(queue).op(member, queueOp{score: score})
}

// QueueRemove buffers taking member out of queue.
func (t *tx) QueueRemove(queue, member string) {
	t.live("QueueRemove")
	t.queue(queue).op(member, queueOp{remove: true})
}

func (q *queueState) op(member string, op queueOp) {
	if q.ops == nil {
		q.ops = map[string]queueOp{}
	}
	if _, ok := q.ops[member]; !ok {
		q.opOrder = append(q.opOrder, member)
	}
	q.ops[member] = op
}

// AppendEvent buffers ev; the commit numbers it.
func (t *tx) AppendEvent(ev fftype.Event) {
	t.live("AppendEvent")
	t.events = append(t.events, ev)
}

func (t *tx) hasPops() bool {
	for _, q := range t.queues {
		if len(q.pops) > 0 {
			return true
		}
	}
	return false
}

func (t *tx) hasWrites() bool {
	if len(t.writes) > 0 || len(t.events) > 0 {
		return true
	}
	for _, q := range t.queues {
		if len(q.pops) > 0 || len(q.foreseen) > 0 || len(q.ops) > 0 {
			return true
		}
	}
	return false
}

// call is one ffv5_unit or ffv5_check call being built.
type call struct {
	keys []string
	args []string
}

// build lays out a call in mode ("c", "a" or "v") as the library's unit function takes
// it; writes are included only for "c".
func (t *tx) build(mode string) *call {
	k := t.k
	c := &call{keys: []string{k.ver, k.del, k.stream, k.dir, k.hinted}}
	channel := ""
	if mode == "c" {
		channel = t.s.channel
	}
	recIdx := map[string]int{}
	index := func(key string) string {
		i, ok := recIdx[key]
		if !ok {
			c.keys = append(c.keys, k.record(key))
			i = len(recIdx) + 1
			recIdx[key] = i
		}
		return strconv.Itoa(i)
	}
	var checks, digests []string
	for key, r := range t.reads {
		if r.digest != "" {
			digests = append(digests, index(key), r.digest)
		} else {
			checks = append(checks, index(key), r.version)
		}
	}
	var puts, dels []string
	if mode == "c" {
		for _, key := range t.writeOrder {
			w := t.writes[key]
			if w.del {
				dels = append(dels, index(key))
			} else {
				puts = append(puts, index(key), rueidis.BinaryString(w.value))
			}
		}
	}
	nR := len(recIdx)
	var names, ranges, pops, foreseen, qops []string
	for _, name := range t.queueOrder {
		q := t.queues[name]
		if len(q.reads) == 0 && len(q.pops) == 0 && len(q.foreseen) == 0 && (mode != "c" || len(q.ops) == 0) {
			continue
		}
		names = append(names, name)
		qi := strconv.Itoa(len(names))
		kk := k.queueKeys(name)
		c.keys = append(c.keys, kk[:]...)
		// Ranges of a queue the unit pops are not checked: other units pop its items
		// all the time, so the check would fail most concurrent pops, which PopDue
		// promises not to make wait on each other. Such a Range can only be a hint.
		if len(q.pops) == 0 && len(q.foreseen) == 0 {
			for _, enc := range q.reads {
				ranges = append(ranges, qi, enc)
			}
		}
		for _, enc := range q.pops {
			pops = append(pops, qi, enc)
		}
		for _, enc := range q.foreseen {
			foreseen = append(foreseen, qi, enc)
		}
		if mode == "c" {
			for _, m := range q.opOrder {
				op := q.ops[m]
				score := ""
				if !op.remove {
					score = encodeScore(op.score)
				}
				qops = append(qops, qi, m, score)
			}
		}
	}
	if mode == "c" {
		c.keys = append(c.keys, k.absent) // last, past what the function reads (see shardKeys.absent)
	}
	c.args = make([]string, 0, 16+len(names)+len(checks)+len(digests)+len(ranges)+len(pops)+len(foreseen)+len(puts)+len(dels)+len(qops)+len(t.events))
	c.args = append(c.args, mode, channel, t.s.wakeMessage(t.shard), t.token, strconv.Itoa(nR), strconv.Itoa(len(names)))
	c.args = append(c.args, names...)
	c.args = appendCounted(c.args, checks, 2)
	c.args = appendCounted(c.args, digests, 2)
	c.args = appendCounted(c.args, ranges, 2)
	c.args = appendCounted(c.args, pops, 2)
	c.args = appendCounted(c.args, foreseen, 2)
	if mode == "c" {
		c.args = appendCounted(c.args, puts, 2)
		c.args = appendCounted(c.args, dels, 1)
		c.args = appendCounted(c.args, qops, 3)
		c.args = append(c.args, strconv.Itoa(len(t.events)))
		for i := range t.events {
			c.args = append(c.args, rueidis.BinaryString(encodeEvent(&t.events[i])))
		}
	}
	return c
}

func appendCounted(args, items []string, width int) []string {
	args = append(args, strconv.Itoa(len(items)/width))
	return append(args, items...)
}

// run sends a unit call and reports whether its reads held, with the server's reason
// when they did not, and the rest of the reply. Riders go in the same round trip, after
// the call (see doRiding).
func (t *tx) run(ctx context.Context, fn string, readOnly bool, c *call, riders ...rueidis.Completed) (ok bool, reason string, rest []rueidis.RedisMessage, rode []rueidis.RedisResult, err error) {
	op := "commit"
	if fn == fnCheck {
		op = "check reads"
	}
	res, rode, err := t.s.doRiding(ctx, op, readOnly, func() rueidis.Completed {
		if readOnly {
			return t.s.client.B().FcallRo().Function(fn).Numkeys(int64(len(c.keys))).Key(c.keys...).Arg(c.args...).Build()
		}
		return t.s.client.B().Fcall().Function(fn).Numkeys(int64(len(c.keys))).Key(c.keys...).Arg(c.args...).Build()
	}, riders...)
	if err != nil {
		return false, "", nil, nil, err
	}
	arr, err := res.ToArray()
	if err != nil || len(arr) < 2 {
		return false, "", nil, nil, translate(errors.Join(err, errors.New("unexpected reply")), op)
	}
	status, err1 := arr[0].AsInt64()
	reason, err2 := arr[1].ToString()
	if err1 != nil || err2 != nil {
		return false, "", nil, nil, translate(errors.Join(err1, err2), op)
	}
	return status == 1, reason, arr[2:], rode, nil
}

// commit applies the unit. It returns an error matching fftype.ErrStoreConflict when a
// read no longer holds (nothing is written then).
func (t *tx) commit() error {
	ctx, cancel := ffstore.WithStoreTimeout(context.WithoutCancel(t.ctx), commitTimeout)
	defer cancel()
	if !t.hasWrites() {
		// Nothing to write: the reads need checking only if they were not one snapshot.
		if t.oneSnapshot() {
			return nil
		}
		ok, reason, _, _, err := t.run(ctx, fnCheck, true, t.build("v"))
		if err != nil {
			return err
		}
		if !ok {
			t.stale()
			return conflict("unit on shard %d read stale data: %s", t.shard, reason)
		}
		return nil
	}
	args := t.build("c")
	gate := &t.s.gates[t.shard]
	ticket, left := gate.enter(), false
	leave := func() {
		if !left {
			left = true
			gate.leave(ticket)
		}
	}
	defer leave() // whatever happens, readers must not wait on this commit forever
	ahead := t.ahead()
	riders := make([]rueidis.Completed, len(ahead))
	for i, a := range ahead {
		riders[i] = t.s.client.B().Mget().Key(t.mgetKeys(a.keys)...).Build()
	}
	sent := time.Now() // the records are read after this
	ok, reason, rest, rode, err := t.run(ctx, fnUnit, false, args, riders...)
	if err != nil {
		// The unit may have committed with its reply lost. This process ignores its own
		// wake-up messages, so nothing else tells the cache of heads that the shard's
		// queues may have moved: say so before readers of its events may go on.
		t.s.heads.wake(t.shard)
		return err
	}
	if !ok {
		t.stale()
		return conflict("unit on shard %d lost a race: %s since it was read", t.shard, reason)
	}
	t.foresaw(ahead, rode, sent)
	t.wrote(rest)
	hints, err := t.patchHeads(rest)
	if err != nil {
		// The unit committed; only the cache of heads is behind. Let it be read again.
		t.s.log.Warn("ffvalkey: unexpected commit reply", "err", err)
		t.s.heads.invalidate()
	}
	leave() // the heads are patched: readers of this commit's events may go on
	if len(hints) > 0 {
		t.s.addHints(ctx, t.shard, hints)
	}
	t.s.changes.Notify()
	return nil
}

// wrote gives writtenRecords the records the unit wrote, with the commit number the
// commit reported first in rest.
func (t *tx) wrote(rest []rueidis.RedisMessage) {
	if len(t.writeOrder) == 0 || len(rest) == 0 {
		return
	}
	ver, err := rest[0].AsInt64()
	if err != nil {
		return // patchHeads reports it
	}
	writes := make(map[string][]byte, len(t.writeOrder))
	for _, k := range t.writeOrder {
		w := t.writes[k]
		var v []byte
		if !w.del {
			v = w.value
		}
		writes[t.k.record(k)] = v
	}
	t.s.written.remember(uint64(ver), writes) //nolint:gosec // commit numbers are positive
}

// aheadRead is a queue whose next items' records a commit reads.
type aheadRead struct {
	q    *queueState
	keys []string
}

// ahead returns the queues whose next items' records the commit reads once it has
// applied the unit, for the next pop of each to take them by foresight: the queues the
// unit took items from, with kinds, and did not write. It reads as many items as the
// unit took or the queue's recent pops asked for, whichever is more, and lookahead more.
func (t *tx) ahead() []aheadRead {
	var out []aheadRead
	for _, name := range t.queueOrder {
		q := t.queues[name]
		took := len(q.pops) + len(q.foreseen)
		if took == 0 || len(q.kinds) == 0 || len(q.ops) > 0 || len(q.ahead) == 0 {
			continue
		}
		next := q.ahead[:min(len(q.ahead), max(took, q.want)+lookahead)]
		out = append(out, aheadRead{q: q, keys: ffstore.MemberRecordKeys(membersOf(next), q.kinds)})
	}
	return out
}

// foresaw keeps, for the next pop of each queue of ahead, the records the commit read
// (rode), with what the unit saw of the queue.
func (t *tx) foresaw(ahead []aheadRead, rode []rueidis.RedisResult, read time.Time) {
	if len(rode) != len(ahead) {
		return // the commit was sent again, without its riders
	}
	for i, a := range ahead {
		records := make(map[string]*readEntry, len(a.keys))
		if err := t.absorb(records, a.keys, rode[i], nil); err != nil {
			continue
		}
		t.s.foresight.saw(t.shard, a.q.name, &foreseen{items: a.q.ahead, kinds: a.q.kinds, records: records, read: read})
	}
}

// patchHeads gives the heads cache the queue heads a commit reported: its commit number,
// the queues to add to the store's hint (returned), then the name and first item (""
// when empty) of each queue it wrote.
func (t *tx) patchHeads(rest []rueidis.RedisMessage) (hints []string, err error) {
	if len(rest) < 2 || len(rest)%2 != 0 {
		return nil, errors.New("no commit number")
	}
	ver, err := rest[0].AsInt64()
	if err != nil {
		return nil, err
	}
	if hints, err = rest[1].AsStrSlice(); err != nil {
		return nil, err
	}
	rest = rest[2:]
	n := len(rest) / 2
	if n == 0 {
		return hints, nil
	}
	names := make([]string, n)
	heads := make([]*ffstore.QueueItem, n)
	for i := range n {
		if names[i], err = rest[2*i].ToString(); err != nil {
			return hints, err
		}
		enc, err := rest[1+2*i].ToString()
		if err != nil {
			return hints, err
		}
		if enc == "" {
			continue
		}
		score, member, ok := decodeItem(enc)
		if !ok {
			return hints, errors.New("malformed head")
		}
		heads[i] = &ffstore.QueueItem{Member: member, Score: score}
	}
	t.s.heads.patch(t.shard, uint64(ver), names, heads)
	return hints, nil
}

// abort ends a unit that will not commit: it releases the unit's pops and, if the unit's
// reads took several round trips, checks them. It reports whether they were stale, that
// is whether fn may have decided on an inconsistent view. Failures are logged: the pops'
// marks lapse by themselves.
func (t *tx) abort() (stale bool) {
	ctx, cancel := ffstore.WithStoreTimeout(context.WithoutCancel(t.ctx), commitTimeout)
	defer cancel()
	if len(t.popFailed) > 0 {
		marks := make([]string, len(t.popFailed))
		for i, q := range t.popFailed {
			marks[i] = t.k.marks(q)
		}
		if _, err := t.s.do(ctx, "release pops", false, func() rueidis.Completed {
			return t.s.client.B().Fcall().Function(fnRelease).Numkeys(int64(len(marks))).Key(marks...).Arg(t.token).Build()
		}); err != nil {
			t.s.log.Warn("ffvalkey: releasing the pops of a failed unit failed; they lapse by themselves", "shard", t.shard, "err", err)
		}
	}
	pops := t.hasPops()
	if !pops && t.oneSnapshot() {
		return false
	}
	var ok bool
	var err error
	if pops {
		ok, _, _, _, err = t.run(ctx, fnUnit, false, t.build("a"))
	} else {
		ok, _, _, _, err = t.run(ctx, fnCheck, true, t.build("v"))
	}
	if err != nil {
		t.s.log.Warn("ffvalkey: releasing an aborted unit failed; its pops lapse by themselves", "shard", t.shard, "err", err)
		return false
	}
	if !ok {
		t.stale()
	}
	return !ok && !t.oneSnapshot()
}

// Update runs fn as one unit on shard. fn's reads go to the server as it makes them; its
// writes are buffered and applied at commit by one function call that first checks that
// every record, queue item and pop the unit read still holds. If one does not, nothing is
// written and Update returns an error matching [fftype.ErrStoreConflict].
//
// If fn returns an error, its pops are released, nothing is written and the error is
// returned unchanged — unless fn read in several round trips and what it read changed
// meanwhile, in which case fn may have seen an inconsistent state and Update returns a
// conflict instead, for the caller to retry. If fn panics, its pops are released and the
// panic goes on. Update returns ctx.Err() without running fn if ctx is done; once fn has
// returned, the commit runs even if ctx ends. A commit whose reply is lost (the server or
// network failed after the call was sent) returns an unavailable error though it may
// have been applied. Returns a validation error coded shard_out_of_range for a bad shard
// and an unavailable error after Close.
func (s *Store) Update(ctx context.Context, shard int, fn func(tx ffstore.Tx) error) error {
	if err := s.enterShard(ctx, shard); err != nil {
		return err
	}
	defer s.leave()
	t := s.newTx(ctx, shard, true)
	fnErr := runUnit(t, fn)
	t.done = true
	if fnErr != nil {
		if t.abort() {
			return conflict("unit on shard %d read stale data before it failed (%v)", shard, fnErr)
		}
		return fnErr
	}
	if s.conflicts.Take() {
		t.abort()
		return ffstore.Conflict("ffvalkey", shard)
	}
	err := t.commit()
	if err != nil && !errors.Is(err, fftype.ErrStoreConflict) && t.hasPops() {
		// The commit may not have run: release the pops (a commit that did run took its
		// items and their marks with it, so this releases nothing then).
		t.abort()
	}
	return err
}

// runUnit calls fn, releasing the unit's pops if it panics.
func runUnit(t *tx, fn func(tx ffstore.Tx) error) error {
	defer func() {
		if r := recover(); r != nil {
			t.done = true
			t.abort()
			panic(r)
		}
	}()
	return fn(t)
}

// View runs fn against shard's committed state. A View whose reads take one round trip
// (a single Get, or a Prefetch followed by Gets of the prefetched keys) sees one moment of
// the shard. One that reads in several is checked afterwards, and if a unit changed what
// it read meanwhile, fn runs again (up to 8 times, then View returns an error matching
// [fftype.ErrStoreConflict]); so fn may run more than once, and only the last run's
// results count. fn's error is returned unchanged. Argument errors are as for Update.
func (s *Store) View(ctx context.Context, shard int, fn func(tx ffstore.ReadTx) error) error {
	if err := s.enterShard(ctx, shard); err != nil {
		return err
	}
	defer s.leave()
	for run := 1; ; run++ {
		t := s.newTx(ctx, shard, false)
		err := fn(readTx{t})
		t.done = true
		if t.oneSnapshot() {
			return err
		}
		ok, _, _, _, cerr := t.run(ctx, fnCheck, true, t.build("v"))
		if cerr != nil {
			if err != nil {
				return err
			}
			return cerr
		}
		if ok {
			return err
		}
		if run == maxViewRuns {
			return conflict("shard %d changed under every one of %d reads of a view", shard, run)
		}
	}
}

// readTx is the read-only face of a tx, so that a View's fn cannot assert its way to
// writes.
type readTx struct{ t *tx }

var (
	_ ffstore.Tx         = (*tx)(nil)
	_ ffstore.PopFetcher = (*tx)(nil)
	_ ffstore.ReadTx     = readTx{}
)

// Prefetch is [tx.Prefetch].
func (r readTx) Prefetch(keys ...string) error { return r.t.Prefetch(keys...) }

// Get is [tx.Get].
func (r readTx) Get(key string) ([]byte, bool, error) { return r.t.Get(key) }

// Range is [tx.Range].
func (r readTx) Range(queue string, after *ffstore.QueueItem, maxScore int64, n int) ([]ffstore.QueueItem, error) {
	return r.t.Range(queue, after, maxScore, n)
}
