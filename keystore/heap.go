package keystore

// deadlineHeap is a binary min-heap of entries by one of their deadlines. Each entry
// keeps its own position in the heap, so fix and remove cost O(log n) with no search.
type deadlineHeap struct {
	which int // index into entry.deadline and entry.heapIndex
	items []*entry
}

func (h *deadlineHeap) len() int { return len(h.items) }

// peek returns the entry with the earliest deadline, or nil.
func (h *deadlineHeap) peek() *entry {
	if len(h.items) == 0 {
		return nil
	}
	return h.items[0]
}

func (h *deadlineHeap) push(e *entry) {
	e.heapIndex[h.which] = int32(len(h.items))
	h.items = append(h.items, e)
	h.up(len(h.items) - 1)
}

// remove takes e out of the heap; e must be in it.
func (h *deadlineHeap) remove(e *entry) {
	i := int(e.heapIndex[h.which])
	last := len(h.items) - 1
	if i != last {
		h.swap(i, last)
	}
	h.items[last] = nil
	h.items = h.items[:last]
	e.heapIndex[h.which] = -1
	if i != last {
		h.fix(i)
	}
	if cap(h.items) > 1024 && len(h.items) < cap(h.items)/4 {
		// Give memory back after a large pool shrinks; amortised O(1).
		h.items = append(make([]*entry, 0, cap(h.items)/2), h.items...)
	}
}

// fix restores order after e's deadline changed.
func (h *deadlineHeap) fix(i int) {
	if !h.down(i) {
		h.up(i)
	}
}

func (h *deadlineHeap) less(i, j int) bool {
	return h.items[i].deadline[h.which] < h.items[j].deadline[h.which]
}

func (h *deadlineHeap) swap(i, j int) {
	h.items[i], h.items[j] = h.items[j], h.items[i]
	h.items[i].heapIndex[h.which] = int32(i)
	h.items[j].heapIndex[h.which] = int32(j)
}

func (h *deadlineHeap) up(i int) {
	for i > 0 {
		parent := (i - 1) / 2
		if !h.less(i, parent) {
			return
		}
		h.swap(i, parent)
		i = parent
	}
}

// down sifts i towards the leaves and reports whether it moved.
func (h *deadlineHeap) down(i int) bool {
	start, n := i, len(h.items)
	for {
		child := 2*i + 1
		if child >= n {
			break
		}
		if right := child + 1; right < n && h.less(right, child) {
			child = right
		}
		if !h.less(child, i) {
			break
		}
		h.swap(i, child)
		i = child
	}
	return i > start
}
