package keystore

import (
	"slices"

	"github.com/tidwall/btree"
)

// mpool is one pool of the in-memory backend: its counters, its AVAILABLE keys for
// picks, and its keys by state in order of key number for List. A pool whose keys
// are all gone keeps its counters only.
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
	// byState orders the pool's key numbers by state (statusIndex): about 12 bytes a
	// key, and a page of one state never walks keys of another.
	byState [2]*btree.Set[uint64]
}

func statusIndex(s Status) int {
	if s == Blocked {
		return 1
	}
	return 0
}

func (e *entry) status() Status {
	if e.blocked() {
		return Blocked
	}
	return Available
}

// keys returns the set of p's keys in state s.
func (p *mpool) keys(s Status) *btree.Set[uint64] {
	i := statusIndex(s)
	if p.byState[i] == nil {
		p.byState[i] = new(btree.Set[uint64])
	}
	return p.byState[i]
}

// stats counts the keys of p, which may be nil (a pool never made).
func (p *mpool) stats() Stats {
	if p == nil {
		return Stats{}
	}
	s := Stats{Total: p.count, Blocked: p.keys(Blocked).Len()}
	if p.avail != nil {
		s.Available = p.avail.len()
	}
	return s
}

// empty lets the structures of p, which holds no key now, go.
func (p *mpool) empty() {
	p.avail, p.availHorizon, p.byState = nil, 0, [2]*btree.Set[uint64]{}
}

// list returns up to limit numbers of p's keys in state s ("": any) from from on, in
// order: O(limit + log n), merging the states' sets when s is "".
func (p *mpool) list(s Status, from uint64, limit int) []uint64 {
	var ns []uint64
	for _, st := range []Status{Available, Blocked} {
		if s != "" && s != st {
			continue
		}
		taken := 0
		p.keys(st).Ascend(from, func(n uint64) bool {
			ns = append(ns, n)
			taken++
			return taken < limit
		})
	}
	if s == "" {
		slices.Sort(ns)
		ns = ns[:min(len(ns), limit)]
	}
	return ns
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
	p := &mpool{name: name, idx: int32(len(m.pools)), lane: m.lanes.Made(name)}
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
