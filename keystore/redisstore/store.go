// Package redisstore is a keystore.Store kept in Redis, so that several replicas of the
// server share one pool.
//
// Each Store method is one Lua script, atomic inside Redis and O(1) or O(log n): a SET
// of AVAILABLE key numbers for uniform random picks, sorted sets for the lease and
// keep-alive deadlines, a HASH per key, INCR counters behind key ids, fences and event
// seqs, and a STREAM of events (see scripts.go for the layout). Deadlines come from
// Redis's own TIME, one clock for every replica, in whole microseconds; with a
// *clockwork.FakeClock (tests) the store passes the fake clock's reading to the scripts
// instead, in nanoseconds since the pool was created.
//
// Each replica runs four goroutines: an expirer that sleeps until the earliest
// deadline and applies due transitions in bounded batches (any replica may; the
// scripts pop each due entry as they apply it, so none is applied twice); a reader
// that follows the event stream with XREAD BLOCK, letting events gather for
// streamCoalesce between reads, and publishes into a local keystore.Hub, for
// subscribers and for waking waiters; a dispatcher that serves this replica's waiting
// Acquires, first come first served; and a resolver that settles the requests whose
// outcome the replica never learned (see below).
//
// The client is rueidis, which pipelines the requests of concurrent callers on one
// connection: under load one write and one read carry many scripts, for this process
// and for Redis, instead of a round trip of system calls each.
//
// Faults. A request that changes the pool runs at most once however often it is sent
// (see scripts.go: a slot and generation per request, its reply recorded with its
// effects), so the store itself retries a request whose reply was lost, for up to
// retryFor, and the retry answers what the first run did; the client never retries on
// its own. When the outcome stays unknown the caller gets EUNAVAILABLE saying so, and
// the request is settled in the background as soon as Redis answers again: it either
// ran, or it never will; an Acquire that ran has its key (whose token nobody has)
// freed. Every script refuses a pool other than the one the replica joined; once one
// does, the replica stops for good (Ready fails) until it is restarted.
//
// Limits, by design: deadlines follow the Redis host's wall clock (TIME), so a step
// of that clock moves them; waiters are served in order among one replica's waiters
// only; the local hub holds the newest EventRetention events, loaded from the stream
// at start, and After replays from it; a reader that fell more than the stream's
// length behind would miss events; the scripts declare no KEYS, so Redis Cluster is
// not supported although every key shares one hash slot.
package redisstore

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"math"
	"net/url"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/jonboulle/clockwork"
	"github.com/redis/rueidis"

	"github.com/keypool/keypool/keystore"
)

// DefaultNamespace names the pool in Redis when no other is given.
const DefaultNamespace = "keypool"

// Tuning of the background work.
const (
	// expiryBatch bounds the transitions one expirer script applies, so that a storm of
	// deadlines holds Redis for a few milliseconds at a time.
	expiryBatch = 128
	// fallbackTick bounds how long the expirer and dispatcher sleep without news: a
	// deadline set by another replica that emits no event (a Renew that shortens a
	// lease) is applied within it even if that replica has gone. Real time, also under
	// a fake clock, so that it never counts as a sleeper of the fake clock.
	fallbackTick = time.Second
	// minStreamLength is the least number of events the stream keeps, whatever
	// EventRetention: it carries events from the scripts to every replica's reader, which
	// must find them there even after a Generate of MaxGenerate keys.
	minStreamLength = 1 << 16
	// streamBlock is how long one XREAD waits for events.
	streamBlock = time.Second
	// streamBatch is how many events one XREAD takes.
	streamBatch = 1024
	// streamCoalesce is how long the reader lets events gather between XREADs that
	// found fewer than streamBatch: what it adds, at most, to the delivery of an event
	// to this replica's subscribers and waiters.
	streamCoalesce = 2 * time.Millisecond
	// catchUpTimeout bounds how long Subscribe waits for the reader to reach the
	// stream's newest event.
	catchUpTimeout = 5 * time.Second
	// Backoff of the background loops while Redis cannot be reached.
	minBackoff = 20 * time.Millisecond
	maxBackoff = time.Second

	// maxInFlight bounds the requests one replica has in Redis at once: each holds a
	// slot of the replica's replies hash until it ends (or, for an Acquire of unknown
	// outcome, until it is resolved); a request waits for a free slot.
	maxInFlight = 1024
	// retryFor bounds how long one request is sent again while Redis cannot be reached
	// or its replies are lost (a Redis restarting from its AOF, a failover, a dropped
	// connection); then the request fails with EUNAVAILABLE.
	retryFor = 2 * time.Second
	// Retries of one request back off from retryMinBackoff to retryMaxBackoff.
	retryMinBackoff = 5 * time.Millisecond
	retryMaxBackoff = 200 * time.Millisecond
	// ioTimeout bounds one dial, write or read of a reply (blocking XREADs excepted):
	// a paused or unreachable Redis is noticed within it. A script that runs longer
	// (Generate of MaxGenerate keys on a slow host) is read by the retry, which replays
	// its recorded reply.
	ioTimeout = time.Second
	// readyTimeout bounds one readiness probe, within the 2 s that /readyz promises.
	readyTimeout = time.Second
	// minRepliesTTL is the least time a replica's replies outlive its last expirer run:
	// longer than any lease of a request still to resolve can last.
	minRepliesTTL = time.Hour
)

