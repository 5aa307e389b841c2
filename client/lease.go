package client

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/jonboulle/clockwork"
)

// Errors of a held lease. A lost lease's error wraps ErrLeaseLost and the cause:
// the server's answer (errors.Is(err, ErrLeaseMismatch), ErrNotFound, ErrNotBlocked)
// or ErrLeaseExpired.
var (
	// ErrLeaseLost: the lease is no longer held; the key must not be used.
	ErrLeaseLost = errors.New("lease lost")
	// ErrLeaseExpired: the lease's time ran out without a successful renewal
	// (the server could not be reached in time, or the lease reached the server's
	// -max-lease-ttl).
	ErrLeaseExpired = errors.New("lease expired")
	// ErrReleased: Release ended the lease.
	ErrReleased = errors.New("lease released")
	// ErrLeaseTaken: the key's events showed it freed by another party, deleted,
	// expired, or acquired under another lease (a lease the server let run out is
	// ErrLeaseExpired).
	ErrLeaseTaken = errors.New("the key was taken away")
)

// Bounds of a held lease's background work.
const (
	// renewDivisor: a lease is renewed when a third of its length is left, so that
	// two thirds of it remain for retrying a failed renewal.
	renewDivisor = 3
	// Failed requests are retried after retryMin, doubling up to retryMax, and
	// never less often than eight times per lease length.
	retryMin = 100 * time.Millisecond
	retryMax = 2 * time.Second
	// requestTimeout bounds one renewal or keep-alive, and is cut shorter by the
	// lease's deadline.
	requestTimeout = 10 * time.Second
	// ReleaseTimeout bounds the unblock sent when a lease's context is cancelled.
	ReleaseTimeout = 5 * time.Second
	// calibrateDivisor: an acquire whose answer took longer than a tenth of the
	// lease's length (it waited for a key, or the network is slow) is followed at
	// once by a renewal, to learn when the lease started.
	calibrateDivisor = 10
)

// Lease holds a key under a lease for as long as the caller needs it: it renews the
// lease in the background when a third of it is left (retrying transient failures
// while the lease may still be alive), keeps the key alive, and tells the holder at
// once, through Done, Err and Context, when the lease is lost, so that the key is no
// longer used. Release, or cancelling the context given to Client.Lease, ends it and
// unblocks the key. Its methods are safe for concurrent use.
//
// Deadlines are judged on the client's own clock, never by comparing the server's
// times with it: the server's times are mapped onto the client's clock at the
// acquire (a lease granted after the request left cannot end before the request
// left plus its length), so that a skew between the two clocks does not matter.
type Lease struct {
	c     *Client
	clock clockwork.Clock
	id    string
	pool  string
	token string
	fence int64
	// secret is what the holder uses (LeaseInfo.Secret of the acquire).
	secret string
	// ttl is what renewals ask for: what the acquire asked for (zero: the server's
	// default). length is the lease's length as granted.
	ttl    time.Duration
	length time.Duration

	ctx      context.Context // Context: ends with the lease
	endCtx   context.CancelCauseFunc
	loopCtx  context.Context // the background loop's requests; ended by Release
	stopLoop context.CancelFunc
	done     chan struct{} // closed when the lease ends
	exited   chan struct{} // closed when the loop and the watch have returned
	watching sync.WaitGroup

	mu          sync.Mutex
	info        LeaseInfo // without its Key: that is key
	key         Key
	serverEpoch time.Time // a server time known to lie at or after localEpoch
	localEpoch  time.Time
	err         error
	releaseCtx  context.Context // set by Release for the loop's unblock
	releaseOpts UnblockOptions  // and how the unblock ends the lease
	releaseErr  error
}

// Lease acquires a key with opts (TTL and Wait are sent only when non-zero) and
// holds it until Release is called or ctx ends; see Lease. When no key is free it
// returns ErrNotFound.
func (c *Client) Lease(ctx context.Context, opts AcquireOptions) (*Lease, error) {
	sent := c.clock.Now()
	info, err := c.AcquireKey(ctx, opts)
	if err != nil {
		return nil, err
	}
	received := c.clock.Now()
	l := &Lease{
		c:           c,
		clock:       c.clock,
		id:          info.Key.ID,
		pool:        info.Key.Pool,
		token:       info.Token,
		fence:       info.Fence,
		secret:      info.Secret,
		ttl:         opts.TTL,
		length:      info.ExpiresAt.Sub(info.AcquiredAt),
		done:        make(chan struct{}),
		exited:      make(chan struct{}),
		info:        info,
		key:         *info.Key,
		serverEpoch: info.AcquiredAt,
		localEpoch:  sent,
	}
	l.info.Key = nil
	l.ctx, l.endCtx = context.WithCancelCause(ctx)
	l.loopCtx, l.stopLoop = context.WithCancel(ctx)
	calibrate := received.Sub(sent) > l.length/calibrateDivisor
	l.watching.Go(l.watch)
	go l.run(ctx, calibrate)
	return l, nil
}

