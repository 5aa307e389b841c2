// Package bufpool lends the byte buffers that answers and request bodies are written
// and read in, so that a request allocates none of its own.
package bufpool

import "sync"

// MaxSize is the largest buffer kept for reuse: a huge one (a 10000-key answer) is left
// to the GC rather than pinned in the pool.
const MaxSize = 64 << 10

var pool = sync.Pool{New: func() any { b := make([]byte, 0, 1024); return &b }}

// Get returns an empty buffer.
func Get() *[]byte { return pool.Get().(*[]byte) }

// Put gives b back; its caller no longer uses it, nor what it holds.
func Put(b *[]byte) {
	if cap(*b) > MaxSize {
		return
	}
	*b = (*b)[:0]
	pool.Put(b)
}
