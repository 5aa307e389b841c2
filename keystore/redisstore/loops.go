package redisstore

import (
	"context"
	"crypto/rand"
	"encoding/binary"
	"errors"
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

// wakeBy tells the expirer of a deadline (script time) of pool p that it may not know
// yet; math.MinInt64 asks it to run the pool at once.
func (s *Store) wakeBy(p *rpool, deadline int64) {
	s.mu.Lock()
	p.heard = min(p.heard, deadline)
	p.due = min(p.due, deadline)
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

// expireLoop applies due transitions, pool by pool, in batches of expiryBatch, then
// sleeps until the earliest deadline it knows of in any pool, a kick for an earlier
// one, or the next pass over every pool. It runs the pools whose earliest deadline is
// due, and every pool once each fallbackTick: a deadline set by another replica that
// emits no event (a Renew that shortens a lease) is applied within it even if that
// replica has gone. It has one timer of the store's clock at a time, whatever the
// number of pools.
func (s *Store) expireLoop() {
	defer s.wg.Done()
	var retry backoff
	var lastAll time.Time // real time
	for {
		all := time.Since(lastAll) >= fallbackTick
		if all {
			lastAll = time.Now()
		}
		now := s.redisNow()
		var due []*rpool
		s.mu.Lock()
		for _, p := range s.reg.all() {
			if all || p.due <= now {
				due = append(due, p)
				p.heard = math.MaxInt64
			}
		}
		s.mu.Unlock()
		results := make([][]int64, len(due))
		errs := make([]error, len(due))
		s.each(due, func(i int, p *rpool) {
			results[i], _, errs[i] = s.run(s.ctx, p, s.scripts.expire, readOnly, expiryBatch, s.repliesTTL)
		})
		failed, busy := false, false
		s.mu.Lock()
		for i, p := range due {
			if errs[i] != nil {
				failed = true
				p.due = math.MinInt64 // try it again
				continue
			}
			applied, next := results[i][2], results[i][3]
			if next < 0 {
				next = math.MaxInt64
			}
			if applied == expiryBatch {
				busy = true // more may be due: let requests in, come straight back
				next = math.MinInt64
			}
			p.due = min(next, p.heard) // a deadline set while the script ran may be earlier
		}
		s.wakeAt = math.MaxInt64
		for _, p := range s.reg.all() {
			s.wakeAt = min(s.wakeAt, p.due)
		}
		s.mu.Unlock()
		if failed {
			if s.lost.Load() || !retry.sleep(s.ctx) {
				return
			}
			continue
		}
		retry.reset()
		if busy {
			runtime.Gosched()
			if s.ctx.Err() != nil {
				return
			}
			continue
		}
		if !s.sleepUntilDue(fallbackTick - time.Since(lastAll)) {
			return
		}
	}
}

// sleepUntilDue waits for the deadline in s.wakeAt, re-arming when a kick brings it
// forward, or for at most the real time d; false if the store closed.
func (s *Store) sleepUntilDue(d time.Duration) bool {
	fallback := time.NewTimer(max(d, 0))
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

// timerUntil returns a timer of the store's clock that fires at script time next, or
// nil and a nil channel for MaxInt64. It re-arms (a few times at most) while a fake
// clock moves between reading it and arming the timer: a timer armed for the earlier
// reading would fire after next.
func (s *Store) timerUntil(next int64) (clockwork.Timer, <-chan time.Time) {
	if next == math.MaxInt64 {
		return nil, nil
	}
	for tries := 0; ; tries++ {
		before := s.redisNow()
		var d time.Duration
		if next > before { // never next-before: next may be math.MinInt64 (at once)
			d = time.Duration(next-before) * s.unit
		}
		timer := s.clock.NewTimer(d)
		if s.redisNow() == before || tries == 2 {
			return timer, timer.Chan()
		}
		timer.Stop()
	}
}

// readLoop follows the namespace's stream of pools made, from the last pool start
// read, and the event stream of every pool it knows, from lastIDs (from the start for
// a pool learned later), all in one XREAD. It learns the pools made, publishes each
// pool's events into the pool's hub, wakes the dispatcher when a key of a pool with
// waiters may have become free and the expirer when a deadline was set, and tells the
// Observer of the transitions this replica applied.
func (s *Store) readLoop(lastIDs map[*rpool]string) {
	defer s.wg.Done()
	var retry backoff
	s.reg.mu.RLock()
	madeID := strconv.FormatUint(s.reg.last, 10) + "-0"
	s.reg.mu.RUnlock()
	byStream := map[string]*rpool{}
	for !s.lost.Load() {
		keys, ids := []string{s.nsPrefix + "made"}, []string{madeID}
		for _, p := range s.reg.all() {
			if _, ok := lastIDs[p]; !ok {
				lastIDs[p] = "0-0"
			}
			byStream[p.stream] = p
			keys, ids = append(keys, p.stream), append(ids, lastIDs[p])
		}
		res, err := s.readStreams(keys, ids)
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
		read := 0
		if made := res[keys[0]]; len(made) > 0 {
			read += len(made)
			if madeID, err = s.learnMade(made, madeID); err != nil && (s.lost.Load() || !retry.sleep(s.ctx)) {
				return
			}
		}
		for stream, entries := range res {
			p := byStream[stream]
			if p == nil {
				continue
			}
			read += len(entries)
			freed := false
			for _, msg := range entries {
				lastIDs[p] = msg.ID
				ev, ok := s.parseEvent(p, msg)
				if !ok {
					continue
				}
				p.lane.Events.Publish(ev)
				switch ev.Type {
				case keystore.EventGenerated, keystore.EventImported, keystore.EventUnblocked, keystore.EventReleased,
					keystore.EventRecovered, keystore.EventRestored:
					freed = true
				}
				if d, ok := field(msg, "d"); ok {
					s.wakeBy(p, d)
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
			if freed && p.lane.Waiters.Len() > 0 {
				s.poke(p.lane)
			}
		}
		s.pmu.Lock()
		close(s.progress)
		s.progress = make(chan struct{})
		s.pmu.Unlock()
		if read < streamBatch && !s.coalesce() {
			return
		}
	}
}

// clusterPoll is how long the reader waits between rounds of reads that found nothing,
// on a Redis Cluster.
const clusterPoll = 50 * time.Millisecond

// readStreams reads the streams keys from ids on: on one Redis, in one XREAD that
// waits up to streamBlock for an event; on a cluster, which refuses one XREAD over
// keys of several hash tags, in one XREAD per stream (pipelined, each routed to its
// shard), which do not wait: a round that found nothing waits clusterPoll before
// the next. Redis's nil when nothing came.
func (s *Store) readStreams(keys, ids []string) (map[string][]rueidis.XRangeEntry, error) {
	if !s.cluster {
		// A deadline past the XREAD's own, so that a paused Redis does not hold the
		// reader for ever.
		ctx, cancel := context.WithTimeout(s.ctx, streamBlock+ioTimeout)
		defer cancel()
		return s.rdb.Do(ctx, s.rdb.B().Xread().Count(streamBatch).Block(streamBlock.Milliseconds()).
			Streams().Key(keys...).Id(ids...).Build()).AsXRead()
	}
	ctx, cancel := context.WithTimeout(s.ctx, ioTimeout)
	defer cancel()
	cmds := make(rueidis.Commands, len(keys))
	for i := range keys {
		cmds[i] = s.rdb.B().Xread().Count(streamBatch).Streams().Key(keys[i]).Id(ids[i]).Build()
	}
	all := map[string][]rueidis.XRangeEntry{}
	for _, r := range s.rdb.DoMulti(ctx, cmds...) {
		res, err := r.AsXRead()
		if rueidis.IsRedisNil(err) {
			continue
		}
		if err != nil {
			return nil, err
		}
		for k, v := range res {
			all[k] = v
		}
	}
	if len(all) == 0 {
		t := time.NewTimer(clusterPoll)
		defer t.Stop()
		select {
		case <-t.C:
		case <-s.ctx.Done():
		}
		return nil, rueidis.Nil
	}
	return all, nil
}

// learnMade learns the pools of entries of the stream of pools made, and returns the
// id to read that stream on from: that of the last pool learned.
func (s *Store) learnMade(entries []rueidis.XRangeEntry, lastID string) (string, error) {
	for _, msg := range entries {
		index, err := strconv.ParseUint(strings.TrimSuffix(msg.ID, "-0"), 10, 64)
		if err != nil {
			lastID = msg.ID // not a pool: skip it
			continue
		}
		if _, err := s.learn(s.ctx, msg.FieldValues["p"], index); err != nil && !errors.Is(err, errTagTaken) {
			return lastID, err
		}
		lastID = msg.ID
	}
	return lastID, nil
}

// coalesce lets events gather in the streams for streamCoalesce before the next XREAD,
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

// parseEvent decodes an entry "<seq>-0" {t, k, at, …} of a pool's stream.
func (s *Store) parseEvent(p *rpool, msg rueidis.XRangeEntry) (keystore.Event, bool) {
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
	return keystore.Event{Seq: seq, Type: keystore.EventType(typ), KeyID: s.ids.KeyID(p.keyN(n)), At: s.at(when),
		Holder: msg.FieldValues["h"]}, true
}

// poke asks the dispatcher to serve the waiters of lane.
func (s *Store) poke(lane *keystore.Lane) {
	s.smu.Lock()
	s.toServe[lane] = struct{}{}
	s.smu.Unlock()
	select {
	case s.serve <- struct{}{}:
	default:
	}
}

// serveLoop is the dispatcher: woken for a pool by an event that may have freed one of
// its keys (from any replica) or by a waiter whose own try found no key, and for every
// pool with waiters at fallbackTick, it runs the acquire script for the oldest waiter
// of each such pool on this replica until a try finds no key or the oldest is a waiter
// whose own try is under way (its Acquire wakes the dispatcher after it).
func (s *Store) serveLoop() {
	defer s.wg.Done()
	tick := time.NewTicker(fallbackTick)
	defer tick.Stop()
	for {
		var lanes []*keystore.Lane
		select {
		case <-s.serve:
			s.smu.Lock()
			for lane := range s.toServe {
				lanes = append(lanes, lane)
			}
			clear(s.toServe)
			s.smu.Unlock()
		case <-tick.C:
			lanes = s.everyLane()
		case <-s.ctx.Done():
			return // the Pool answers its waiters as it closes
		}
		for _, lane := range lanes {
			s.serveLane(lane)
		}
	}
}

// serveLane serves the waiters of one lane while keys of its pool are free.
func (s *Store) serveLane(lane *keystore.Lane) {
	for s.ctx.Err() == nil && lane.Waiters.Len() > 0 {
		w := lane.Waiters.Take()
		if w == nil {
			return
		}
		rec, err := s.acquireOnce(s.ctx, lane.Name, w.TTL, w.Holder, 0)
		if err != nil {
			lane.Waiters.Return(w) // none free, or Redis is away: the next wake-up tries again
			return
		}
		lane.Waiters.Serve(w, rec)
	}
}
