package redisstore

import (
	"context"
	"errors"
	"fmt"
	"net"
	"strconv"
	"strings"
	"time"

	"github.com/redis/rueidis"

	"github.com/keypool/keypool/keystore"
)

// How a request may be sent again.
type requestKind int

const (
	// readOnly requests (Get, Stats, the expirer's batches) change nothing that a
	// second run would change again: they take no slot.
	readOnly requestKind = iota
	// mutation requests take a slot, so that a second run replays the first's reply.
	// When the outcome of one stays unknown, the resolver settles it: it either ran or
	// never will.
	mutation
	// acquisition is a mutation that leases a key: when its outcome stays unknown, the
	// resolver also frees the key it may have leased.
	acquisition
)

// request is one request's slot in its replica's replies hash and its generation.
type request struct {
	slot int
	gen  uint64
}

// unsettled is a request of unknown outcome, waiting for the resolver.
type unsettled struct {
	request
	pool *rpool
	kind requestKind
	done chan struct{} // closed when settled
	at   time.Time     // when, set before done is closed
}

// unknownOutcome is the cause of an EUNAVAILABLE answer to a request that may have
// run. Settled is closed once the store knows it either ran or never will (SettledAt
// tells when): tests bound the request's effect by it.
type unknownOutcome struct {
	err error
	u   *unsettled
}

func (e *unknownOutcome) Error() string            { return e.err.Error() }
func (e *unknownOutcome) Unwrap() error            { return e.err }
func (e *unknownOutcome) Settled() <-chan struct{} { return e.u.done }
func (e *unknownOutcome) SettledAt() time.Time     { <-e.u.done; return e.u.at }

// begin takes a free slot for a new request.
func (s *Store) begin(ctx context.Context) (request, error) {
	select {
	case slot := <-s.slots:
		return request{slot: slot, gen: s.gen.Add(1)}, nil
	default:
	}
	select {
	case slot := <-s.slots:
		return request{slot: slot, gen: s.gen.Add(1)}, nil
	case <-ctx.Done():
		return request{}, ctx.Err()
	case <-s.ctx.Done():
		return request{}, s.stopping()
	}
}

// end frees r's slot: a copy of r still on its way to Redis finds a later generation
// there once the slot is reused, and does nothing.
func (s *Store) end(r request) { s.slots <- r.slot }

// args returns the arguments of a script call on pool p: the common ones, then the
// script's.
func (s *Store) args(p *rpool, r *request, own ...any) []string {
	all := make([]string, 0, 7+len(own))
	all = append(all, p.prefix, s.now(), s.retention, s.replica, p.id, "", "0")
	if r != nil {
		all[5], all[6] = strconv.Itoa(r.slot), strconv.FormatUint(r.gen, 10)
	}
	for _, v := range own {
		all = append(all, arg(v))
	}
	return all
}

// arg formats a script argument.
func arg(v any) string {
	switch v := v.(type) {
	case string:
		return v
	case int:
		return strconv.Itoa(v)
	case int64:
		return strconv.FormatInt(v, 10)
	case uint64:
		return strconv.FormatUint(v, 10)
	}
	panic(fmt.Sprintf("redis store: a script argument of type %T", v))
}

