package redisstore

import (
	"context"
	"crypto/rand"
	"encoding/binary"
	"math"
	"runtime"
	"strconv"
	"strings"
	"time"

	"github.com/jonboulle/clockwork"
	"github.com/redis/rueidis"

	"github.com/keypool/keypool/keystore"
)

func randomUint64() uint64 {
	var b [8]byte
	_, _ = rand.Read(b[:])
	return binary.LittleEndian.Uint64(b[:])
}

// backoff doubles a real-time pause from minBackoff to maxBackoff while Redis cannot
// be reached, so that the loops neither die nor spin.
type backoff struct{ d time.Duration }

// sleep pauses and reports false if the store closed meanwhile.
func (b *backoff) sleep(ctx context.Context) bool {
	b.d = min(max(2*b.d, minBackoff), maxBackoff)
	t := time.NewTimer(b.d)
	defer t.Stop()
	select {
	case <-t.C:
		return true
	case <-ctx.Done():
		return false
	}
}

func (b *backoff) reset() { b.d = 0 }

// wakeBy tells the expirer of a deadline (Redis time, µs) that it may not know yet.
func (s *Store) wakeBy(deadline int64) {
	s.mu.Lock()
	s.heard = min(s.heard, deadline)
	earlier := deadline < s.wakeAt
	if earlier {
		s.wakeAt = deadline
	}
	s.mu.Unlock()
	if earlier {
		select {
		case s.kick <- struct{}{}:
		default:
		}
	}
}

// expireLoop applies due transitions in batches of expiryBatch, then sleeps until the
// earliest deadline, a kick for an earlier one, or fallbackTick.
func (s *Store) expireLoop() {
	defer s.wg.Done()
	var retry backoff
	for {
		s.mu.Lock()
		s.heard = math.MaxInt64
		s.mu.Unlock()
		res, err := s.run(s.ctx, s.scripts.expire, readOnly, expiryBatch, s.repliesTTL)
		if err != nil {
			if s.lost.Load() || !retry.sleep(s.ctx) {
				return
			}
			continue
		}
		retry.reset()
		applied, next := res[2], res[3]
		if next < 0 {
			next = math.MaxInt64
		}
		if applied == expiryBatch { // more may be due: let requests in, come straight back
			runtime.Gosched()
			if s.ctx.Err() != nil {
				return
			}
			continue
		}
		s.mu.Lock()
		s.wakeAt = min(next, s.heard) // a deadline set while the script ran may be earlier
		s.mu.Unlock()
		if !s.sleepUntilDue() {
			return
		}
	}
}

// sleepUntilDue waits for the deadline in s.wakeAt, re-arming when a kick brings it
// forward; false if the store closed.
func (s *Store) sleepUntilDue() bool {
	fallback := time.NewTimer(fallbackTick)
	defer fallback.Stop()
	for {
		s.mu.Lock()
		wakeAt := s.wakeAt
		s.mu.Unlock()
		timer, fired := s.timerUntil(wakeAt)
		select {
		case <-fired:
		case <-fallback.C:
		case <-s.ctx.Done():
		case <-s.kick:
			if timer != nil {
				timer.Stop()
			}
			continue
		}
		if timer != nil {
			timer.Stop()
		}
		return s.ctx.Err() == nil
	}
}

// timerUntil returns a timer of the store's clock that fires at Redis time next, or
// nil and a nil channel for MaxInt64. It re-arms (a few times at most) while a fake
// clock moves between reading it and arming the timer: a timer armed for the earlier
// reading would fire after next.
func (s *Store) timerUntil(next int64) (clockwork.Timer, <-chan time.Time) {
	if next == math.MaxInt64 {
		return nil, nil
	}
	for tries := 0; ; tries++ {
		before := s.redisNow()
		timer := s.clock.NewTimer(time.Duration(max(next-before, 0)) * s.unit)
		if s.redisNow() == before || tries == 2 {
			return timer, timer.Chan()
		}
		timer.Stop()
	}
}