// Option tunes New.
type Option func(*config)

type config struct {
	namespace  string
	clientTime bool
	resolved   func(n uint64, fence int64, start, end time.Time)
	scripts    *scriptSet
	noSlots    bool
	afterTry   func()
}

// WithNamespace keeps the pool under "{ns}:" in Redis (default "keypool"), so that
// several pools can share one Redis. A "namespace" query parameter of the URL does the
// same.
func WithNamespace(ns string) Option { return func(c *config) { c.namespace = ns } }

// withResolved tells f of every key the resolver frees (tests record it in their
// histories).
func withResolved(f func(n uint64, fence int64, start, end time.Time)) Option {
	return func(c *config) { c.resolved = f }
}

// withScripts runs other scripts (tests break one on purpose).
func withScripts(set scriptSet) Option { return func(c *config) { c.scripts = &set } }

// withAfterFailedTry calls f each time a waiting Acquire's own try has found no key,
// before that Acquire returns: a test frees a key and races a fresh Acquire there.
func withAfterFailedTry(f func()) Option { return func(c *config) { c.afterTry = f } }

// withoutSlots sends every request without a slot, so that a retry runs it again: the
// defect the slots fix, for a test to show that the linearizability check sees it.
func withoutSlots() Option { return func(c *config) { c.noSlots = true } }

// Store is the keystore.Backend of a pool in Redis.
type Store struct {
	rdb        rueidis.Client
	clock      clockwork.Clock
	clientTime bool
	opts       keystore.Options
	prefix     string
	stream     string // the pool's event stream
	ids        *keystore.IDCodec
	lanes      *keystore.Lanes
	hub        *keystore.Hub
	waiters    *keystore.WaitQueue
	replica    string    // tags the transitions this replica applies, for its Observer
	fixedArgs  [7]string // ARGV[1..7] of every script
	scripts    scriptSet
	repliesTTL int64 // ms

	// Requests: free slots of the replies hash, the last generation given out, and
	// the Acquires of unknown outcome waiting for the resolver.
	slots      chan int
	gen        atomic.Uint64
	umu        sync.Mutex
	unresolved []*unsettled
	resolve    chan struct{}
	resolved   func(n uint64, fence int64, start, end time.Time)
	noSlots    bool
	afterTry   func() // test seam: after a waiting Acquire's own try found no key

	// lost is set once a script finds that the pool in Redis is not the one this
	// replica joined; the replica then refuses everything.
	lost atomic.Bool

	// Script times are integers of unit since base: microseconds since the Unix epoch
	// with Redis's TIME, nanoseconds since the pool's creation with the store's clock.
	unit time.Duration
	base time.Time

	ctx    context.Context // ends at Close
	cancel context.CancelFunc
	wg     sync.WaitGroup
	once   sync.Once

	// The expirer's sleep.
	mu     sync.Mutex
	wakeAt int64 // script time the expirer sleeps until
	heard  int64 // earliest deadline told by wakeBy since the expirer's last script
	skew   int64 // script time minus the store's clock, from the last script reply
	kick   chan struct{}

	serve chan struct{} // wakes the dispatcher of this replica's waiting Acquires

	// The reader's progress, for Subscribe to wait on.
	pmu      sync.Mutex
	progress chan struct{} // closed and replaced whenever the reader publishes
}

var _ keystore.Backend = (*Store)(nil)