// lossEvents are the events of a key that end a lease held on it: once the lease is
// held, each means another party freed the key, or took it under a lease of its own.
var lossEvents = []EventType{Unblocked, Released, Deleted, Expired, Acquired}

// watch follows the key's events while the lease is held, and ends the lease as lost
// as soon as one of lossEvents comes: within the time an event takes to arrive,
// rather than at the next renewal. If the stream cannot be had (an older server, a
// network that drops websockets), the renewals still find the loss.
func (l *Lease) watch() {
	sub, err := l.c.Subscribe(l.loopCtx, SubscribeOptions{Pool: l.pool, Keys: []string{l.id}, Types: lossEvents})
	if err != nil {
		return
	}
	defer sub.Close()
	ev, ok := <-sub.Events()
	if !ok || l.loopCtx.Err() != nil {
		return // ended, or released: an unblock then is the holder's own
	}
	why := ErrLeaseTaken
	if ev.Type == Released {
		why = ErrLeaseExpired // the server's deadline passed before a renewal reached it
	}
	l.lose(fmt.Errorf("%w: the key was %s (event %d)", why, ev.Type, ev.Seq))
}

// KeyID returns the id of the key the lease holds: the API key to use.
func (l *Lease) KeyID() string { return l.id }

// Token returns the lease's token.
func (l *Lease) Token() string { return l.token }

// Secret returns what the holder uses: an imported key's secret, or a generated key's
// id.
func (l *Lease) Secret() string { return l.secret }

// Fence returns the lease's fencing token, to pass to systems downstream: it is
// larger than that of every lease the pool granted before.
func (l *Lease) Fence() int64 { return l.fence }

// Info returns the lease as the server last described it (after the acquire or
// the latest renewal).
func (l *Lease) Info() LeaseInfo {
	l.mu.Lock()
	defer l.mu.Unlock()
	info, key := l.info, l.key
	info.Key = &key
	return info
}

// Done returns a channel closed when the lease ends: lost, released, or its context
// cancelled. From then on the key must not be used.
func (l *Lease) Done() <-chan struct{} { return l.done }

// Err returns nil while the lease is held; after Done is closed, why it ended: an
// error wrapping ErrLeaseLost if it was lost, ErrReleased after Release, or the
// context's error.
func (l *Lease) Err() error {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.err
}

// Context returns a context that is cancelled when the lease ends, with Err as its
// cause: hand it to the work done with the key.
func (l *Lease) Context() context.Context { return l.ctx }

// ReleaseOption says how Release ends the lease: Cooldown, Failed.
type ReleaseOption func(*UnblockOptions)

// Cooldown releases the key into COOLING for d (1s up to the server's -max-cooldown):
// the upstream throttled it (an HTTP 429, say), so nobody gets it before d has passed.
func Cooldown(d time.Duration) ReleaseOption {
	return func(o *UnblockOptions) { o.Cooldown = d }
}

// Failed records a failure of the key as it is released: at the server's
// -quarantine-after failures in a row the key goes to QUARANTINED.
func Failed() ReleaseOption {
	return func(o *UnblockOptions) { o.Failed = true }
}

// Release ends the lease and unblocks the key (as opts say: with a cool-down, a
// failure), and returns once the background work has stopped. It returns nil if the
// key was freed (or the lease ran out, which frees it too, without opts), the loss if
// the lease had been lost, or why the unblock failed; ctx bounds the unblock. Call it
// even after the lease is lost or its context ended: later calls return the same.
func (l *Lease) Release(ctx context.Context, opts ...ReleaseOption) error {
	l.mu.Lock()
	if l.releaseCtx == nil {
		l.releaseCtx = ctx
		for _, o := range opts {
			o(&l.releaseOpts)
		}
	}
	l.mu.Unlock()
	l.stopLoop()
	<-l.exited
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.releaseErr
}

