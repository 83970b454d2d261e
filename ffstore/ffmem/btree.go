package ffmem

import "slices"

// lesser is the ordering a btree keeps its items in. Items equal under it (neither is less)
// are the same item.
type lesser[T any] interface {
	Less(other T) bool
}

// btreeDegree is the minimum number of children of an inner node other than the root.
// Nodes hold between btreeDegree-1 and 2*btreeDegree-1 items.
const (
	btreeDegree   = 16
	btreeMaxItems = 2*btreeDegree - 1
	btreeMinItems = btreeDegree - 1
)

// btree is an ordered set: a classic B-tree with items in every node, after the shape of
// github.com/google/btree. Insert, delete and delete-min are O(log n); ascending from a
// pivot costs O(log n) plus the items visited. The zero value is an empty tree. It is not
// safe for concurrent use; the shard lock guards it.
type btree[T lesser[T]] struct {
	root *bnode[T]
	n    int
}

type bnode[T lesser[T]] struct {
	items    []T
	children []*bnode[T] // empty in a leaf, else len(items)+1
}

// Len returns the number of items.
func (t *btree[T]) Len() int { return t.n }

// Insert adds item, replacing an equal item if there is one.
func (t *btree[T]) Insert(item T) {
	if t.root == nil {
		t.root = &bnode[T]{items: make([]T, 0, btreeMaxItems)}
	}
	if len(t.root.items) >= btreeMaxItems {
		mid, second := t.root.split(btreeMaxItems / 2)
		old := t.root
		t.root = &bnode[T]{
			items:    append(make([]T, 0, btreeMaxItems), mid),
			children: append(make([]*bnode[T], 0, btreeMaxItems+1), old, second),
		}
	}
	if t.root.insert(item) {
		t.n++
	}
}

// Delete removes the item equal to item and reports whether there was one.
func (t *btree[T]) Delete(item T) bool {
	_, ok := t.remove(item, removeItem)
	return ok
}

// DeleteMin removes and returns the smallest item; ok is false if the tree is empty.
func (t *btree[T]) DeleteMin() (min T, ok bool) {
	var zero T
	return t.remove(zero, removeMin)
}

// Min returns the smallest item; ok is false if the tree is empty.
func (t *btree[T]) Min() (min T, ok bool) {
	n := t.root
	if n == nil || len(n.items) == 0 {
		return min, false
	}
	for len(n.children) > 0 {
		n = n.children[0]
	}
	return n.items[0], true
}

// Ascend calls fn for each item in order, starting after pivot (or at it when inclusive
// is true) or at the smallest item when pivot is nil, until fn returns false.
func (t *btree[T]) Ascend(pivot *T, inclusive bool, fn func(T) bool) {
	if t.root != nil {
		t.root.ascend(pivot, inclusive, fn)
	}
}

type removeKind int

const (
	removeItem removeKind = iota
	removeMin
	removeMax
)

func (t *btree[T]) remove(item T, kind removeKind) (T, bool) {
	var zero T
	if t.root == nil || len(t.root.items) == 0 {
		return zero, false
	}
	out, ok := t.root.remove(item, kind)
	if len(t.root.items) == 0 && len(t.root.children) > 0 {
		t.root = t.root.children[0]
	}
	if ok {
		t.n--
	}
	return out, ok
}

// find returns the index of the item equal to item and true, or the index where item
// would be inserted and false.
func find[T lesser[T]](items []T, item T) (int, bool) {
	lo, hi := 0, len(items)
	for lo < hi {
		h := int(uint(lo+hi) >> 1)
		if item.Less(items[h]) {
			hi = h
		} else {
			lo = h + 1
		}
	}
	// lo is the first index whose item is greater than item.
	if lo > 0 && !items[lo-1].Less(item) {
		return lo - 1, true
	}
	return lo, false
}

// split cuts n at item i: n keeps the items before it, the returned node the items after.
func (n *bnode[T]) split(i int) (T, *bnode[T]) {
	mid := n.items[i]
	next := &bnode[T]{items: append(make([]T, 0, btreeMaxItems), n.items[i+1:]...)}
	clear(n.items[i:])
	n.items = n.items[:i]
	if len(n.children) > 0 {
		next.children = append(make([]*bnode[T], 0, btreeMaxItems+1), n.children[i+1:]...)
		clear(n.children[i+1:])
		n.children = n.children[:i+1]
	}
	return mid, next
}

