package graph

import (
	"errors"
	"net"
	"sync"
	"syscall"
	"time"
)

// outbox is the one way bytes reach a streaming connection (a websocket, or an SSE
// response): every frame is queued whole, in order, and one writer at a time takes
// everything queued so far and writes it in one go, so that frames queued while the
// connection was busy are coalesced into one write.
//
// Writes come in three kinds:
//   - send queues bytes and waits until they are written, as a blocking write would
//     (protocol messages, keep-alives, the results of queries and mutations);
//   - post queues bytes and returns at once (frames gorilla writes itself: the
//     handshake, pongs, closes);
//   - kick, after queue, writes what it can without waiting (a delivery worker's
//     frames): a worker must never wait for a client.
//
// When the peer does not take everything at once, a flusher goroutine finishes the
// write, waiting for the peer; it gives up, and the connection is lost, after
// stallTimeout without progress. A connection whose peer stalls holds its queue,
// not a worker: its delivery waits for drained.
type outbox struct {
	conn         writeConn       // where bytes go; SetWriteDeadline bounds a waiting write
	raw          syscall.RawConn // for writes that must not wait; nil: every write may wait
	stallTimeout time.Duration   // how long a write may make no progress
	onFail       func(error)     // called once when a write fails: the connection is lost

	mu       sync.Mutex
	cur      []byte // the bytes the writer is writing, from curOff
	curOff   int
	pending  []byte // queued behind cur
	writing  bool   // someone owns conn's writes
	queued   int64  // bytes ever queued
	written  int64  // bytes ever written
	err      error  // why the connection was lost
	progress chan struct{}
	waiters  []outboxWaiter
}

// outboxWaiter is told when a stalled outbox has drained (or failed), and, while a
// write waits for the peer, told every stallCheck so that it can look at its
// subscription (to cut it, if it has fallen out of the ring, while it waits).
type outboxWaiter interface {
	drained()
	stalled()
}

// writeConn is what an outbox writes to: a connection, or an HTTP response.
type writeConn interface {
	Write(p []byte) (int, error)
	SetWriteDeadline(t time.Time) error
}

// stallCheck is how often a write that waits for its peer tells the waiters so.
const stallCheck = 250 * time.Millisecond

// errOutboxTimeout is a send that waited longer than the stall timeout for its bytes
// to go out. Its bytes stay queued: they go out, if ever, in order.
var errOutboxTimeout = &net.OpError{Op: "write", Err: errors.New("timed out waiting for the peer")}

func newOutbox(conn writeConn, stallTimeout time.Duration, onFail func(error)) *outbox {
	o := &outbox{conn: conn, stallTimeout: stallTimeout, onFail: onFail, progress: make(chan struct{})}
	if sc, ok := conn.(syscall.Conn); ok && canWriteRaw {
		if raw, err := sc.SyscallConn(); err == nil {
			o.raw = raw
		}
	}
	_ = conn.SetWriteDeadline(time.Time{})
	return o
}

// queue adds p to the outbox, behind everything queued before, and returns the
// offset its end will have in the stream; nothing is written yet.
func (o *outbox) queue(frames func([]byte) []byte) (end int64, err error) {
	o.mu.Lock()
	defer o.mu.Unlock()
	if o.err != nil {
		return 0, o.err
	}
	if cap(o.pending) == 0 {
		if b, ok := turnBuffers.Get().(*[]byte); ok {
			o.pending = (*b)[:0]
		}
	}
	before := len(o.pending)
	o.pending = frames(o.pending)
	o.queued += int64(len(o.pending) - before)
	return o.queued, nil
}

// backedUp reports whether more than limit bytes wait to be written while a writer
// waits for the peer; if so, w is told once the outbox has drained.
func (o *outbox) backedUp(limit int, w outboxWaiter) bool {
	o.mu.Lock()
	defer o.mu.Unlock()
	if o.err != nil || !o.writing || len(o.cur)-o.curOff+len(o.pending) <= limit {
		return false
	}
	o.waiters = append(o.waiters, w)
	return true
}

// post queues p and sees that it is written, without waiting for it.
func (o *outbox) post(p []byte) error {
	if _, err := o.queue(func(b []byte) []byte { return append(b, p...) }); err != nil {
		return err
	}
	_, err := o.kick(nil)
	return err
}