// New connects to the Redis at rawURL (redis://host:port/db, rediss://…, or
// unix:///path/to/socket?db=N), sets up the pool there if it is the first replica,
// and starts the store's background work; Close stops it. clock is
// clockwork.NewRealClock() in production; with a *clockwork.FakeClock (tests) the
// scripts take its time instead of Redis's.
func New(ctx context.Context, rawURL string, clock clockwork.Clock, opts keystore.Options, options ...Option) (*keystore.Pool, error) {
	pool, _, err := open(ctx, rawURL, clock, opts, options...)
	return pool, err
}

// open is New, also returning the backend.
func open(ctx context.Context, rawURL string, clock clockwork.Clock, opts keystore.Options, options ...Option) (*keystore.Pool, *Store, error) {
	var backend *Store
	pool, err := keystore.NewPool(clock, opts, func(env keystore.Env) (keystore.Backend, *keystore.IDCodec, error) {
		s, err := newStore(ctx, rawURL, env, options...)
		backend = s
		if err != nil {
			return nil, nil, err
		}
		return s, s.ids, nil
	})
	return pool, backend, err
}

func newStore(ctx context.Context, rawURL string, env keystore.Env, options ...Option) (*Store, error) {
	opts, clock := env.Options, env.Clock
	if err := validate(opts); err != nil {
		return nil, err
	}
	cfg := config{namespace: DefaultNamespace}
	if _, fake := clock.(*clockwork.FakeClock); fake {
		cfg.clientTime = true
	}
	rawURL, ns, err := takeNamespace(rawURL)
	if err != nil {
		return nil, err
	}
	if ns != "" {
		cfg.namespace = ns
	}
	for _, o := range options {
		o(&cfg)
	}
	if cfg.namespace == "" || strings.ContainsAny(cfg.namespace, "{}") {
		return nil, fmt.Errorf("redis store: namespace %q must be non-empty, without braces", cfg.namespace)
	}
	ropts, err := rueidis.ParseURL(rawURL)
	if err != nil {
		return nil, fmt.Errorf("redis store: %w", err)
	}
	clientOptions(&ropts)
	rdb, err := rueidis.NewClient(ropts)
	if err != nil {
		return nil, unavailable(err)
	}

	s := &Store{
		rdb:        rdb,
		clock:      clock,
		clientTime: cfg.clientTime,
		opts:       opts,
		prefix:     "{" + cfg.namespace + "}:",
		lanes:      env.Lanes,
		hub:        env.Lanes.Made(keystore.DefaultPool).Events,
		waiters:    env.Lanes.Made(keystore.DefaultPool).Waiters,
		replica:    strconv.FormatUint(randomUint64(), 36),
		wakeAt:     math.MaxInt64,
		heard:      math.MaxInt64,
		kick:       make(chan struct{}, 1),
		serve:      make(chan struct{}, 1),
		progress:   make(chan struct{}),
		scripts:    defaultScripts,
		repliesTTL: max(opts.MaxLeaseTTL, minRepliesTTL).Milliseconds(),
		slots:      make(chan int, maxInFlight),
		resolve:    make(chan struct{}, 1),
		resolved:   cfg.resolved,
		noSlots:    cfg.noSlots,
		afterTry:   cfg.afterTry,
	}
	if cfg.scripts != nil {
		s.scripts = *cfg.scripts
	}
	for slot := range maxInFlight {
		s.slots <- slot
	}
	retention := max(opts.EventRetention, 2*opts.MaxGenerate, minStreamLength)
	s.fixedArgs = [7]string{s.prefix, "T", strconv.Itoa(retention), s.replica, "", "", "0"}
	s.ctx, s.cancel = context.WithCancel(context.Background())

	lastID, err := s.start(ctx)
	if err != nil {
		rdb.Close()
		s.cancel()
		return nil, err
	}
	s.wg.Add(4)
	go s.expireLoop()
	go s.readLoop(lastID)
	go s.serveLoop()
	go s.resolveLoop()
	return s, nil
}

// clientOptions sets up the Redis client. It pipelines the requests of concurrent
// callers on a few connections (one write and one read carry many requests, for the
// client and for Redis), and never retries on its own: the store retries, and only
// what is safe to send again (see Store.send). A connection whose replies stop coming
// for ioTimeout is dropped, so a paused Redis is noticed within it, and the callers'
// deadlines bound every wait. It pipelines on one connection (a second measured no
// faster), from the first request on, so that the goroutines it runs for it
// exist from the start rather than appearing under the first concurrent load (a
// second connection would start its own later, at random). The pool is never in a
// cluster, and is not cached in the client.
func clientOptions(o *rueidis.ClientOption) {
	o.DisableRetry = true
	o.DisableCache = true
	o.ForceSingleClient = true
	o.AlwaysPipelining = true
	o.PipelineMultiplex = -1 // 2^0 connections
	o.Dialer.Timeout = ioTimeout
	o.ConnWriteTimeout = ioTimeout
}

