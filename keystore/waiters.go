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
	// TTL is the lease the waiter asked for, and Holder who holds it.
	TTL    time.Duration
	Holder string
	pool   string
	ctx    context.Context
	got    chan Record // buffered: serving never blocks; closed when given up

	// Guarded by the queue's lock.
	elem      *list.Element // in line; nil once taken or gone
	taken     bool          // a backend took it out of line and owes it Serve or Return
	abandoned bool          // it stopped waiting while taken: Return gives it up
	// trying: it is in line (Join) while its backend's own try for it runs, and owes
	// Stay or Withdraw. It counts in Len; the Observer hears of it only if it stays.
	trying bool
}

func newWaiter(ctx context.Context, pool string, ttl time.Duration, holder string) *Waiter {
	return &Waiter{TTL: ttl, Holder: holder, pool: pool, ctx: ctx, got: make(chan Record, 1)}
}

// WaitQueue holds the waiting Acquires of one pool, first come, first served. A backend
// pushes a waiter in the same atomic step that found no key free (Backend.Acquire),
// and when a key comes free it takes the first waiter and either serves it the key,
// leased for the waiter's TTL, or returns it to the head of the line. Every waiter a
// backend takes must get one of the two, at once or within one backend step: the
// waiter's Acquire waits for it.
//
// A backend that frees keys under its own lock takes waiters under that lock, so that
// a key freed while anyone waits goes to the first waiter and no one else; the queue's
// own lock is taken inside the backend's, never the other way around.
//
// A backend whose steps cannot take a lock of this process (Redis) puts the waiter in
// line just before its step instead (Join), and takes it back out if the step found
// it a key (Withdraw); if not, the waiter stays where it joined (Stay). So it is in
// line, in the order of arrival, from before the step that found no key; meanwhile
// Take stops at it, so that no one behind it is served a key that may be its.
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

// Len returns how many wait, in line (trying included) or taken. It takes no lock,
// so a backend may check it on every step that frees a key.
func (q *WaitQueue) Len() int { return int(q.waiting.Load()) }

// Push puts w at the end of the line.
func (q *WaitQueue) Push(w *Waiter) {
	q.mu.Lock()
	defer q.mu.Unlock()
	w.elem = q.line.PushBack(w)
	q.changed(1)
}

// Join puts w at the end of the line while its backend tries for it, and returns how
// many wait before it, whose keys the try must leave to them. Until the backend
// settles w with Stay or Withdraw, w counts in Len, unseen by the Observer, and Take
// stops at it when it is first.
func (q *WaitQueue) Join(w *Waiter) (ahead int) {
	q.mu.Lock()
	defer q.mu.Unlock()
	ahead = q.Len()
	w.elem, w.trying = q.line.PushBack(w), true
	q.waiting.Add(1)
	return ahead
}

// Stay settles w, which Join queued and whose try found no key: it waits where it
// joined. It reports false if w's client has left meanwhile, and then w is out of the
// queue and its Acquire answers by itself. wake reports that Take, which stopped at w,
// now has a waiter to take: the backend must see to it.
func (q *WaitQueue) Stay(w *Waiter) (stays, wake bool) {
	q.mu.Lock()
	defer q.mu.Unlock()
	first := q.line.Front() == w.elem
	w.trying = false
	if w.ctx.Err() != nil {
		q.line.Remove(w.elem)
		w.elem = nil
		q.waiting.Add(-1)
		return false, first && q.frontWaits()
	}
	q.obs.WaitersChanged(1)
	return true, first
}

// Withdraw settles w, which Join queued, when its try found it a key or failed: w
// leaves the queue and its Acquire answers by itself. wake is as for Stay.
func (q *WaitQueue) Withdraw(w *Waiter) (wake bool) {
	q.mu.Lock()
	defer q.mu.Unlock()
	first := q.line.Front() == w.elem
	w.trying = false
	q.line.Remove(w.elem)
	w.elem = nil
	q.waiting.Add(-1)
	return first && q.frontWaits()
}

// frontWaits reports whether the first in line is a waiter that Take would take (or
// give up), not one whose try is under way.
func (q *WaitQueue) frontWaits() bool {
	front := q.line.Front()
	return front != nil && !front.Value.(*Waiter).trying
}

// Take takes the first waiter whose client is still there out of line, or returns
// nil. Waiters whose clients left are given up on the way. It also returns nil while
// the first is trying (Join): a key found now may be that one's.
func (q *WaitQueue) Take() *Waiter {
	q.mu.Lock()
	defer q.mu.Unlock()
	for front := q.line.Front(); front != nil; front = q.line.Front() {
		w := front.Value.(*Waiter)
		if w.trying {
			return nil
		}
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

// leave takes w out of line as it stops waiting (never while trying: its Acquire has
// returned), and reports whether it was in line.
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
