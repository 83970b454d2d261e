package ffvalkey

import "sync"

// expectations remembers, per shard and queue, the members that the last pop of the queue
// in this process saw after the ones it took: those the next pop most likely takes, whose
// records PopDueFetch reads in the pop's round trip. A wrong guess costs a round trip and
// the bytes read, never a wrong result.
type expectations struct {
	mu sync.Mutex
	m  map[expectedQueue][]string
}

type expectedQueue struct {
	shard int
	queue string
}

// get returns up to n members expected at the head of queue.
func (e *expectations) get(shard int, queue string, n int) []string {
	e.mu.Lock()
	defer e.mu.Unlock()
	ms := e.m[expectedQueue{shard, queue}]
	return ms[:min(n, len(ms))]
}

// set records the items a pop saw after its own.
func (e *expectations) set(shard int, queue string, ahead []cachedItem) {
	ms := make([]string, len(ahead))
	for i, c := range ahead {
		ms[i] = c.item.Member
	}
	e.mu.Lock()
	defer e.mu.Unlock()
	if len(ms) == 0 {
		delete(e.m, expectedQueue{shard, queue})
		return
	}
	if e.m == nil {
		e.m = map[expectedQueue][]string{}
	}
	e.m[expectedQueue{shard, queue}] = ms
}
