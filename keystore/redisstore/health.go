package redisstore

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/redis/rueidis"

	"github.com/keypool/keypool/keystore"
)

// healthEvery is how often the watcher reads Redis's INFO: how long, at most, the
// store takes to notice that Redis may evict keys or is out of memory, and that it is
// well again. (A request that Redis refuses as out of memory has it look at once.)
const healthEvery = 5 * time.Second

// Redis's health, as this replica sees it. The watcher (watchLoop) reads INFO memory
// at start and every healthEvery, and is the one home of the two reasons to refuse
// changes:
//
//   - evicting: maxmemory-policy is not noeviction, so Redis may evict any of the
//     pools' keys (a counter, a key, a lease) and the pools would go wrong
//     silently;
//   - full: Redis is out of memory (used_memory beyond maxmemory, with noeviction) and
//     refuses writes.
//
// While either holds, every change is refused at once with EUNAVAILABLE naming the
// reason, and Ready fails with it; reads that change nothing (Get, Stats, List, Pools)
// still answer, dry while Redis is full (they write nothing). INFO rather than CONFIG
// GET: managed Redis services often disable CONFIG. Each state is logged once as it
// begins (error) and once as it ends (info, with how long it lasted), and so is an
// outage (warn, then info).

// memoryHealth reads INFO memory's text and returns the reasons to refuse changes, ""
// for none.
func memoryHealth(info string) (evicting, full string) {
	fields := map[string]string{}
	for line := range strings.Lines(info) {
		if k, v, ok := strings.Cut(strings.TrimSpace(line), ":"); ok {
			fields[k] = v
		}
	}
	if policy := fields["maxmemory_policy"]; policy != "" && policy != "noeviction" {
		evicting = fmt.Sprintf("Redis's maxmemory-policy is %s, not noeviction: Redis may evict the pools' keys, "+
			"so changes are refused until it is set to noeviction", policy)
	}
	limit, _ := strconv.ParseInt(fields["maxmemory"], 10, 64)
	used, _ := strconv.ParseInt(fields["used_memory"], 10, 64)
	notCounted, _ := strconv.ParseInt(fields["mem_not_counted_for_evict"], 10, 64)
	if limit > 0 && used-notCounted > limit {
		full = fmt.Sprintf("Redis is out of memory (used_memory %d bytes, maxmemory %d) and refuses writes", used-notCounted, limit)
	}
	return evicting, full
}

// fullReason is why changes fail while Redis is out of memory.
func (s *Store) fullReason() string {
	if r := s.full.Load(); r != nil {
		return *r
	}
	return "Redis is out of memory (maxmemory reached) and refuses writes"
}

// refusingChanges fails while Redis may evict keys or is out of memory.
func (s *Store) refusingChanges() error {
	if r := s.evicting.Load(); r != nil {
		return keystore.Errorf(keystore.EUNAVAILABLE, "%s; nothing was changed", *r)
	}
	if r := s.full.Load(); r != nil {
		return keystore.Errorf(keystore.EUNAVAILABLE, "%s; nothing was changed", *r)
	}
	return nil
}

// outOfMemory reports whether Redis refused a command for want of memory.
func outOfMemory(err error) bool {
	rerr := (*rueidis.RedisError)(nil)
	return errors.As(err, &rerr) && strings.HasPrefix(rerr.Error(), "OOM")
}

// checkHealthSoon has the watcher read INFO now.
func (s *Store) checkHealthSoon() {
	select {
	case s.healthKick <- struct{}{}:
	default:
	}
}

// watchLoop reads Redis's health every healthEvery, or at once when asked.
func (s *Store) watchLoop() {
	defer s.wg.Done()
	tick := time.NewTicker(s.healthEvery)
	defer tick.Stop()
	s.beat()
	for {
		select {
		case <-tick.C:
			s.beat()
		case <-s.healthKick:
		case <-s.ctx.Done():
			return
		}
		s.checkHealth(s.ctx)
	}
}

