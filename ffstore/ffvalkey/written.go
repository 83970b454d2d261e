package ffvalkey

import (
	"crypto/sha1" //nolint:gosec // a digest that two values' encodings differ, not a secret's
	"encoding/binary"
	"encoding/hex"
	"sync"
)

// Bounds of writtenRecords: the bytes it holds (keys and values, and writtenOverhead
// per record for the rest), and the largest value it keeps.
const (
	writtenMaxBytes = 4 << 20
	writtenMaxValue = 16 << 10
	writtenOverhead = 128
)

// writtenRecords remembers the records that this process's units wrote last, with the
// version each commit gave them, so that a unit that reads one again takes it without a
// round trip: a completion reads the execution record that the claim before it wrote.
// The commit checks such a read by a digest of what the server should hold (its version
// and value): the version alone would not do, since commit numbers start again after the
// server lost data (a restart without persistence, a crash back to a snapshot, a failover
// to a lagging replica), and another process may have written the record at the same
// number since. If the check fails, the unit fails as a conflict, the record is
// forgotten, and the unit runs again and reads it from the server. The oldest records
// are forgotten first once they pass writtenMaxBytes.
type writtenRecords struct {
	mu    sync.Mutex
	m     map[string]*writtenRecord // by the record's Redis key
	order []writtenAt               // insertions, oldest first; some may be superseded
	seq   uint64                    // insertions so far
	bytes int
}

type writtenRecord struct {
	version uint64 // the commit number of the unit that wrote it
	value   []byte // the store's own: handed out as copies
	at      uint64 // its insertion, in order
}

type writtenAt struct {
	key string
	at  uint64
}

// get returns a copy of the record under key as a read: its version, value and digest.
func (w *writtenRecords) get(key string) (*readEntry, bool) {
	w.mu.Lock()
	r, ok := w.m[key]
	var value []byte
	var version uint64
	if ok {
		value, version = append([]byte(nil), r.value...), r.version
	}
	w.mu.Unlock()
	if !ok {
		return nil, false
	}
	v := versionString(version)
	h := sha1.New() //nolint:gosec // see the import
	h.Write([]byte(v))
	h.Write(value)
	return &readEntry{version: v, value: value, digest: hex.EncodeToString(h.Sum(nil))}, true
}

// remember records the writes of a unit that committed as commit number version: values
// by key, nil for a key it deleted. A record already remembered from a later commit stays.
func (w *writtenRecords) remember(version uint64, writes map[string][]byte) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.m == nil {
		w.m = map[string]*writtenRecord{}
	}
	for key, value := range writes {
		old, ok := w.m[key]
		if ok && old.version > version {
			continue
		}
		if ok {
			w.drop(key, old)
		}
		if value == nil || len(value) > writtenMaxValue {
			continue
		}
		at := w.seq
		w.seq++
		w.m[key] = &writtenRecord{version: version, value: value, at: at}
		w.order = append(w.order, writtenAt{key, at})
		w.bytes += size(key, value)
	}
	for w.bytes > writtenMaxBytes && len(w.order) > 0 {
		o := w.order[0]
		w.order = w.order[1:]
		if r, ok := w.m[o.key]; ok && r.at == o.at {
			w.drop(o.key, r)
		}
	}
	if len(w.order) > 2*len(w.m)+1024 { // mostly superseded: keep the live ones, in order
		live := make([]writtenAt, 0, len(w.m))
		for _, o := range w.order {
			if r, ok := w.m[o.key]; ok && r.at == o.at {
				live = append(live, o)
			}
		}
		w.order = live
	}
}

// forget drops the records under keys.
func (w *writtenRecords) forget(keys []string) {
	w.mu.Lock()
	defer w.mu.Unlock()
	for _, key := range keys {
		if r, ok := w.m[key]; ok {
			w.drop(key, r)
		}
	}
}

func (w *writtenRecords) drop(key string, r *writtenRecord) {
	delete(w.m, key)
	w.bytes -= size(key, r.value)
}

// size is what a record counts against writtenMaxBytes.
func size(key string, value []byte) int { return len(key) + len(value) + writtenOverhead }

// versionString is a record's stored version: the commit number, 8 bytes big-endian.
func versionString(v uint64) string {
	var b [versionLen]byte
	binary.BigEndian.PutUint64(b[:], v)
	return string(b[:])
}
