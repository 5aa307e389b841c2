package keystore

import "slices"

// mpool is one pool of the in-memory backend: its counters, its AVAILABLE keys for
// picks, and the order List pages through. A pool whose keys are all gone keeps its
// counters only.
type mpool struct {
	name  string
	idx   int32 // in memory.pools
	lane  *Lane
	count int // live keys
	avail *availableSet
	// availHorizon is at or after the keep-alive deadline of every AVAILABLE key: once
	// it has passed, no AVAILABLE key is alive, whatever the expirer has yet to apply.
	availHorizon int64
	lastFence    int64
	// cooling and quarantined count the keys in those states; the BLOCKED ones are the
	// rest.
	cooling, quarantined int
	// bySecret finds an imported key by the keyed hash of its secret, so that a
	// duplicate is refused in O(1).
	bySecret map[SecretDigest]slot
	// The listing order: each key has a position (entry.pos), the lowest free one when
	// it is made, which it keeps while it lives. at finds a position's entry, free the
	// positions without one, byState the positions of each state's keys, so a page of
	// one state finds its keys in O(log64 n) each, never walking keys of another, and
	// a transition flips two bits in one cache line. About 4 bytes a key and a few
	// bits.
	at      []slot
	free    bitsets // one set
	byState bitsets // a set per state, by state - 1
}

// statusIndex is the index in mpool.byState of the keys in state s.
func statusIndex(s Status) int {
	switch s {
	case Blocked:
		return int(stateBlocked) - 1
	case Cooling:
		return int(stateCooling) - 1
	case Quarantined:
		return int(stateQuarantined) - 1
	}
	return int(stateAvailable) - 1
}

func (e *entry) status() Status { return stateStatus[e.state] }

// place gives e, a new key of p, its position.
func (p *mpool) place(e *entry) {
	pos := p.free.next(0, 0)
	if pos < 0 {
		pos = len(p.at)
		p.at = append(p.at, e.self)
		p.free.grow(len(p.at))
		p.byState.grow(len(p.at))
	} else {
		p.free.remove(0, pos)
		p.at[pos] = e.self
	}
	e.pos = uint32(pos)
}

// unplace frees the position of e, which has left every state.
func (p *mpool) unplace(e *entry) {
	p.at[e.pos] = noSlot
	p.free.add(0, int(e.pos))
}

// enter and leave move e into and out of state s in the listing's index.
func (p *mpool) enter(e *entry, s Status) { p.byState.add(statusIndex(s), int(e.pos)) }
func (p *mpool) leave(e *entry, s Status) { p.byState.remove(statusIndex(s), int(e.pos)) }

// stats counts the keys of p, which may be nil (a pool never made).
func (p *mpool) stats() Stats {
	if p == nil {
		return Stats{}
	}
	s := Stats{Total: p.count}
	if p.avail != nil {
		s.Available = p.avail.len()
	}
	s.Cooling, s.Quarantined = p.cooling, p.quarantined
	s.Blocked = s.Total - s.Available - s.Cooling - s.Quarantined
	return s
}

// empty lets the structures of p, which holds no key now, go.
func (p *mpool) empty() {
	p.avail, p.availHorizon, p.bySecret = nil, 0, nil
	p.at = nil
	p.free.reset()
	p.byState.reset()
}

// list returns the slots of up to limit of p's keys in state s ("": any), in order
// from position from on, and the position after the last: O(limit log64 n).
func (p *mpool) list(s Status, from, limit int) (slots []slot, after int) {
	for len(slots) < limit {
		pos := -1
		for i := range p.byState.sets {
			if s == "" || statusIndex(s) == i {
				if next := p.byState.next(i, from); next >= 0 && (pos < 0 || next < pos) {
					pos = next
				}
			}
		}
		if pos < 0 {
			break
		}
		slots = append(slots, p.at[pos])
		from = pos + 1
	}
	return slots, from
}

// makePool returns the pool named name, making it if need be: ErrTooManyPools if
// Options.MaxPools are made already.
func (m *memory) makePool(name string) (*mpool, error) {
	if p := m.poolIndex[name]; p != nil {
		return p, nil
	}
	if len(m.pools) >= m.opts.MaxPools {
		return nil, ErrTooManyPools
	}
	p := &mpool{name: name, idx: int32(len(m.pools)), lane: m.lanes.Made(name),
		free: newBitsets(1), byState: newBitsets(len(stateStatus) - 1)}
	m.pools = append(m.pools, p)
	m.poolIndex[name] = p
	i, _ := slices.BinarySearch(m.names, name)
	m.names = slices.Insert(m.names, i, name)
	return p, nil
}

// waitedPools returns the pools that have Acquires waiting.
func (m *memory) waitedPools() []*mpool {
	var waited []*mpool
	for _, p := range m.pools {
		if p.lane.Waiters.Len() > 0 {
			waited = append(waited, p)
		}
	}
	return waited
}