// checkHealth reads INFO memory once (of every node of a cluster) and updates the
// reasons to refuse changes. A Redis that refuses INFO (renamed or disabled) cannot be
// checked: that is logged once, and nothing is refused for it.
func (s *Store) checkHealth(ctx context.Context) {
	ctx, cancel := context.WithTimeout(ctx, readyTimeout)
	defer cancel()
	started := time.Now()
	var evicting, full string
	nodes := map[string]rueidis.Client{"": s.rdb}
	if s.cluster {
		nodes = s.rdb.Nodes()
	}
	for addr, node := range nodes {
		e, f, ok := s.nodeHealth(ctx, node)
		if !ok {
			return
		}
		if addr != "" {
			e, f = prefixed(addr, e), prefixed(addr, f)
		}
		evicting, full = cmp.Or(evicting, e), cmp.Or(full, f)
	}
	s.answered(started)
	s.setHealth(evicting, full)
}

func prefixed(addr, reason string) string {
	if reason == "" {
		return ""
	}
	return "node " + addr + ": " + reason
}

// nodeHealth reads one node's INFO memory; false if it could not, and the reasons are
// left as they were.
func (s *Store) nodeHealth(ctx context.Context, node rueidis.Client) (evicting, full string, ok bool) {
	info, err := node.Do(ctx, node.B().Info().Section("memory").Build()).ToString()
	if err != nil {
		if rerr := (*rueidis.RedisError)(nil); errors.As(err, &rerr) {
			if !s.infoRefused.Swap(true) {
				s.log.Warn("redis store: Redis refuses INFO, so its eviction policy and memory are not checked", "err", err)
			}
			return "", "", true
		}
		if s.ctx.Err() == nil {
			s.wentDown(err)
		}
		return "", "", false
	}
	evicting, full = memoryHealth(info)
	return evicting, full, true
}

// setHealth records the reasons to refuse changes, logging each as it begins and ends.
func (s *Store) setHealth(evicting, full string) {
	s.hmu.Lock()
	defer s.hmu.Unlock()
	for _, st := range []struct {
		reason string
		cur    *atomicReason
		since  *time.Time
	}{{evicting, &s.evicting, &s.evictingSince}, {full, &s.full, &s.fullSince}} {
		was := st.cur.Load()
		switch {
		case st.reason != "" && was == nil:
			*st.since = time.Now()
			s.log.Error("redis store: refusing changes", "reason", st.reason)
		case st.reason == "" && was != nil:
			s.log.Info("redis store: serving changes again", "reason", *was, "lasted", time.Since(*st.since).Round(time.Millisecond))
		}
		if st.reason == "" {
			st.cur.Store(nil)
		} else {
			st.cur.Store(&st.reason)
		}
	}
}

// unreachable notes an attempt that failed for want of Redis (not the caller's own
// deadline, nor a refusal Redis answered).
func (s *Store) unreachable(err error) {
	if s.ctx.Err() != nil || errors.Is(err, context.Canceled) || errors.Is(err, context.DeadlineExceeded) {
		return
	}
	if rerr := (*rueidis.RedisError)(nil); errors.As(err, &rerr) {
		return
	}
	s.wentDown(err)
}

// wentDown logs the start of an outage, once.
func (s *Store) wentDown(err error) {
	if s.downSince.Load() != 0 {
		return
	}
	s.hmu.Lock()
	defer s.hmu.Unlock()
	if s.downSince.Load() == 0 {
		s.downSince.Store(time.Now().UnixNano())
		s.log.Warn("redis store: Redis cannot be reached", "err", err)
	}
}

// answered logs the end of an outage, once, for an answer to a call made at started.
// A call made before the outage began proves nothing of now: Redis answered it just
// before it went (a killed server's last replies), and the outage goes on.
func (s *Store) answered(started time.Time) {
	since := s.downSince.Load()
	if since == 0 || started.UnixNano() < since {
		return
	}
	s.hmu.Lock()
	defer s.hmu.Unlock()
	if s.downSince.CompareAndSwap(since, 0) {
		s.log.Info("redis store: Redis answers again", "outage", time.Since(time.Unix(0, since)).Round(time.Millisecond))
	}
}
