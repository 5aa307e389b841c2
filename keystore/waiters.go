package keystore

import (
	"container/list"
	"context"
	"sync"
	"sync/atomic"
	"time"
)

// Waiter is an Acquire waiting for a key.
type Waiter struct {
	// TTL is the lease the waiter asked for.
	TTL time.Duration
	ctx context.Context
	got chan Record // buffered: serving never blocks; closed when given up

	// Guarded by the queue's lock.
	elem      *list.Element // in line; nil once taken or gone
	taken     bool          // a backend took it out of line and owes it Serve or Return
	abandoned bool          // it stopped waiting while taken: Return gives it up
}

func newWaiter(ctx context.Context, ttl time.Duration) *Waiter {
	return &Waiter{TTL: ttl, ctx: ctx, got: make(chan Record, 1)}
}

// WaitQueue holds the waiting Acquires of a pool, first come, first served. A backend
// pushes a waiter in the same atomic step that found no key free (Backend.Acquire),
// and when a key comes free it takes the first waiter and either serves it the key,
// leased for the waiter's TTL, or returns it to the head of the line. Every waiter a
// backend takes must get one of the two, at once or within one backend step: the
// waiter's Acquire waits for it.
//
// A backend that frees keys under its own lock takes waiters under that lock, so that
// a key freed while anyone waits goes to the first waiter and no one else; the queue's
// own lock is taken inside the backend's, never the other way around.
type WaitQueue struct {
	mu      sync.Mutex
	line    list.List    // of *Waiter
	waiting atomic.Int64 // in line or taken
	obs     Observer
}

func newWaitQueue(obs Observer) *WaitQueue {
	if obs == nil {
		obs = NopObserver{}
	}
	return &WaitQueue{obs: obs}
}

// Len returns how many wait, in line or taken. It takes no lock, so a backend may
// check it on every step that frees a key.
func (q *WaitQueue) Len() int { return int(q.waiting.Load()) }

// Push puts w at the end of the line.
func (q *WaitQueue) Push(w *Waiter) {
	q.mu.Lock()
	defer q.mu.Unlock()
	w.elem = q.line.PushBack(w)
	q.changed(1)
}

// Take takes the first waiter whose client is still there out of line, or returns
// nil. Waiters whose clients left are given up on the way.
func (q *WaitQueue) Take() *Waiter {
	q.mu.Lock()
	defer q.mu.Unlock()
	for front := q.line.Front(); front != nil; front = q.line.Front() {
		w := front.Value.(*Waiter)
		q.line.Remove(w.elem)
		w.elem = nil
		if w.ctx.Err() != nil {
			q.gone(w)
			continue
		}
		w.taken = true
		return w
	}
	return nil
}

// Serve hands rec, a key leased for w.TTL, to w, which Take returned.
func (q *WaitQueue) Serve(w *Waiter, rec Record) {
	q.mu.Lock()
	defer q.mu.Unlock()
	w.taken = false
	w.got <- rec
	q.changed(-1)
}

// Return puts w, which Take returned and which no key could be found for, back at
// the head of the line, or gives it up if it has stopped waiting meanwhile.
func (q *WaitQueue) Return(w *Waiter) {
	q.mu.Lock()
	defer q.mu.Unlock()
	w.taken = false
	if w.abandoned || w.ctx.Err() != nil {
		q.gone(w)
		return
	}
	w.elem = q.line.PushFront(w)
}

// leave takes w out of line as it stops waiting, and reports whether it was in line.
// If a backend has it, leave marks it so that Return gives it up; if it has been
// served, its key is in w.got.
func (q *WaitQueue) leave(w *Waiter) bool {
	q.mu.Lock()
	defer q.mu.Unlock()
	if w.elem != nil {
		q.line.Remove(w.elem)
		w.elem = nil
		q.changed(-1)
		return true
	}
	w.abandoned = true
	return false
}

// gone gives w up: its Acquire, told by the closed channel, answers without a key.
func (q *WaitQueue) gone(w *Waiter) {
	close(w.got)
	q.changed(-1)
}

func (q *WaitQueue) changed(delta int) {
	q.waiting.Add(int64(delta))
	q.obs.WaitersChanged(delta)
}