// maybeSplitChild splits child i if it is full and reports whether it did.
func (n *bnode[T]) maybeSplitChild(i int) bool {
	if len(n.children[i].items) < btreeMaxItems {
		return false
	}
	mid, second := n.children[i].split(btreeMaxItems / 2)
	n.items = slices.Insert(n.items, i, mid)
	n.children = slices.Insert(n.children, i+1, second)
	return true
}

// insert adds item below n, which is not full, and reports whether the tree grew.
func (n *bnode[T]) insert(item T) bool {
	i, found := find(n.items, item)
	if found {
		n.items[i] = item
		return false
	}
	if len(n.children) == 0 {
		n.items = slices.Insert(n.items, i, item)
		return true
	}
	if n.maybeSplitChild(i) {
		switch mid := n.items[i]; {
		case item.Less(mid):
		case mid.Less(item):
			i++
		default:
			n.items[i] = item
			return false
		}
	}
	return n.children[i].insert(item)
}

// remove takes an item out of the subtree rooted at n. Every node it descends into has more
// than the minimum number of items, so removing one never leaves a node too small.
func (n *bnode[T]) remove(item T, kind removeKind) (T, bool) {
	var i int
	var found bool
	switch kind {
	case removeMax:
		if len(n.children) == 0 {
			return n.removeItemAt(len(n.items) - 1), true
		}
		i = len(n.items)
	case removeMin:
		if len(n.children) == 0 {
			return n.removeItemAt(0), true
		}
		i = 0
	default:
		i, found = find(n.items, item)
		if len(n.children) == 0 {
			if found {
				return n.removeItemAt(i), true
			}
			var zero T
			return zero, false
		}
	}
	if len(n.children[i].items) <= btreeMinItems {
		return n.growChildAndRemove(i, item, kind)
	}
	child := n.children[i]
	if found {
		// Replace the item with its predecessor, the largest item of the left child.
		out := n.items[i]
		var zero T
		n.items[i], _ = child.remove(zero, removeMax)
		return out, true
	}
	return child.remove(item, kind)
}

// growChildAndRemove gives child i one more item, stealing from a sibling or merging with
// one, then retries the removal from n.
func (n *bnode[T]) growChildAndRemove(i int, item T, kind removeKind) (T, bool) {
	switch {
	case i > 0 && len(n.children[i-1].items) > btreeMinItems:
		// Steal from the left sibling.
		child, from := n.children[i], n.children[i-1]
		stolen := from.removeItemAt(len(from.items) - 1)
		child.items = slices.Insert(child.items, 0, n.items[i-1])
		n.items[i-1] = stolen
		if len(from.children) > 0 {
			last := from.children[len(from.children)-1]
			from.children[len(from.children)-1] = nil
			from.children = from.children[:len(from.children)-1]
			child.children = slices.Insert(child.children, 0, last)
		}
	case i < len(n.items) && len(n.children[i+1].items) > btreeMinItems:
		// Steal from the right sibling.
		child, from := n.children[i], n.children[i+1]
		stolen := from.removeItemAt(0)
		child.items = append(child.items, n.items[i])
		n.items[i] = stolen
		if len(from.children) > 0 {
			first := from.children[0]
			from.children = slices.Delete(from.children, 0, 1)
			child.children = append(child.children, first)
		}
	default:
		// Merge with the right sibling (or with the left one, for the last child).
		if i >= len(n.items) {
			i--
		}
		child := n.children[i]
		mid := n.removeItemAt(i)
		right := n.children[i+1]
		n.children = slices.Delete(n.children, i+1, i+2)
		child.items = append(child.items, mid)
		child.items = append(child.items, right.items...)
		child.children = append(child.children, right.children...)
	}
	return n.remove(item, kind)
}

func (n *bnode[T]) removeItemAt(i int) T {
	out := n.items[i]
	n.items = slices.Delete(n.items, i, i+1) // clears the vacated slot
	return out
}

func (n *bnode[T]) ascend(pivot *T, inclusive bool, fn func(T) bool) bool {
	i := 0
	if pivot != nil {
		var found bool
		i, found = find(n.items, *pivot)
		if found && !inclusive {
			i++
		}
	}
	for ; i < len(n.items); i++ {
		if len(n.children) > 0 {
			if !n.children[i].ascend(pivot, inclusive, fn) {
				return false
			}
			pivot = nil // everything further right is past the pivot
		}
		if !fn(n.items[i]) {
			return false
		}
	}
	if len(n.children) > 0 {
		return n.children[i].ascend(pivot, inclusive, fn)
	}
	return true
}
