package ffstore

import (
	"slices"
	"strings"

	"github.com/flowfabric/flowfabric/fftype"
)

// DisjointPrefixes returns prefixes sorted and without the ones another prefix covers, so
// that no queue name matches two of them: a store answering QueueHeads can then report
// each queue once.
func DisjointPrefixes(prefixes []string) []string {
	sorted := slices.Clone(prefixes)
	slices.Sort(sorted)
	out := sorted[:0]
	for _, p := range sorted {
		// Sorted, a prefix comes before every string it covers, and so does every string
		// between them: comparing with the last kept prefix is enough.
		if len(out) > 0 && strings.HasPrefix(p, out[len(out)-1]) {
			continue
		}
		out = append(out, p)
	}
	return out
}

// CursorExpired returns the error ReadEvents gives when events after `after` on shard were
// trimmed (the shard's trim point is trimmed).
func CursorExpired(shard int, after, trimmed uint64) error {
	return fftype.NewError(fftype.KindState, fftype.CodeCursorExpired,
		"events of shard %d after %d are gone: the log was trimmed through %d", shard, after, trimmed)
}
