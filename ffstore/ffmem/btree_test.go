package ffmem

import (
	"math/rand/v2"
	"slices"
	"testing"

	"github.com/stretchr/testify/require"
)

type testInt int

func (a testInt) Less(b testInt) bool { return a < b }

// checkBtree requires t's structural invariants and returns its items in order.
func checkBtree(t *testing.T, tr *btree[testInt]) []testInt {
	t.Helper()
	var items []testInt
	leafDepth := -1
	var walk func(n *bnode[testInt], depth int, root bool)
	walk = func(n *bnode[testInt], depth int, root bool) {
		require.LessOrEqual(t, len(n.items), btreeMaxItems)
		if !root {
			require.GreaterOrEqual(t, len(n.items), btreeMinItems)
		}
		if len(n.children) == 0 {
			if leafDepth < 0 {
				leafDepth = depth
			}
			require.Equal(t, leafDepth, depth, "every leaf is at the same depth")
			items = append(items, n.items...)
			return
		}
		require.Len(t, n.children, len(n.items)+1)
		for i, c := range n.children {
			walk(c, depth+1, false)
			if i < len(n.items) {
				items = append(items, n.items[i])
			}
		}
	}
	if tr.root != nil {
		walk(tr.root, 0, true)
	}
	require.True(t, slices.IsSorted(items))
	require.Len(t, items, tr.Len())
	return items
}

func TestBtree(t *testing.T) {
	t.Parallel()

	t.Run("Empty", func(t *testing.T) {
		t.Parallel()
		var tr btree[testInt]
		_, ok := tr.Min()
		require.False(t, ok)
		_, ok = tr.DeleteMin()
		require.False(t, ok)
		require.False(t, tr.Delete(1))
		tr.Ascend(nil, false, func(testInt) bool { t.Fatal("no items"); return false })
		require.Equal(t, 0, tr.Len())
	})

	t.Run("RandomAgainstModel", func(t *testing.T) {
		t.Parallel()
		r := rand.New(rand.NewPCG(7, 11))
		var tr btree[testInt]
		var model []testInt // sorted
		for round := range 40 {
			// Grow and shrink in turn so that splits, steals and merges all happen at
			// several depths.
			grow := round%2 == 0
			for range 5000 {
				v := testInt(r.IntN(20000))
				i, found := slices.BinarySearch(model, v)
				switch op := r.IntN(10); {
				case op < 6 && grow || op < 3:
					tr.Insert(v)
					if !found {
						model = slices.Insert(model, i, v)
					}
				case op < 9:
					require.Equal(t, found, tr.Delete(v))
					if found {
						model = slices.Delete(model, i, i+1)
					}
				default:
					m, ok := tr.DeleteMin()
					require.Equal(t, len(model) > 0, ok)
					if ok {
						require.Equal(t, model[0], m)
						model = model[1:]
					}
				}
			}
			want := slices.Clone(model)
			require.Equal(t, nilIfEmpty(want), nilIfEmpty(checkBtree(t, &tr)), "round %d", round)
			if m, ok := tr.Min(); ok {
				require.Equal(t, want[0], m)
			}
			for range 50 {
				pivot := testInt(r.IntN(20000))
				inclusive := r.IntN(2) == 0
				limit := r.IntN(100)
				var got []testInt
				tr.Ascend(&pivot, inclusive, func(v testInt) bool {
					got = append(got, v)
					return len(got) < limit
				})
				var exp []testInt
				for _, v := range want {
					if len(exp) == max(limit, 1) {
						break
					}
					if pivot < v || inclusive && v == pivot {
						exp = append(exp, v)
					}
				}
				require.Equal(t, exp, got, "pivot %d inclusive %v limit %d", pivot, inclusive, limit)
			}
		}
	})

	t.Run("DrainInOrder", func(t *testing.T) {
		t.Parallel()
		var tr btree[testInt]
		const n = 100_000
		for _, v := range rand.New(rand.NewPCG(3, 5)).Perm(n) {
			tr.Insert(testInt(v))
		}
		tr.Insert(42) // already present: replaced, not added
		require.Equal(t, n, tr.Len())
		checkBtree(t, &tr)
		for i := range n {
			v, ok := tr.DeleteMin()
			require.True(t, ok)
			require.Equal(t, testInt(i), v)
		}
		require.Equal(t, 0, tr.Len())
		checkBtree(t, &tr)
	})
}

func nilIfEmpty[T any](s []T) []T {
	if len(s) == 0 {
		return nil
	}
	return s
}
