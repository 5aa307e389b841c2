package graph

import (
	"container/list"
	"context"
	"sync"

	"github.com/99designs/gqlgen/graphql"
)

// boundedCache is a least-recently-used cache bounded by the bytes its entries cost,
// for gqlgen's query cache and the persisted queries'. An Add during an operation is
// parked in its admission until the operation has passed every check; an entry that
// alone would take more than an eighth of the budget is never kept.
type boundedCache[V any] struct {
	budget int
	cost   func(key string, value V, ctx context.Context) int

	mu      sync.Mutex
	used    int
	order   *list.List // front: most recently used; of *cacheEntry[V]
	entries map[string]*list.Element
}

type cacheEntry[V any] struct {
	key   string
	value V
	cost  int
}

var _ graphql.Cache[string] = (*boundedCache[string])(nil)

// cacheEntryOverhead is what an entry costs beyond its key and value: the map slot,
// the list element and the entry itself.
const cacheEntryOverhead = 160

func newBoundedCache[V any](budget int, cost func(key string, value V, ctx context.Context) int) *boundedCache[V] {
	return &boundedCache[V]{budget: budget, cost: cost, order: list.New(), entries: map[string]*list.Element{}}
}

// Get returns the value cached under key, and marks it recently used.
func (c *boundedCache[V]) Get(ctx context.Context, key string) (V, bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	el, ok := c.entries[key]
	if !ok {
		var zero V
		return zero, false
	}
	c.order.MoveToFront(el)
	return el.Value.(*cacheEntry[V]).value, true
}

// Contains reports whether key is cached, without marking it used.
func (c *boundedCache[V]) Contains(key string) bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	_, ok := c.entries[key]
	return ok
}

// Add caches value under key once the current operation has passed every check;
// outside an operation, at once.
func (c *boundedCache[V]) Add(ctx context.Context, key string, value V) {
	cost := c.cost(key, value, ctx) + cacheEntryOverhead
	if a := admissionFor(ctx); a != nil {
		a.commits = append(a.commits, func() { c.store(key, value, cost) })
		return
	}
	c.store(key, value, cost)
}

func (c *boundedCache[V]) store(key string, value V, cost int) {
	if cost > c.budget/8 {
		return
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if el, ok := c.entries[key]; ok {
		c.order.MoveToFront(el)
		return
	}
	for c.used+cost > c.budget {
		oldest := c.order.Back()
		e := oldest.Value.(*cacheEntry[V])
		c.order.Remove(oldest)
		delete(c.entries, e.key)
		c.used -= e.cost
	}
	c.entries[key] = c.order.PushFront(&cacheEntry[V]{key: key, value: value, cost: cost})
	c.used += cost
}
