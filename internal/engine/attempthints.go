package engine

import (
	"sync"

	"github.com/flowfabric/flowfabric/fftype"
)

// attemptHints remembers the current attempt of the executions this engine leased, so
// that an operation of their holder reads the execution and its attempt in one round
// trip: the fence names the attempt by id, but its record is keyed by index, which is
// otherwise known only once the execution is read. A hint only chooses what to read
// along; a wrong or missing one costs a round trip, never a wrong result.
type attemptHints struct {
	mu sync.Mutex
	m  map[fftype.ExecutionID]int
}

// maxAttemptHints bounds the hints. Leases that end in another process (expired and
// reclaimed there, say) leave theirs behind; when the bound is reached, all are dropped.
const maxAttemptHints = 1 << 16

// set records that id's current attempt is index.
func (h *attemptHints) set(id fftype.ExecutionID, index int) {
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.m == nil || len(h.m) >= maxAttemptHints {
		h.m = make(map[fftype.ExecutionID]int)
	}
	h.m[id] = index
}

// get returns the hinted current attempt of id.
func (h *attemptHints) get(id fftype.ExecutionID) (index int, ok bool) {
	h.mu.Lock()
	defer h.mu.Unlock()
	index, ok = h.m[id]
	return index, ok
}

// forget drops id's hint: its lease ended.
func (h *attemptHints) forget(id fftype.ExecutionID) {
	h.mu.Lock()
	defer h.mu.Unlock()
	delete(h.m, id)
}

// holderKeys returns the record keys an operation of id's holder reads: the execution,
// and its attempt if hinted.
func (h *attemptHints) holderKeys(id fftype.ExecutionID) []string {
	if index, ok := h.get(id); ok {
		return []string{execKey(id), attemptKey(id, index)}
	}
	return []string{execKey(id)}
}