// local returns the client-clock time at which the server's time t has surely
// not yet passed.
func (l *Lease) local(t time.Time) time.Time {
	return l.localEpoch.Add(t.Sub(l.serverEpoch))
}

// deadlines returns, on the client's clock, when the lease and the key's keep-alive
// run out at the earliest.
func (l *Lease) deadlines() (lease, keepAlive time.Time) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.local(l.info.ExpiresAt), l.local(l.key.ExpiresAt)
}

// end records why the lease ended and tells the holder, once, and reports whether it
// did (false: it had ended already).
func (l *Lease) end(err error) bool {
	l.mu.Lock()
	if l.err != nil {
		l.mu.Unlock()
		return false
	}
	l.err = err
	l.mu.Unlock()
	l.endCtx(err)
	close(l.done)
	return true
}

func lost(cause error) error { return fmt.Errorf("%w: %w", ErrLeaseLost, cause) }

// run renews the lease and keeps the key alive until the lease ends, then unblocks
// the key unless it was lost. calibrate asks for a renewal at once (see
// calibrateDivisor).
func (l *Lease) run(parent context.Context, calibrate bool) {
	defer func() {
		l.stopLoop()
		l.watching.Wait()
		close(l.exited)
	}()
	leaseEnd, _ := l.deadlines()
	renewAt := leaseEnd.Add(-l.length / renewDivisor)
	if calibrate {
		renewAt = l.clock.Now()
	}
	keepAt := l.clock.Now() // a key just acquired may be close to its keep-alive deadline
	// minStep keeps a renewal that gained little from being repeated in a tight loop.
	minStep := min(retryMin, l.length/(2*renewDivisor))
	var (
		renewFails, keepFails int
		lastErr               error
		capped                bool // renewals no longer extend the lease
	)
	for {
		leaseEnd, keepEnd := l.deadlines()
		end := earliest(leaseEnd, keepEnd)
		next := earliest(end, keepAt)
		if !capped {
			next = earliest(next, renewAt)
		}
		if wait := next.Sub(l.clock.Now()); wait > 0 {
			timer := l.clock.NewTimer(wait)
			select {
			case <-timer.Chan():
			case <-l.loopCtx.Done():
				timer.Stop()
			case <-l.done: // the watch found it lost
				timer.Stop()
			}
		}
		select {
		case <-l.done:
			return // lost (the watch found it): the key is not the holder's to free
		default:
		}
		if l.loopCtx.Err() != nil {
			l.stop(parent)
			return
		}

		now := l.clock.Now()
		if !now.Before(end) {
			var why error = ErrLeaseExpired
			switch {
			case keepEnd.Before(leaseEnd):
				why = fmt.Errorf("%w: the key's keep-alive ran out", ErrLeaseExpired)
			case capped:
				why = fmt.Errorf("%w: it reached the server's max lease TTL", ErrLeaseExpired)
			case lastErr != nil:
				why = fmt.Errorf("%w: no renewal succeeded in time; last error: %v", ErrLeaseExpired, lastErr)
			}
			l.lose(why)
			return
		}
		renewNow := !capped && !now.Before(renewAt)
		keepAliveNow := !now.Before(keepAt)

		if renewNow {
			before := l.Info().ExpiresAt
			sent := l.clock.Now()
			info, err := request(l, end, func(ctx context.Context) (LeaseInfo, error) {
				return l.c.RenewLease(ctx, l.id, l.token, l.ttl)
			})
			switch {
			case l.loopCtx.Err() != nil:
				continue
			case err == nil:
				renewFails, lastErr = 0, nil
				l.renewed(info, sent, calibrate)
				// A renewal that did not move the lease met the server's max lease
				// TTL: more would gain nothing. (Not the calibrating one: it comes so
				// soon after the grant that the server's clock may not have moved.)
				capped = !calibrate && !info.ExpiresAt.After(before)
				calibrate = false
				leaseEnd, _ = l.deadlines()
				renewAt = latest(leaseEnd.Add(-l.length/renewDivisor), l.clock.Now().Add(minStep))
			case leaseGone(err):
				l.lose(err)
				return
			default:
				renewFails++
				lastErr = err
				renewAt = l.clock.Now().Add(l.backoff(renewFails))
			}
		}
		if keepAliveNow {
			sent := l.clock.Now()
			key, err := request(l, end, func(ctx context.Context) (Key, error) {
				return l.c.KeepAlive(ctx, l.id)
			})
			switch {
			case l.loopCtx.Err() != nil:
				continue
			case err == nil:
				keepFails = 0
				l.mu.Lock()
				l.key.ExpiresAt = key.ExpiresAt
				keepEnd = l.local(key.ExpiresAt)
				l.mu.Unlock()
				// The key's keep-alive TTL as seen from here (at most the true one).
				ttl := keepEnd.Sub(sent)
				keepAt = latest(keepEnd.Add(-ttl/renewDivisor), l.clock.Now().Add(minStep))
			case errors.Is(err, ErrNotFound):
				l.lose(err)
				return
			default:
				keepFails++
				lastErr = err
				keepAt = l.clock.Now().Add(l.backoff(keepFails))
			}
		}
	}
}