// takeNamespace removes this package's own "namespace" parameter from a Redis URL.
func takeNamespace(rawURL string) (string, string, error) {
	u, err := url.Parse(rawURL)
	if err != nil {
		return "", "", errors.New("redis store: the URL does not parse") // its text may hold a password
	}
	q := u.Query()
	ns := q.Get("namespace")
	if !q.Has("namespace") {
		return rawURL, "", nil
	}
	q.Del("namespace")
	u.RawQuery = q.Encode()
	return u.String(), ns, nil
}

// validate adds to keystore's rules the one of Redis's clock: it counts microseconds.
func validate(o keystore.Options) error {
	if err := o.Validate(); err != nil {
		return err
	}
	if o.LeaseTTL < time.Microsecond || o.KeepAliveTTL < time.Microsecond {
		return fmt.Errorf("lease and keep-alive TTLs must be at least 1µs on Redis, got %v and %v", o.LeaseTTL, o.KeepAliveTTL)
	}
	return nil
}

// start reads (or, first of all replicas, stores) the id secret, loads the scripts and
// fills the local hub with the events the stream retains. It returns the stream id the
// reader goes on from.
func (s *Store) start(ctx context.Context) (string, error) {
	c := s.rdb
	setNX := func(key, value string) error {
		err := c.Do(ctx, c.B().Set().Key(key).Value(value).Nx().Build()).Error()
		if rueidis.IsRedisNil(err) { // it was set already
			err = nil
		}
		return err
	}
	get := func(key string) (string, error) { return c.Do(ctx, c.B().Get().Key(key).Build()).ToString() }
	secretKey := s.prefix + "secret"
	if err := setNX(secretKey, string(keystore.NewSecret())); err != nil {
		return "", unavailable(err)
	}
	secret, err := get(secretKey)
	if err != nil {
		return "", unavailable(err)
	}
	if s.ids, err = keystore.NewIDCodec([]byte(secret)); err != nil {
		return "", fmt.Errorf("redis store: the pool's id secret at %s: %w", secretKey, err)
	}
	// The pool id lets the scripts tell this pool from one made after Redis lost it.
	if err := setNX(s.prefix+"pool", poolID([]byte(secret))); err != nil {
		return "", unavailable(err)
	}
	pool, err := get(s.prefix + "pool")
	if err != nil {
		return "", unavailable(err)
	}
	if pool != poolID([]byte(secret)) {
		return "", fmt.Errorf("redis store: the pool at %spool is not the one its secret names: remove the pool's keys, or use another namespace", s.prefix)
	}
	s.fixedArgs[4] = pool
	s.stream = s.prefix + "events:" + pool
	s.hub.SetStream(pool) // a pool made anew has another id, and its events start again
	if err := s.agreeOnClock(ctx, setNX, get); err != nil {
		return "", err
	}
	for _, script := range s.scripts.all() {
		if err := c.Do(ctx, c.B().ScriptLoad().Script(script.src).Build()).Error(); err != nil {
			return "", unavailable(err)
		}
	}
	retained, err := c.Do(ctx, c.B().Xrevrange().Key(s.stream).End("+").Start("-").Count(int64(s.opts.EventRetention)).Build()).AsXRange()
	if err != nil {
		return "", unavailable(err)
	}
	lastID := "0-0"
	for i := len(retained) - 1; i >= 0; i-- {
		ev, ok := s.parseEvent(retained[i])
		if !ok {
			continue
		}
		s.hub.Publish(ev)
		lastID = retained[i].ID
	}
	return lastID, nil
}

// poolID names the pool by its secret, without revealing it.
func poolID(secret []byte) string {
	sum := sha256.Sum256(append([]byte("keypool pool id\x00"), secret...))
	return hex.EncodeToString(sum[:12])
}

// unavailable maps an error of the Redis client at start to EUNAVAILABLE.
func unavailable(err error) error {
	if err == nil {
		return nil
	}
	return &keystore.Error{Code: keystore.EUNAVAILABLE, Message: "the key store cannot be reached", Err: err}
}