// send queues p and waits until it is written, the connection is lost, or the peer
// has taken nothing for the stall timeout.
func (o *outbox) send(p []byte) error {
	end, err := o.queue(func(b []byte) []byte { return append(b, p...) })
	if err != nil {
		return err
	}
	return o.wait(end)
}

// wait waits until the stream has been written up to end, the connection is lost,
// or the peer has taken nothing for the stall timeout. If nobody is writing, it
// writes itself.
func (o *outbox) wait(end int64) error {
	var timer *time.Timer
	o.mu.Lock()
	defer o.mu.Unlock()
	last := o.written
	for o.err == nil && o.written < end {
		if !o.writing {
			o.writing = true
			o.mu.Unlock()
			o.write(end)
			o.mu.Lock()
			continue
		}
		if timer == nil {
			timer = time.NewTimer(o.stallTimeout)
			defer timer.Stop()
		}
		ch := o.progress
		o.mu.Unlock()
		expired := false
		select {
		case <-ch:
		case <-timer.C:
			expired = true
		}
		o.mu.Lock()
		switch {
		case o.written > last:
			last = o.written
			timer.Reset(o.stallTimeout)
		case expired:
			return errOutboxTimeout
		}
	}
	return o.err
}

// kick writes what is queued without waiting for the peer, unless someone is writing
// already (they write it). If the outbox is not empty when kick returns, w (if any)
// is told once it has drained; drained reports whether it is empty.
func (o *outbox) kick(w outboxWaiter) (drained bool, err error) {
	o.mu.Lock()
	if o.err != nil {
		err := o.err
		o.mu.Unlock()
		return false, err
	}
	if o.writing {
		if w != nil {
			o.waiters = append(o.waiters, w)
		}
		o.mu.Unlock()
		return false, nil
	}
	o.writing = true
	for {
		buf := o.takeLocked()
		if len(buf) == 0 {
			waiters := o.releaseLocked()
			o.mu.Unlock()
			notify(waiters)
			return true, nil
		}
		o.mu.Unlock()
		n, err := o.writeNow(buf)
		o.mu.Lock()
		if !o.wroteLocked(n, err) {
			return false, err
		}
		if n < len(buf) {
			// The peer is behind: a flusher waits for it, not us.
			if w != nil {
				o.waiters = append(o.waiters, w)
			}
			o.mu.Unlock()
			go o.write(-1)
			return false, nil
		}
	}
}

// write is the writer (writing is ours): it writes, waiting for the peer, until the
// stream is written up to until (everything, if until is negative), then hands what
// is left to a flusher goroutine, or stops writing if nothing is.
func (o *outbox) write(until int64) {
	o.mu.Lock()
	for until < 0 || o.written < until {
		buf := o.takeLocked()
		if len(buf) == 0 {
			break
		}
		o.mu.Unlock()
		n, err := o.writeWaiting(buf)
		o.mu.Lock()
		if !o.wroteLocked(n, err) {
			return
		}
	}
	if len(o.cur) > o.curOff || len(o.pending) > 0 {
		o.mu.Unlock()
		go o.write(-1)
		return
	}
	waiters := o.releaseLocked()
	o.mu.Unlock()
	notify(waiters)
}

// takeLocked returns the bytes to write next: the rest of cur, or else what is pending.
func (o *outbox) takeLocked() []byte {
	if o.curOff == len(o.cur) {
		o.cur, o.pending = o.pending, o.cur[:0]
		o.curOff = 0
	}
	return o.cur[o.curOff:]
}

// wroteLocked records a write of n bytes that ended with err, holding o.mu. On an error
// it fails the outbox, releases o.mu, tells the waiters, and reports false.
func (o *outbox) wroteLocked(n int, err error) bool {
	o.advanceLocked(n)
	if err == nil {
		return true
	}
	waiters := o.failLocked(err)
	o.mu.Unlock()
	notify(waiters)
	return false
}

func (o *outbox) advanceLocked(n int) {
	if n == 0 {
		return
	}
	o.curOff += n
	o.written += int64(n)
	close(o.progress)
	o.progress = make(chan struct{})
}