// run runs a script on pool p as a request of kind and returns its reply: its
// integers and its strings, which follow them. It maps the status codes that every
// script shares. A request whose reply is lost is sent again (send), which is safe: a
// mutation replays its recorded reply. If it still fails the caller gets EUNAVAILABLE,
// telling whether the request may have been applied.
//
// A change is refused at once while Redis may evict keys or is out of memory (see
// health.go). A read that can run dry does so while Redis is out of memory, or when
// Redis refuses it as such: it writes nothing.
func (s *Store) run(ctx context.Context, p *rpool, script *script, kind requestKind, own ...any) ([]int64, []string, error) {
	if err := s.usable(); err != nil {
		return nil, nil, err
	}
	if kind != readOnly {
		if err := s.refusingChanges(); err != nil {
			return nil, nil, err
		}
	}
	var req *request
	if kind != readOnly && !s.noSlots {
		r, err := s.begin(ctx)
		if err != nil {
			return nil, nil, s.unavailable(err, false, kind)
		}
		req = &r
	}
	args := s.args(p, req, own...)
	dry := script.dry && s.full.Load() != nil
	if dry {
		args[6] = "dry"
	}
	msgs, sent, err := s.send(ctx, s.lib.fn(script, dry), p.keys, args, true, s.minReplicas > 0)
	if err != nil && script.dry && !dry && outOfMemory(err) {
		args[6] = "dry"
		msgs, sent, err = s.send(ctx, s.lib.fn(script, true), p.keys, args, true, s.minReplicas > 0)
	}
	if req != nil {
		if err != nil && sent && failure(err) != failedScript {
			err = &unknownOutcome{err: err, u: s.resolveLater(*req, p, kind)}
		} else {
			s.end(*req)
		}
	}
	if err != nil {
		return nil, nil, s.unavailable(err, sent, kind)
	}
	res, strs, err := parseReply(msgs)
	if err != nil {
		return nil, nil, err
	}
	res, err = s.status(res)
	return res, strs, err
}

// parseReply splits a script's reply into its integers and the strings after them.
func parseReply(msgs []rueidis.RedisMessage) ([]int64, []string, error) {
	ints := make([]int64, 0, len(msgs))
	var strs []string
	for _, m := range msgs {
		if m.IsInt64() && strs == nil {
			n, _ := m.AsInt64()
			ints = append(ints, n)
			continue
		}
		text, err := m.ToString()
		if err != nil {
			return nil, nil, fmt.Errorf("redis store: a script reply holds %v", m)
		}
		strs = append(strs, text)
	}
	return ints, strs, nil
}

// status checks a pool script's reply for the codes every script shares.
func (s *Store) status(res []int64) ([]int64, error) {
	if len(res) < 2 {
		return nil, fmt.Errorf("redis store: short script reply %v", res)
	}
	switch res[0] {
	case statusReset:
		s.markLost()
		return nil, s.usable()
	case statusStale:
		return nil, fmt.Errorf("redis store: a request found a later generation in its slot")
	}
	s.noteNow(res[1])
	return res, nil
}

// runNSMessages runs a namespace script, which changes nothing that a second run would
// change again, with the namespace's id and own, and returns its reply.
func (s *Store) runNSMessages(ctx context.Context, script *script, own ...any) ([]rueidis.RedisMessage, error) {
	if err := s.usable(); err != nil {
		return nil, err
	}
	args := append(make([]string, 0, 2+len(own)), s.nsPrefix, s.nsID)
	for _, v := range own {
		args = append(args, arg(v))
	}
	msgs, sent, err := s.send(ctx, s.fn(script), s.nsKeys, args, true, s.minReplicas > 0)
	if err != nil {
		return nil, s.unavailable(err, sent, readOnly)
	}
	return s.nsStatus(msgs)
}

// runNS is runNSMessages for a reply of integers only.
func (s *Store) runNS(ctx context.Context, script *script, own ...any) ([]int64, error) {
	msgs, err := s.runNSMessages(ctx, script, own...)
	if err != nil {
		return nil, err
	}
	res, _, err := parseReply(msgs)
	return res, err
}

// nsStatus checks a namespace script's reply for the namespace's loss.
func (s *Store) nsStatus(msgs []rueidis.RedisMessage) ([]rueidis.RedisMessage, error) {
	if len(msgs) == 0 {
		return nil, fmt.Errorf("redis store: empty script reply")
	}
	if status, err := msgs[0].AsInt64(); err == nil && status == statusReset {
		s.markLost()
		return nil, s.usable()
	}
	return msgs, nil
}

// fn is the name of script's function in the Store's library.
func (s *Store) fn(script *script) string { return s.lib.fn(script, false) }

