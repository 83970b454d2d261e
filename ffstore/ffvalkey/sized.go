package ffvalkey

// sizedMap keeps values by key within a total size, forgetting the oldest first: the
// bound shared by writtenRecords and foresight. It is not safe for concurrent use.
type sizedMap[K comparable, V any] struct {
	max   int
	m     map[K]sizedEntry[V]
	order []sizedAt[K] // puts, oldest first; a key put again since is listed again
	seq   uint64       // puts so far
	bytes int
}

type sizedEntry[V any] struct {
	v    V
	size int
	seq  uint64 // the put that stored it
}

type sizedAt[K comparable] struct {
	k   K
	seq uint64
}

func newSizedMap[K comparable, V any](max int) sizedMap[K, V] {
	return sizedMap[K, V]{max: max, m: map[K]sizedEntry[V]{}}
}

// get returns the value under k.
func (s *sizedMap[K, V]) get(k K) (V, bool) {
	e, ok := s.m[k]
	return e.v, ok
}

// put stores v under k, counting size, and forgets the oldest values, perhaps v itself,
// while the values stored come to more than the bound.
func (s *sizedMap[K, V]) put(k K, v V, size int) {
	s.remove(k)
	s.seq++
	s.m[k] = sizedEntry[V]{v: v, size: size, seq: s.seq}
	s.order = append(s.order, sizedAt[K]{k, s.seq})
	s.bytes += size
	for s.bytes > s.max && len(s.order) > 0 {
		o := s.order[0]
		s.order = s.order[1:]
		if e, ok := s.m[o.k]; ok && e.seq == o.seq {
			s.remove(o.k)
		}
	}
	if len(s.order) > 2*len(s.m)+64 { // mostly listings of keys put again: keep the live ones
		live := make([]sizedAt[K], 0, len(s.m))
		for _, o := range s.order {
			if e, ok := s.m[o.k]; ok && e.seq == o.seq {
				live = append(live, o)
			}
		}
		s.order = live
	}
}

// remove forgets the value under k, and returns it.
func (s *sizedMap[K, V]) remove(k K) (V, bool) {
	e, ok := s.m[k]
	if ok {
		delete(s.m, k)
		s.bytes -= e.size
	}
	return e.v, ok
}