// agreeOnClock sets the unit and base of script times, the same for every replica of
// the pool: the first replica records its choice under "clock", the others read it and
// refuse to start on a pool whose clock is not theirs.
func (s *Store) agreeOnClock(ctx context.Context, setNX func(key, value string) error, get func(key string) (string, error)) error {
	mine := "redis-us"
	if s.clientTime {
		mine = "client-ns:" + strconv.FormatInt(s.clock.Now().UnixNano(), 10)
	}
	key := s.prefix + "clock"
	if err := setNX(key, mine); err != nil {
		return unavailable(err)
	}
	recorded, err := get(key)
	if err != nil {
		return unavailable(err)
	}
	if recorded == "redis-us" && !s.clientTime {
		s.unit, s.base = time.Microsecond, time.Unix(0, 0).UTC()
		return nil
	}
	if base, ok := strings.CutPrefix(recorded, "client-ns:"); ok && s.clientTime {
		ns, err := strconv.ParseInt(base, 10, 64)
		if err == nil {
			s.unit, s.base = time.Nanosecond, time.Unix(0, ns).UTC()
			return nil
		}
	}
	return fmt.Errorf("redis store: the pool at %s keeps time as %q, this replica as %q: all replicas must use Redis's TIME, or all the same test clock", key, recorded, mine)
}

// now is the clock reading the scripts get: the store's clock, or "T" for Redis's TIME.
func (s *Store) now() string {
	if s.clientTime {
		return strconv.FormatInt(s.localNow(), 10)
	}
	return "T"
}

// localNow reads the store's clock in script time.
func (s *Store) localNow() int64 { return int64(s.clock.Now().Sub(s.base) / s.unit) }

// redisNow estimates the scripts' time from the local clock.
func (s *Store) redisNow() int64 {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.localNow() + s.skew
}

// noteNow keeps the estimate of Redis's clock against ours.
func (s *Store) noteNow(redisNow int64) {
	if s.clientTime {
		return
	}
	s.mu.Lock()
	s.skew = redisNow - s.localNow()
	s.mu.Unlock()
}

// at turns a script time into a time.
func (s *Store) at(v int64) time.Time { return s.base.Add(time.Duration(v) * s.unit) }

// units turns a duration into script time, rounding down.
func (s *Store) units(d time.Duration) int64 { return int64(d / s.unit) }

// record decodes {1, now, n, c, e, f, la, ld, timesAcquired, leasesExpired}.
func (s *Store) record(res []int64) (keystore.Record, error) {
	if len(res) != 10 {
		return keystore.Record{}, fmt.Errorf("redis store: bad key reply %v", res)
	}
	r := keystore.Record{
		N:             uint64(res[2]),
		Pool:          keystore.DefaultPool,
		CreatedAt:     s.at(res[3]),
		ExpiresAt:     s.at(res[4]),
		Fence:         res[5],
		AcquiredAt:    s.at(res[6]),
		TimesAcquired: res[8],
		LeasesExpired: res[9],
	}
	if r.Fence != 0 {
		r.LeaseExpiresAt = s.at(res[7])
	}
	return r, nil
}

// keyError maps the per-key status codes.
func keyError(status int64) error {
	switch status {
	case statusNotFound:
		return keystore.ErrNoKey
	case statusNotBlocked:
		return keystore.ErrNotBlocked
	case statusMismatch:
		return keystore.ErrLeaseMismatch
	}
	return fmt.Errorf("redis store: unknown script status %d", status)
}

// Generate implements keystore.Backend.
func (s *Store) Generate(ctx context.Context, pool string, count int) ([]keystore.Record, error) {
	if pool != keystore.DefaultPool {
		return nil, errOnePool
	}
	res, err := s.run(ctx, s.scripts.generate, mutation, count, s.units(s.opts.KeepAliveTTL))
	if err != nil {
		return nil, err
	}
	now, first, expires := res[1], res[2], res[3]
	s.wakeBy(expires)
	recs := make([]keystore.Record, count)
	for i := range recs {
		recs[i] = keystore.Record{N: uint64(first) + uint64(i), Pool: pool, CreatedAt: s.at(now), ExpiresAt: s.at(expires)}
	}
	return recs, nil
}