// send runs function fn of the Store's library, sending it again while it fails for
// want of Redis (for up to retryFor, or until ctx ends, when retry is set) and reports
// whether any attempt may have reached Redis and run. A script that fails at run time
// is not sent again. With confirm, a run counts only once Options.MinReplicas replicas
// have it (exec).
func (s *Store) send(ctx context.Context, fn string, keys, args []string, retry, confirm bool) (res []rueidis.RedisMessage, sent bool, err error) {
	deadline := time.Now().Add(retryFor)
	pause := retryMinBackoff
	for {
		if ctx.Err() != nil {
			return nil, sent, ctx.Err()
		}
		started := time.Now()
		res, err = s.exec(ctx, fn, keys, args, confirm)
		if err == nil {
			s.answered(started)
			return res, true, nil
		}
		switch failure(err) {
		case failedScript:
			return nil, true, fmt.Errorf("redis store: script failed: %w", err)
		case failedLost:
			sent = true
		}
		if outOfMemory(err) {
			// Redis refuses writes until memory is freed, which no retry within
			// retryFor is likely to see: answer now, and have the watcher look.
			s.checkHealthSoon()
			return nil, sent, err
		}
		s.unreachable(err)
		if !retry || s.ctx.Err() != nil || time.Now().Add(pause).After(deadline) {
			return nil, sent, err
		}
		t := time.NewTimer(pause)
		select {
		case <-t.C:
		case <-ctx.Done():
		case <-s.ctx.Done():
		}
		t.Stop()
		pause = min(2*pause, retryMaxBackoff)
	}
}

// errNotConfirmed: a script ran, but fewer replicas than WithMinReplicas asks for
// confirmed it within replicaWait. It may be lost in a failover, so it counts as a
// reply lost: sent again (a mutation replays its recorded reply, and waits again),
// then answered "may or may not have been applied".
var errNotConfirmed = errors.New("redis store: not confirmed by enough Redis replicas in time")

// replicaWait bounds one WAIT for the replicas.
const replicaWait = 500 * time.Millisecond

// exec runs function fn once, loading the library first where Redis does not have it
// (a Redis restarted empty, or a cluster shard added since).
func (s *Store) exec(ctx context.Context, fn string, keys, args []string, confirm bool) ([]rueidis.RedisMessage, error) {
	res, err := s.execLoaded(ctx, fn, keys, args, confirm)
	if functionMissing(err) {
		if err := s.loadLibrary(ctx); err != nil {
			return nil, err
		}
		res, err = s.execLoaded(ctx, fn, keys, args, confirm)
	}
	return res, err
}

// execLoaded runs function fn once. With confirm, it also waits (WAIT) until
// minReplicas replicas have everything the script wrote or read: on the same
// connection, the script, then a PUBLISH, which Redis propagates to its replicas
// whatever the script did (a read, or a replay of a recorded reply, writes nothing of
// its own, and Redis answers WAIT for a connection's own last propagated write), then
// the WAIT. The client sends WAIT, a blocking command, and the commands with it on a
// connection of their own, so no other caller's request comes between them.
func (s *Store) execLoaded(ctx context.Context, fn string, keys, args []string, confirm bool) ([]rueidis.RedisMessage, error) {
	c := s.rdb
	run := c.B().Fcall().Function(fn).Numkeys(int64(len(keys))).Key(keys...).Arg(args...).Build()
	if !confirm {
		return c.Do(ctx, run).ToArray()
	}
	// A bound of its own: WAIT sends the three on a dedicated connection, which the
	// client does not drop for silence as it does a pipelined one.
	ctx, cancel := context.WithTimeout(ctx, replicaWait+ioTimeout)
	defer cancel()
	res := c.DoMulti(ctx, run,
		c.B().Publish().Channel(s.nsPrefix+"confirm").Message("").Build(),
		c.B().Wait().Numreplicas(int64(s.minReplicas)).Timeout(replicaWait.Milliseconds()).Build())
	msgs, err := res[0].ToArray()
	if err != nil {
		return nil, err
	}
	n, err := res[2].AsInt64()
	if err != nil {
		if rerr := (*rueidis.RedisError)(nil); errors.As(err, &rerr) {
			return nil, fmt.Errorf("%w: %w", errNotConfirmed, err) // the script ran: never "not sent"
		}
		return nil, err
	}
	if n < int64(s.minReplicas) {
		return nil, errNotConfirmed
	}
	return msgs, nil
}