// readLoop follows the event stream from lastID, publishing into the local hub, waking
// the dispatcher when a key may have become free and the expirer when a deadline was
// set, and telling the Observer of the transitions this replica applied.
func (s *Store) readLoop(lastID string) {
	defer s.wg.Done()
	var retry backoff
	stream := s.stream
	for !s.lost.Load() {
		// A deadline past the XREAD's own, so that a paused Redis does not hold the
		// reader for ever.
		ctx, cancel := context.WithTimeout(s.ctx, streamBlock+ioTimeout)
		res, err := s.rdb.Do(ctx, s.rdb.B().Xread().Count(streamBatch).Block(streamBlock.Milliseconds()).
			Streams().Key(stream).Id(lastID).Build()).AsXRead()
		cancel()
		if s.ctx.Err() != nil {
			return
		}
		if rueidis.IsRedisNil(err) {
			continue
		}
		if err != nil {
			if s.lost.Load() || !retry.sleep(s.ctx) {
				return
			}
			continue
		}
		retry.reset()
		freed, read := false, 0
		for _, entries := range res {
			read += len(entries)
			for _, msg := range entries {
				lastID = msg.ID
				ev, ok := s.parseEvent(msg)
				if !ok {
					continue
				}
				s.hub.Publish(ev)
				switch ev.Type {
				case keystore.EventGenerated, keystore.EventUnblocked, keystore.EventReleased:
					freed = true
				}
				if d, ok := field(msg, "d"); ok {
					s.wakeBy(d)
				}
				if by := msg.FieldValues["by"]; by == s.replica {
					applied, okA := field(msg, "ap")
					deadline, okD := field(msg, "at")
					if okA && okD {
						lateness := time.Duration(applied-deadline) * s.unit
						s.opts.Observer.Expired(ev.Type, lateness)
					}
				}
			}
		}
		s.pmu.Lock()
		close(s.progress)
		s.progress = make(chan struct{})
		s.pmu.Unlock()
		if freed && s.waiters.Len() > 0 {
			s.poke()
		}
		if read < streamBatch && !s.coalesce() {
			return
		}
	}
}

// coalesce lets events gather in the stream for streamCoalesce before the next XREAD,
// so that under load one read takes many events instead of one read per event (and
// Redis does not wake the blocked reader at every XADD). It reports false if the store
// closed meanwhile.
func (s *Store) coalesce() bool {
	t := time.NewTimer(streamCoalesce)
	defer t.Stop()
	select {
	case <-t.C:
		return true
	case <-s.ctx.Done():
		return false
	}
}

func field(msg rueidis.XRangeEntry, name string) (int64, bool) {
	n, err := strconv.ParseInt(msg.FieldValues[name], 10, 64)
	return n, err == nil
}

// parseEvent decodes a stream entry "<seq>-0" {t, k, at, …}.
func (s *Store) parseEvent(msg rueidis.XRangeEntry) (keystore.Event, bool) {
	seqText, _, _ := strings.Cut(msg.ID, "-")
	seq, err := strconv.ParseInt(seqText, 10, 64)
	if err != nil {
		return keystore.Event{}, false
	}
	typ := msg.FieldValues["t"]
	n, okN := field(msg, "k")
	when, okAt := field(msg, "at")
	if !okN || !okAt || !keystore.EventType(typ).Valid() {
		return keystore.Event{}, false
	}
	return keystore.Event{Seq: seq, Type: keystore.EventType(typ), KeyID: s.ids.KeyID(uint64(n)), At: s.at(when)}, true
}

func (s *Store) poke() {
	select {
	case s.serve <- struct{}{}:
	default:
	}
}

// serveLoop is the dispatcher: woken by an event that may have freed a key (from any
// replica), a waiter whose own try found no key, or fallbackTick, it runs the acquire
// script for the oldest waiter of this replica until a try finds no key or the oldest
// is a waiter whose own try is under way (its Acquire wakes the dispatcher after it).
func (s *Store) serveLoop() {
	defer s.wg.Done()
	tick := time.NewTicker(fallbackTick)
	defer tick.Stop()
	for {
		select {
		case <-s.serve:
		case <-tick.C:
		case <-s.ctx.Done():
			return // the Pool answers its waiters as it closes
		}
		for s.ctx.Err() == nil && s.waiters.Len() > 0 {
			w := s.waiters.Take()
			if w == nil {
				break
			}
			rec, err := s.acquireOnce(s.ctx, w.TTL, 0)
			if err != nil {
				s.waiters.Return(w) // none free, or Redis is away: the next wake-up tries again
				break
			}
			s.waiters.Serve(w, rec)
		}
	}
}