// Acquire implements keystore.Backend.
//
// The try for a waiting Acquire is a script in Redis and the line is in this process,
// so no one step can do both; queued after a try that found no key, a waiter would
// miss a key freed in between, to a fresh Acquire or to a later waiter. So the waiter
// joins the line before its try (WaitQueue.Join) and is taken back out if the try
// finds a key (Withdraw), else it stays where it joined (Stay): it is in line, in the
// order of arrival, from before the step that found no key, as the Backend promises.
//
// Each try leaves the keys owed to waiters to them: the script is told how many wait
// on this replica before the Acquire (all of them for a fresh Acquire, none for the
// dispatcher's try for the first in line) and takes a key only if more are free. So
// a key freed after a waiter's try goes to the waiters, whom the dispatcher serves in
// order as it learns of the key (it does not pass a waiter whose try is under way),
// before any Acquire this replica begins after the waiter joined. This holds no lock
// across a round trip and adds no request: tries still run at once, pipelined, and
// the script counts the free keys in O(1) (O(log n) in a backlog of due deadlines, as
// Stats does). The count errs on the waiters' side: a waiter whose try is taking a
// key at that moment still counts, so an Acquire racing it near the end of the free
// keys may leave one that is not owed (a fresh one answers NOT_FOUND, a waiting one
// waits for the dispatcher). Other replicas' Acquires may take any key: waiters are
// served first among one replica's Acquires only.
func (s *Store) Acquire(ctx context.Context, pool string, ttl time.Duration, holder string, w *keystore.Waiter) (keystore.Record, error) {
	if pool != keystore.DefaultPool {
		// Made nowhere yet (the store keeps one pool for now): the waiter waits for
		// its wait to run out.
		if w != nil {
			s.lanes.Made(pool).Waiters.Push(w)
		}
		return keystore.Record{}, keystore.ErrNoKey
	}
	if w == nil {
		return s.acquireOnce(ctx, ttl, s.waiters.Len())
	}
	rec, err := s.acquireOnce(ctx, ttl, s.waiters.Join(w))
	var wake bool
	if errors.Is(err, keystore.ErrNoKey) {
		if s.afterTry != nil {
			s.afterTry()
		}
		var stays bool
		if stays, wake = s.waiters.Stay(w); !stays {
			err = ctx.Err() // its client left during the try: it does not wait
		}
	} else {
		wake = s.waiters.Withdraw(w)
	}
	if wake {
		s.poke() // the dispatcher stopped at w: now it serves w, or the next in line
	}
	return rec, err
}

// acquireOnce runs the acquire script: a key, or ErrNoKey. The script leaves reserve
// free keys to this replica's waiters.
func (s *Store) acquireOnce(ctx context.Context, ttl time.Duration, reserve int) (keystore.Record, error) {
	res, err := s.run(ctx, s.scripts.acquire, acquisition, s.units(ttl), randomUint64()>>33, reserve)
	if err != nil {
		return keystore.Record{}, err
	}
	if res[0] == statusNotFound {
		return keystore.Record{}, keystore.ErrNoKey
	}
	r, err := s.record(res)
	if err == nil {
		s.wakeBy(s.units(r.LeaseExpiresAt.Sub(s.base)))
	}
	return r, err
}

// keyOp runs a per-key script and decodes its key reply.
func (s *Store) keyOp(ctx context.Context, script *script, kind requestKind, n uint64, args ...any) (keystore.Record, error) {
	res, err := s.run(ctx, script, kind, append([]any{n}, args...)...)
	if err != nil {
		return keystore.Record{}, err
	}
	if res[0] != statusOK {
		return keystore.Record{}, keyError(res[0])
	}
	return s.record(res)
}

// Unblock implements keystore.Backend.
func (s *Store) Unblock(ctx context.Context, n uint64, fence int64) (keystore.Record, error) {
	return s.keyOp(ctx, s.scripts.unblock, mutation, n, fence)
}

// Renew implements keystore.Backend.
func (s *Store) Renew(ctx context.Context, n uint64, fence int64, ttl time.Duration) (keystore.Record, error) {
	r, err := s.keyOp(ctx, s.scripts.renew, mutation, n, fence, s.units(ttl), s.units(s.opts.MaxLeaseTTL))
	if err == nil {
		s.wakeBy(s.units(r.LeaseExpiresAt.Sub(s.base)))
	}
	return r, err
}

// KeepAlive implements keystore.Backend.
func (s *Store) KeepAlive(ctx context.Context, n uint64) (keystore.Record, error) {
	return s.keyOp(ctx, s.scripts.keepAlive, mutation, n, s.units(s.opts.KeepAliveTTL))
}