// functionMissing tells whether Redis refused a call for want of the function.
func functionMissing(err error) bool {
	rerr := (*rueidis.RedisError)(nil)
	return errors.As(err, &rerr) && strings.HasPrefix(strings.TrimPrefix(rerr.Error(), "ERR "), "Function not found")
}

// errLoad: the library could not be loaded, so nothing ran.
var errLoad = errors.New("redis store: cannot load the scripts' library")

// loadLibrary loads the Store's library into every primary Redis the client knows (a
// replica has its primary's; on a cluster, every shard needs it), replacing a library
// of the same name (the same text). A replica refuses it as read-only: that is fine.
func (s *Store) loadLibrary(ctx context.Context) error {
	loaded := false
	var first error
	for _, node := range s.rdb.Nodes() {
		err := node.Do(ctx, node.B().FunctionLoad().Replace().FunctionCode(s.lib.src).Build()).Error()
		switch rerr := (*rueidis.RedisError)(nil); {
		case err == nil:
			loaded = true
		case errors.As(err, &rerr) && strings.HasPrefix(rerr.Error(), "READONLY"):
		case first == nil:
			first = err
		}
	}
	if !loaded {
		if first == nil {
			first = errors.New("no primary Redis known")
		}
		return fmt.Errorf("%w: %w", errLoad, first)
	}
	return nil
}

// pruneLibraries deletes, best effort, the libraries of other keypool versions (whose
// text differs from this one's), so that Redis holds one per version running, not
// one per version ever run. A replica of another version still running loads its own
// again at its next call (exec).
func (s *Store) pruneLibraries(ctx context.Context) {
	for _, node := range s.rdb.Nodes() {
		libs, err := node.Do(ctx, node.B().FunctionList().Libraryname(libraryPrefix+"*").Build()).ToArray()
		if err != nil {
			continue
		}
		for _, lib := range libs {
			info, err := lib.AsMap()
			if err != nil {
				continue
			}
			m := info["library_name"]
			name, err := m.ToString()
			if err != nil || !strings.HasPrefix(name, libraryPrefix) || name == s.lib.name {
				continue
			}
			_ = node.Do(ctx, node.B().FunctionDelete().LibraryName(name).Build()).Error()
		}
	}
}

// How an attempt failed.
type failureKind int

const (
	// failedNotSent: the request never reached Redis, or Redis refused it before
	// running it (loading, read-only, busy, out of memory).
	failedNotSent failureKind = iota
	// failedLost: the connection failed or timed out after the request may have been
	// written: it may have run.
	failedLost
	// failedScript: the script ran and failed (a bug): it may have done part of its work.
	failedScript
)

// refusals are the error replies with which Redis refuses a command before running
// it: sending it again later is safe and may succeed.
var refusals = []string{"LOADING", "BUSY", "READONLY", "MASTERDOWN", "TRYAGAIN", "OOM", "NOREPLICAS", "CLUSTERDOWN"}

// failure tells how an attempt failed. Only what is certain counts as not sent: an
// error reply of Redis that refuses before running, or a connection that could not be
// made. Any other failure (a connection that broke or timed out with the request
// written, the client closing under it) may have let the request run.
func failure(err error) failureKind {
	if errors.Is(err, errNotConfirmed) {
		return failedLost
	}
	if errors.Is(err, errLoad) || functionMissing(err) {
		return failedNotSent
	}
	if rerr := (*rueidis.RedisError)(nil); errors.As(err, &rerr) {
		msg := rerr.Error()
		for _, prefix := range refusals {
			if strings.HasPrefix(msg, prefix) {
				return failedNotSent
			}
		}
		return failedScript
	}
	var op *net.OpError
	if errors.As(err, &op) && op.Op == "dial" {
		return failedNotSent
	}
	return failedLost
}