// releaseLocked ends a writer's turn on an empty outbox and returns the waiters to tell.
func (o *outbox) releaseLocked() []outboxWaiter {
	o.writing = false
	close(o.progress)
	o.progress = make(chan struct{})
	waiters := o.waiters
	o.waiters = nil
	// A burst's buffer is not kept by an idle connection, but by the next that needs one.
	if cap(o.cur) > maxIdleOutbox {
		b := o.cur[:0]
		turnBuffers.Put(&b)
		o.cur, o.curOff = nil, 0
	}
	if cap(o.pending) > maxIdleOutbox {
		b := o.pending[:0]
		turnBuffers.Put(&b)
		o.pending = nil
	}
	return waiters
}

// maxIdleOutbox is the most buffer an idle outbox keeps for the next write.
const maxIdleOutbox = 64 << 10

// turnBuffers are the large buffers idle connections gave back: a delivery turn's
// frames are some hundreds of KiB, and a saturated fan-out would otherwise allocate
// one for every turn.
var turnBuffers sync.Pool

// failLocked records that the connection is lost and returns the waiters to tell.
func (o *outbox) failLocked(err error) []outboxWaiter {
	if o.err == nil {
		o.err = err
		if o.onFail != nil {
			go o.onFail(err)
		}
	}
	o.cur, o.pending, o.curOff = nil, nil, 0
	return o.releaseLocked()
}

func notify(waiters []outboxWaiter) {
	for _, w := range waiters {
		w.drained()
	}
}

// stalled tells the waiters that a write is waiting for the peer.
func (o *outbox) stalled() {
	o.mu.Lock()
	waiters := append([]outboxWaiter(nil), o.waiters...)
	o.mu.Unlock()
	for _, w := range waiters {
		w.stalled()
	}
}

// writeNow writes what the connection takes without waiting and returns how much
// that was; an error means the connection is lost.
func (o *outbox) writeNow(buf []byte) (int, error) {
	if o.raw == nil {
		return 0, nil // every write may wait here: leave it to a flusher
	}
	var n int
	var werr error
	err := o.raw.Write(func(fd uintptr) bool {
		n, werr = writeNonBlocking(fd, buf)
		return true // never wait for the socket to be writable
	})
	if err == nil {
		err = werr
	}
	return n, err
}

// writeWaiting writes buf, waiting for the peer, and gives up after the stall
// timeout without progress. On a plain socket the wait is cut in slices of
// stallCheck (a write that timed out there may go on), and the waiters are told of
// each; on other connections (TLS, an HTTP response) a timeout ends the connection,
// so the one deadline is the stall timeout.
func (o *outbox) writeWaiting(buf []byte) (int, error) {
	defer o.conn.SetWriteDeadline(time.Time{})
	written := 0
	lastProgress := time.Now()
	for written < len(buf) {
		deadline := lastProgress.Add(o.stallTimeout)
		sliced := o.raw != nil
		if next := time.Now().Add(stallCheck); sliced && next.Before(deadline) {
			deadline = next
		}
		_ = o.conn.SetWriteDeadline(deadline)
		n, err := o.conn.Write(buf[written:])
		written += n
		if n > 0 {
			lastProgress = time.Now()
		}
		if err == nil {
			continue
		}
		if sliced && isTimeout(err) && time.Since(lastProgress) < o.stallTimeout {
			o.stalled()
			continue
		}
		return written, err
	}
	return written, nil
}

// drain waits until everything queued has been written, or the connection is lost,
// or deadline passes.
func (o *outbox) drain(deadline time.Time) {
	if _, err := o.kick(nil); err != nil {
		return
	}
	timer := time.NewTimer(time.Until(deadline))
	defer timer.Stop()
	o.mu.Lock()
	defer o.mu.Unlock()
	for o.err == nil && o.written < o.queued {
		ch := o.progress
		o.mu.Unlock()
		select {
		case <-ch:
		case <-timer.C:
			o.mu.Lock()
			return
		}
		o.mu.Lock()
	}
}

// errOutboxClosed: the outbox's owner is done with the connection.
var errOutboxClosed = errors.New("the connection is closed")

// close refuses every later write, and returns once no writer is left: the owner may
// then let go of the connection (an HTTP response). Stop a writer that waits for the
// peer first, by closing the connection or moving its deadline.
func (o *outbox) close() {
	o.mu.Lock()
	defer o.mu.Unlock()
	if o.err == nil {
		o.err = errOutboxClosed
	}
	for o.writing {
		ch := o.progress
		o.mu.Unlock()
		<-ch
		o.mu.Lock()
	}
}