// Get implements keystore.Backend.
func (s *Store) Get(ctx context.Context, n uint64) (keystore.Record, error) {
	return s.keyOp(ctx, s.scripts.get, readOnly, n)
}

// Delete implements keystore.Backend.
func (s *Store) Delete(ctx context.Context, n uint64) error {
	res, err := s.run(ctx, s.scripts.delete, mutation, n)
	if err != nil {
		return err
	}
	if res[0] != statusOK {
		return keyError(res[0])
	}
	return nil
}

// errOnePool refuses a pool other than the default, which the Redis store does not
// keep yet.
var errOnePool = keystore.Errorf(keystore.EINVALID, "this server's Redis store keeps one pool, %q, for now", keystore.DefaultPool)

// Pools implements keystore.Backend.
func (s *Store) Pools(ctx context.Context) ([]keystore.PoolStats, error) {
	st, err := s.Stats(ctx, keystore.DefaultPool)
	if err != nil || st.Total == 0 {
		return nil, err
	}
	return []keystore.PoolStats{{Name: keystore.DefaultPool, Stats: st}}, nil
}

// List implements keystore.Backend.
func (s *Store) List(ctx context.Context, pool string, status keystore.Status, from uint64, limit int) ([]keystore.Record, error) {
	return nil, keystore.Errorf(keystore.EINVALID, "this server's Redis store cannot list keys yet")
}

// Stats implements keystore.Backend.
func (s *Store) Stats(ctx context.Context, pool string) (keystore.Stats, error) {
	if pool != keystore.DefaultPool {
		return keystore.Stats{}, nil
	}
	res, err := s.run(ctx, s.scripts.stats, readOnly)
	if err != nil {
		return keystore.Stats{}, err
	}
	if len(res) != 5 {
		return keystore.Stats{}, fmt.Errorf("redis store: bad stats reply %v", res)
	}
	return keystore.Stats{Total: int(res[2]), Available: int(res[3]), Blocked: int(res[4])}, nil
}

// CatchUp implements keystore.Backend: it waits for the reader to reach the stream's
// newest event, so that a subscription sees every event made before it on any
// replica as past, not live. The local hub holds the same window of events as the
// stream (the newest EventRetention), so a replay with After is served from it.
func (s *Store) CatchUp(ctx context.Context, pool string) error {
	if err := s.refusing(); err != nil {
		return err
	}
	if pool != keystore.DefaultPool {
		return nil // no events
	}
	newest, err := s.rdb.Do(ctx, s.rdb.B().Get().Key(s.prefix+"seq").Build()).AsInt64()
	if err != nil && !rueidis.IsRedisNil(err) {
		return unavailable(err)
	}
	timeout := time.NewTimer(catchUpTimeout)
	defer timeout.Stop()
	for {
		s.pmu.Lock()
		progress := s.progress
		s.pmu.Unlock()
		if s.hub.LastSeq() >= newest {
			return nil
		}
		select {
		case <-progress:
		case <-ctx.Done():
			return ctx.Err()
		case <-s.ctx.Done():
			return s.refusing()
		case <-timeout.C:
			return keystore.Errorf(keystore.EUNAVAILABLE, "the event stream is not being read")
		}
	}
}

// Ready implements keystore.Backend: Redis answers within readyTimeout, and holds the
// pool this replica joined. One attempt, never retried: a readiness probe must fail
// fast when Redis is away or paused.
func (s *Store) Ready(ctx context.Context) error {
	if err := s.refusing(); err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(ctx, readyTimeout)
	defer cancel()
	res, _, err := s.send(ctx, s.scripts.check, s.args(nil), false)
	if err != nil {
		return s.unavailable(err, false, readOnly)
	}
	_, err = s.status(res)
	return err
}

// Close implements keystore.Backend.
func (s *Store) Close() error {
	var err error
	s.once.Do(func() {
		s.cancel()
		s.rdb.Close() // also ends a blocked XREAD
		s.wg.Wait()
	})
	return err
}

// refusing fails once the store is closed or its pool lost.
func (s *Store) refusing() error {
	if err := s.usable(); err != nil {
		return err
	}
	return s.stopping()
}

func (s *Store) stopping() error {
	if s.ctx.Err() != nil {
		return keystore.Errorf(keystore.EUNAVAILABLE, "the store is closed")
	}
	return nil
}
