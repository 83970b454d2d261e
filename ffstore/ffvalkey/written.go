package ffvalkey

import (
	"crypto/sha1" //nolint:gosec // a digest that two values' encodings differ, not a secret's
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
	mu sync.Mutex
	m  sizedMap[string, writtenRecord] // by the record's Redis key
}

type writtenRecord struct {
	version uint64 // the commit number of the unit that wrote it
	value   []byte // the store's own: handed out as copies
}

// get returns a copy of the record under key as a read: its version, value and digest.
func (w *writtenRecords) get(key string) (*readEntry, bool) {
	w.mu.Lock()
	r, ok := w.m.get(key)
	if ok {
		r.value = append([]byte(nil), r.value...)
	}
	w.mu.Unlock()
	if !ok {
		return nil, false
	}
	v := versionString(r.version)
	h := sha1.New() //nolint:gosec // see the import
	h.Write([]byte(v))
	h.Write(r.value)
	return &readEntry{version: v, value: r.value, digest: hex.EncodeToString(h.Sum(nil))}, true
}

// remember records the writes of a unit that committed as commit number version: values
// by key, nil for a key it deleted. A record already remembered from a later commit stays.
func (w *writtenRecords) remember(version uint64, writes map[string][]byte) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.m.m == nil {
		w.m = newSizedMap[string, writtenRecord](writtenMaxBytes)
	}
	for key, value := range writes {
		if old, ok := w.m.get(key); ok && old.version > version {
			continue
		}
		if value == nil || len(value) > writtenMaxValue {
			w.m.remove(key)
			continue
		}
		w.m.put(key, writtenRecord{version: version, value: value}, len(key)+len(value)+writtenOverhead)
	}
}

// forget drops the records under keys.
func (w *writtenRecords) forget(keys []string) {
	w.mu.Lock()
	defer w.mu.Unlock()
	for _, key := range keys {
		w.m.remove(key)
	}
}