// lose ends the lease as lost because of cause, unless it has ended already.
func (l *Lease) lose(cause error) {
	err := lost(cause)
	if !l.end(err) {
		return
	}
	l.mu.Lock()
	l.releaseErr = err
	l.mu.Unlock()
}

// renewed records a renewal sent at sent. A calibrating renewal, made just after
// the acquire, may move the mapping of server times onto the client's clock: the
// server set the expiry to its now plus the ttl asked, and its now came after sent.
func (l *Lease) renewed(info LeaseInfo, sent time.Time, calibrate bool) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if calibrate && !info.ExpiresAt.Before(l.info.ExpiresAt) {
		asked := l.ttl
		if asked == 0 {
			asked = l.length
		}
		serverNow := info.ExpiresAt.Add(-asked)
		// Take the new mapping only if it says the lease ends later.
		if sent.Sub(l.localEpoch) > serverNow.Sub(l.serverEpoch) {
			l.serverEpoch, l.localEpoch = serverNow, sent
		}
	}
	l.info = info
	l.key = *info.Key
	l.info.Key = nil
}

// request runs one renewal or keep-alive, bounded by requestTimeout and by end,
// when the lease is gone anyway.
func request[T any](l *Lease, end time.Time, do func(ctx context.Context) (T, error)) (T, error) {
	ctx, cancel := context.WithTimeout(l.loopCtx, min(requestTimeout, end.Sub(l.clock.Now())))
	defer cancel()
	return do(ctx)
}

// backoff returns the wait before retry number fails (1, 2, ...).
func (l *Lease) backoff(fails int) time.Duration {
	limit := min(retryMax, l.length/8)
	d := retryMin
	for i := 1; i < fails && d < limit; i++ {
		d *= 2
	}
	return max(min(d, limit), time.Millisecond)
}

// stop ends a lease whose loop was stopped, by Release or by parent's end, and
// unblocks the key.
func (l *Lease) stop(parent context.Context) {
	l.mu.Lock()
	ctx := l.releaseCtx
	l.mu.Unlock()
	if ctx == nil { // parent ended, not Release
		l.end(parent.Err())
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(context.WithoutCancel(parent), ReleaseTimeout)
		defer cancel()
	} else {
		l.end(ErrReleased)
	}
	err := l.free(ctx)
	l.mu.Lock()
	l.releaseErr = err
	l.mu.Unlock()
}

// free unblocks the key, retrying transient failures until ctx ends or the lease
// has run out (which frees the key as well).
func (l *Lease) free(ctx context.Context) error {
	for fails := 1; ; fails++ {
		leaseEnd, _ := l.deadlines()
		if !l.clock.Now().Before(leaseEnd) {
			return nil
		}
		rctx, cancel := context.WithTimeout(ctx, min(requestTimeout, leaseEnd.Sub(l.clock.Now())))
		l.mu.Lock()
		opts := l.releaseOpts
		l.mu.Unlock()
		_, err := l.c.UnblockKeyWith(rctx, l.id, l.token, opts)
		cancel()
		switch {
		case err == nil:
			return nil
		case leaseGone(err):
			return lost(err)
		case !transient(err) || ctx.Err() != nil:
			return err
		}
		timer := l.clock.NewTimer(l.backoff(fails))
		select {
		case <-timer.Chan():
		case <-ctx.Done():
			timer.Stop()
			return err
		}
	}
}

func earliest(a, b time.Time) time.Time {
	if b.Before(a) {
		return b
	}
	return a
}

func latest(a, b time.Time) time.Time {
	if b.After(a) {
		return b
	}
	return a
}
