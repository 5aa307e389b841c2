package keystore

// leaseHeap is a binary min-heap of BLOCKED entries by lease deadline. Each entry keeps
// its own position in the heap, so fix and remove cost O(log n) with no search.
type leaseHeap struct {
	items []*entry
}

func (h *leaseHeap) len() int { return len(h.items) }

// peek returns the entry whose lease ends first, or nil.
func (h *leaseHeap) peek() *entry {
	if len(h.items) == 0 {
		return nil
	}
	return h.items[0]
}

func (h *leaseHeap) push(e *entry) {
	e.leaseIndex = int32(len(h.items))
	h.items = append(h.items, e)
	h.up(len(h.items) - 1)
}

// remove takes e out of the heap; e must be in it.
func (h *leaseHeap) remove(e *entry) {
	i := int(e.leaseIndex)
	last := len(h.items) - 1
	if i != last {
		h.swap(i, last)
	}
	h.items[last] = nil
	h.items = h.items[:last]
	e.leaseIndex = -1
	if i != last {
		h.fix(i)
	}
	if cap(h.items) > 1024 && len(h.items) < cap(h.items)/4 {
		// Give memory back after many leases end; amortised O(1).
		h.items = append(make([]*entry, 0, cap(h.items)/2), h.items...)
	}
}

// fix restores order after the lease deadline of the entry at i changed.
func (h *leaseHeap) fix(i int) {
	if !h.down(i) {
		h.up(i)
	}
}

func (h *leaseHeap) less(i, j int) bool {
	return h.items[i].deadline[leaseDeadline] < h.items[j].deadline[leaseDeadline]
}

func (h *leaseHeap) swap(i, j int) {
	h.items[i], h.items[j] = h.items[j], h.items[i]
	h.items[i].leaseIndex = int32(i)
	h.items[j].leaseIndex = int32(j)
}

func (h *leaseHeap) up(i int) {
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
func (h *leaseHeap) down(i int) bool {
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

// keepAliveQueue lists every key by keep-alive deadline, earliest first. The keep-alive
// TTL is the same for every key of a pool and the clock only moves forward, so a key
// generated or kept alive now has the latest deadline of all: it goes to the back, and
// the queue stays in deadline order with O(1) moves and no sifting.
type keepAliveQueue struct {
	front, back *entry
}

func (q *keepAliveQueue) pushBack(e *entry) {
	e.older, e.newer = q.back, nil
	if q.back != nil {
		q.back.newer = e
	} else {
		q.front = e
	}
	q.back = e
}

func (q *keepAliveQueue) remove(e *entry) {
	if e.older != nil {
		e.older.newer = e.newer
	} else {
		q.front = e.newer
	}
	if e.newer != nil {
		e.newer.older = e.older
	} else {
		q.back = e.older
	}
	e.older, e.newer = nil, nil
}

func (q *keepAliveQueue) moveToBack(e *entry) {
	if q.back != e {
		q.remove(e)
		q.pushBack(e)
	}
}