// unavailable words a request's failure for clients.
func (s *Store) unavailable(err error, sent bool, kind requestKind) error {
	var kerr *keystore.Error
	if errors.As(err, &kerr) {
		return err
	}
	if failure(err) == failedScript {
		return err // a bug: an internal error
	}
	msg := "the key store cannot be reached; nothing was changed"
	switch {
	case outOfMemory(err) && (!sent || kind == readOnly):
		msg = s.fullReason() + "; nothing was changed"
	case !sent || kind == readOnly:
	case kind == acquisition:
		msg = "the key store did not answer; no key is leased to this request (if it was leased, it is freed as soon as the store answers)"
	default:
		msg = "the key store did not answer: the request may or may not have been applied; read the key before repeating it"
	}
	return &keystore.Error{Code: keystore.EUNAVAILABLE, Message: msg, Err: err}
}

// usable fails once the store's namespace is lost. (A closed store fails on its
// closed client.)
func (s *Store) usable() error {
	if s.lost.Load() {
		return keystore.Errorf(keystore.EUNAVAILABLE,
			"the pools in Redis are not the ones this replica joined (Redis lost its data, or the namespace was replaced): restart this replica")
	}
	return nil
}

// markLost stops the replica for good: its namespace is gone from Redis. Subscriptions
// end, since the events of another namespace's pools must never reach them; waiting
// Acquires are no longer served.
func (s *Store) markLost() {
	if s.lost.CompareAndSwap(false, true) {
		for _, lane := range s.everyLane() {
			lane.Events.Close()
		}
	}
}

// resolveLater hands a request of unknown outcome to the resolver; its slot stays
// taken until then, so that its recorded reply (if it ran) is still there.
func (s *Store) resolveLater(r request, p *rpool, kind requestKind) *unsettled {
	u := &unsettled{request: r, pool: p, kind: kind, done: make(chan struct{})}
	s.umu.Lock()
	s.unresolved = append(s.unresolved, u)
	s.umu.Unlock()
	select {
	case s.resolve <- struct{}{}:
	default:
	}
	return u
}

// resolveLoop settles each request of unknown outcome as soon as Redis answers: it
// either ran, or it never will (its slot records it as abandoned); an Acquire that ran
// has its key freed. Then its slot is free.
func (s *Store) resolveLoop() {
	defer s.wg.Done()
	var retry backoff
	for {
		select {
		case <-s.resolve:
		case <-s.ctx.Done():
			return
		}
		for s.ctx.Err() == nil && !s.lost.Load() {
			s.umu.Lock()
			if len(s.unresolved) == 0 {
				s.umu.Unlock()
				break
			}
			r := s.unresolved[0]
			s.umu.Unlock()
			start := time.Now()
			acquire := 0
			if r.kind == acquisition {
				acquire = 1
			}
			msgs, _, err := s.send(s.ctx, s.fn(s.scripts.resolve), r.pool.keys, s.args(r.pool, nil, r.slot, r.gen, acquire), true, s.minReplicas > 0)
			var res []int64
			if err == nil {
				if res, _, err = parseReply(msgs); err == nil {
					res, err = s.status(res)
				}
			}
			if err != nil {
				if !retry.sleep(s.ctx) {
					return
				}
				continue
			}
			retry.reset()
			if len(res) == 4 && s.resolved != nil {
				s.resolved(r.pool.keyN(res[2]), res[3], start, time.Now())
			}
			s.umu.Lock()
			s.unresolved = s.unresolved[1:]
			s.umu.Unlock()
			r.at = time.Now()
			close(r.done)
			s.end(r.request)
		}
	}
}

// pending returns how many requests of unknown outcome wait for the resolver.
func (s *Store) pending() int {
	s.umu.Lock()
	defer s.umu.Unlock()
	return len(s.unresolved)
}
