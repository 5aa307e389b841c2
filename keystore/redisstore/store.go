// Package redisstore is a keystore.Store kept in Redis, so that several replicas of the
// server share one namespace of named pools.
//
// Each pool lives under a hash tag of its own ({ns:pool}), and each Store method is one
// call of a Lua function on one pool's keys, atomic inside Redis and O(1) or O(log n):
// sorted sets of the AVAILABLE and the BLOCKED key numbers, scored by number (a uniform
// pick is a random rank, a page of List a range by score), sorted sets of the lease and
// keep-alive deadlines, a STRING per key (its fields packed), and a meta HASH with the
// pool's counters behind key numbers, fences and event seqs, which outlive its keys,
// and a STREAM of the pool's events. The functions are one Redis Functions library
// (scripts.go), loaded at start and again wherever Redis lacks it. The namespace's own tag ({ns}) holds what the pools share: the layout
// version, the id secret, the clock, and the registry of pools, which only grows and
// which replicas cache (see scripts.go for the layout). A key's id encrypts its pool's
// index above its number within the pool, so any replica finds the pool of a key from
// its id. Deadlines come from Redis's own TIME, one clock for every replica, in whole
// microseconds; with a *clockwork.FakeClock (tests) the store passes the fake clock's
// reading to the scripts instead, in nanoseconds since the namespace was created.
//
// Each replica runs four goroutines: an expirer that sleeps until the earliest
// deadline of any pool and applies the due transitions of each pool in bounded batches
// (any replica may; the scripts pop each due entry as they apply it, so none is applied
// twice), and passes over every pool once a second; a reader that follows, in one
// XREAD BLOCK, the stream of pools made (so it learns of the pools other replicas make)
// and the event stream of every pool, letting events gather for streamCoalesce
// between reads, and publishes each pool's events into the pool's keystore.Hub (its
// Lane's), with the pool's own seqs and its id as the stream's, for subscribers and for
// waking waiters; a dispatcher that serves this replica's waiting Acquires, pool by
// pool, first come first served within a pool; and a resolver that settles the
// requests whose outcome the replica never learned (see below).
//
// The client is rueidis, which pipelines the requests of concurrent callers on one
// connection: under load one write and one read carry many scripts, for this process
// and for Redis, instead of a round trip of system calls each.
//
// Faults. A request that changes a pool runs at most once however often it is sent
// (see scripts.go: a slot and generation per request, its reply recorded with its
// effects), so the store itself retries a request whose reply was lost, for up to
// retryFor, and the retry answers what the first run did; the client never retries on
// its own. When the outcome stays unknown the caller gets EUNAVAILABLE saying so, and
// the request is settled in the background as soon as Redis answers again: it either
// ran, or it never will; an Acquire that ran has its key (whose token nobody has)
// freed. Every script refuses a namespace or pool other than the one the replica
// joined; once one does, the replica stops for good (Ready fails) until it is
// restarted. A replica refuses at start a namespace of another layout version, or one
// whose replicas' shared settings (sharedSettings) differ from its own. A fifth
// goroutine, the watcher (health.go), reads Redis's INFO: while Redis may evict keys
// (a maxmemory-policy other than noeviction) or is out of memory, changes are refused
// and reads run dry; it also logs outages.
//
// Sentinel: a URL with master_set (and more sentinels as addr parameters) connects
// through the sentinels, and the client follows a failover. Replication is
// asynchronous, so a failover can lose what was answered, unless WithMinReplicas has
// every request confirmed by replicas (WAIT) before it is answered.
//
// Limits, by design: deadlines follow the Redis host's wall clock (TIME), so a step
// of that clock moves them; waiters are served in order among one replica's waiters
// only; each pool's hub holds its newest EventRetention events, loaded from its stream
// at start, and After replays from it; a reader that fell more than a stream's length
// behind would miss events; a pass over every pool (Pools, Stats without a pool, the
// reader's XREAD, the expirer's pass once a second) costs O(pools), at most
// Options.MaxPools. Redis Cluster (detected at start, connect): each script declares
// the one key of its hash tag that it reads first, and touches that tag's keys only, so
// the client routes it to its pool's shard; the reader, which a cluster would refuse
// one XREAD across slots, reads each pool's stream apart and polls (readStreams);
// WithMinReplicas is refused there.
package redisstore

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/jonboulle/clockwork"
	"github.com/redis/rueidis"

	"github.com/keypool/keypool/keystore"
)

// DefaultNamespace names the namespace of pools in Redis when no other is given.
const DefaultNamespace = "keypool"

// Tuning of the background work.
const (
	// expiryBatch bounds the transitions one expirer script applies, so that a storm of
	// deadlines holds Redis for a few milliseconds at a time.
	expiryBatch = 128
	// fallbackTick bounds how long the expirer and dispatcher sleep without news: a
	// deadline set by another replica that emits no event (a Renew that shortens a
	// lease) is applied within it even if that replica has gone; the expirer passes over
	// every pool once in each. Real time, also under
	// a fake clock, so that it never counts as a sleeper of the fake clock.
	fallbackTick = time.Second
	// minStreamLength is the least number of events a pool's stream keeps, whatever
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
	log        *slog.Logger
	health     time.Duration
	replicas   int
	secretsKey []byte
}

// WithMinReplicas has every request of a pool confirmed by n Redis replicas (WAIT)
// before it is answered, so that a failover to one of them loses no answered change;
// one not confirmed in time is answered UNAVAILABLE, "may or may not have been
// applied". 0 (the default) waits for none.
func WithMinReplicas(n int) Option { return func(c *config) { c.replicas = n } }

// WithLogger logs Redis's outages and the times it refuses changes (it may evict
// keys, or is out of memory) to l, once as each begins and once as it ends.
func WithLogger(l *slog.Logger) Option { return func(c *config) { c.log = l } }

// withHealthEvery has the watcher read INFO every d instead of healthEvery (tests).
func withHealthEvery(d time.Duration) Option { return func(c *config) { c.health = d } }

// WithNamespace keeps the pools under the namespace ns in Redis (default "keypool":
// keys "{keypool}:…" and "{keypool:<pool>}:…"), so that several servers' pools can
// share one Redis. A "namespace" query parameter of the URL does the same.
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

// Store is the keystore.Backend of a namespace of pools in Redis.
type Store struct {
	rdb        rueidis.Client
	clock      clockwork.Clock
	clientTime bool
	opts       keystore.Options
	namespace  string
	nsPrefix   string   // "{ns}:"
	nsKeys     []string // KEYS of the namespace's scripts
	nsID       string
	secret     []byte
	ids        *keystore.IDCodec
	sealer     *sealer // nil without a secrets key
	lanes      *keystore.Lanes
	reg        registry
	replica    string // tags the transitions this replica applies, for its Observer
	retention  string // the streams' approximate MAXLEN
	scripts    scriptSet
	lib        *library // scripts, as Redis Functions
	repliesTTL int64    // ms

	// Every lane this process has made (Lanes.OnNew), for the dispatcher and markLost.
	lmu      sync.Mutex
	allLanes []*keystore.Lane

	// Requests: free slots of the replies hashes, the last generation given out, and
	// the requests of unknown outcome waiting for the resolver.
	slots      chan int
	gen        atomic.Uint64
	umu        sync.Mutex
	unresolved []*unsettled
	resolve    chan struct{}
	resolved   func(n uint64, fence int64, start, end time.Time)
	noSlots    bool
	afterTry   func() // test seam: after a waiting Acquire's own try found no key

	// Redis's health (health.go): the reasons to refuse changes, since when, whether
	// INFO was refused, since when (Unix ns) Redis has not answered (0: it answers).
	log                      *slog.Logger
	healthEvery              time.Duration
	healthKick               chan struct{}
	hmu                      sync.Mutex // orders the health logs
	evicting, full           atomicReason
	evictingSince, fullSince time.Time
	infoRefused              atomic.Bool
	downSince                atomic.Int64

	minReplicas int  // WithMinReplicas
	cluster     bool // Redis is a cluster: the reader reads each pool's stream apart

	// lost is set once a script finds that the namespace or a pool in Redis is not the
	// one this replica joined; the replica then refuses everything.
	lost atomic.Bool

	// Script times are integers of unit since base: microseconds since the Unix epoch
	// with Redis's TIME, nanoseconds since the namespace's creation with the store's
	// clock.
	unit time.Duration
	base time.Time

	ctx    context.Context // ends at Close
	cancel context.CancelFunc
	wg     sync.WaitGroup
	once   sync.Once

	// The expirer's sleep (and each pool's due and heard).
	mu     sync.Mutex
	wakeAt int64 // script time the expirer sleeps until
	skew   int64 // script time minus the store's clock, from the last script reply
	kick   chan struct{}

	// The dispatcher of this replica's waiting Acquires: the lanes to serve.
	smu     sync.Mutex
	toServe map[*keystore.Lane]struct{}
	serve   chan struct{}

	// The reader's progress, for CatchUp to wait on.
	pmu      sync.Mutex
	progress chan struct{} // closed and replaced whenever the reader publishes
}

var _ keystore.Backend = (*Store)(nil)

// atomicReason holds a reason to refuse changes, nil for none.
type atomicReason = atomic.Pointer[string]

// New connects to the Redis at rawURL (redis://host:port/db, rediss://…, or
// unix:///path/to/socket?db=N), sets up the namespace there if it is the first replica,
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
	cfg := config{namespace: DefaultNamespace, log: slog.New(slog.DiscardHandler), health: healthEvery}
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
	rdb, cluster, err := connect(ctx, ropts)
	if err != nil {
		return nil, err
	}
	var seal *sealer
	if cfg.secretsKey != nil {
		if seal, err = newSealer(cfg.secretsKey); err != nil {
			rdb.Close()
			return nil, err
		}
	}
	if cluster && cfg.replicas > 0 {
		rdb.Close()
		return nil, errors.New("redis store: -redis-min-replicas is not supported on a Redis Cluster (WAIT confirms one node's writes)")
	}

	s := &Store{
		rdb:         rdb,
		clock:       clock,
		clientTime:  cfg.clientTime,
		opts:        opts,
		sealer:      seal,
		namespace:   cfg.namespace,
		nsPrefix:    "{" + cfg.namespace + "}:",
		lanes:       env.Lanes,
		reg:         registry{byName: map[string]*rpool{}, byIndex: map[uint64]*rpool{}},
		replica:     strconv.FormatUint(randomUint64(), 36),
		retention:   strconv.Itoa(max(opts.EventRetention, 2*opts.MaxGenerate, minStreamLength)),
		wakeAt:      math.MaxInt64,
		kick:        make(chan struct{}, 1),
		toServe:     map[*keystore.Lane]struct{}{},
		serve:       make(chan struct{}, 1),
		progress:    make(chan struct{}),
		scripts:     defaultScripts,
		lib:         defaultLibrary,
		repliesTTL:  max(opts.MaxLeaseTTL, minRepliesTTL).Milliseconds(),
		slots:       make(chan int, maxInFlight),
		resolve:     make(chan struct{}, 1),
		resolved:    cfg.resolved,
		noSlots:     cfg.noSlots,
		afterTry:    cfg.afterTry,
		log:         cfg.log,
		healthEvery: cfg.health,
		healthKick:  make(chan struct{}, 1),
		minReplicas: cfg.replicas,
		cluster:     cluster,
	}
	s.nsKeys = []string{s.nsPrefix + "id"}
	if cfg.scripts != nil {
		s.scripts, s.lib = *cfg.scripts, newLibrary(*cfg.scripts)
	}
	for slot := range maxInFlight {
		s.slots <- slot
	}
	s.ctx, s.cancel = context.WithCancel(context.Background())

	lastIDs, err := s.start(ctx)
	if err != nil {
		rdb.Close()
		s.cancel()
		return nil, err
	}
	s.checkHealth(ctx)
	s.wg.Add(5)
	go s.watchLoop()
	go s.expireLoop()
	go s.readLoop(lastIDs)
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
// second connection would start its own later, at random). A URL with master_set makes
// it a Sentinel's, and connect makes it a cluster's for a cluster. It caches nothing.
func clientOptions(o *rueidis.ClientOption) {
	o.DisableRetry = true
	o.DisableCache = true
	o.ForceSingleClient = true
	o.AlwaysPipelining = true
	o.PipelineMultiplex = -1 // 2^0 connections
	o.Dialer.Timeout = ioTimeout
	o.ConnWriteTimeout = ioTimeout
}

// connect makes the Redis client: a Sentinel's for a URL with master_set; else it asks
// the node (INFO cluster) whether it is part of a cluster, and if so makes a cluster
// client, which routes each script to the shard of its pool's hash tag.
func connect(ctx context.Context, o rueidis.ClientOption) (rueidis.Client, bool, error) {
	rdb, err := rueidis.NewClient(o)
	if err != nil || o.Sentinel.MasterSet != "" {
		return rdb, false, unavailable(err)
	}
	info, err := rdb.Do(ctx, rdb.B().Info().Section("cluster").Build()).ToString()
	if err != nil || !strings.Contains(info, "cluster_enabled:1") {
		return rdb, false, nil // a Redis that refuses INFO is taken for a single node
	}
	rdb.Close()
	o.ForceSingleClient = false
	rdb, err = rueidis.NewClient(o)
	return rdb, true, unavailable(err)
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

// start sets up the namespace (or, after the first replica, checks its layout and
// clock and reads its secret), learns the pools made so far, and fills each pool's hub
// with the events its stream retains. It returns the stream ids the reader goes on
// from.
func (s *Store) start(ctx context.Context) (map[*rpool]string, error) {
	// The library is loaded by the first call that misses it (exec): a Redis that holds
	// it already, full or not, needs no write.
	s.pruneLibraries(ctx)
	c := s.rdb
	mine := "redis-us"
	if s.clientTime {
		mine = "client-ns:" + strconv.FormatInt(s.clock.Now().UnixNano(), 10)
	}
	secret := keystore.NewSecret()
	msgs, _, err := s.send(ctx, s.fn(s.scripts.setup), s.nsKeys,
		[]string{s.nsPrefix, layoutVersion, string(secret), namespaceID(secret), mine}, true, false)
	if err != nil {
		return nil, s.unavailable(err, false, readOnly)
	}
	_, stored, err := parseReply(msgs)
	switch {
	case err != nil || len(stored) != 1 && len(stored) != 4:
		return nil, fmt.Errorf("redis store: bad reply to the namespace's setup (%v)", err)
	case len(stored) == 1:
		return nil, fmt.Errorf("redis store: namespace %q in Redis holds data of layout %s, and this replica reads layout %s only: "+
			"give this replica another namespace, or move the data to this version's layout", s.namespace, stored[0], layoutVersion)
	}
	s.secret = []byte(stored[1])
	if s.ids, err = keystore.NewIDCodec(s.secret); err != nil {
		return nil, fmt.Errorf("redis store: the namespace's id secret at %ssecret: %w", s.nsPrefix, err)
	}
	// The namespace id lets the scripts tell this namespace from one made after Redis
	// lost it.
	if s.nsID = stored[2]; s.nsID != namespaceID(s.secret) {
		return nil, fmt.Errorf("redis store: the namespace at %sid is not the one its secret names: remove the namespace's keys, or use another namespace", s.nsPrefix)
	}
	if err := s.agreeOnClock(stored[3], mine); err != nil {
		return nil, err
	}
	if err := s.agreeOnSettings(ctx); err != nil {
		return nil, err
	}
	s.lanes.OnNew = s.onNewLane
	if err := s.readRegistry(ctx); err != nil {
		return nil, err
	}
	lastIDs := map[*rpool]string{}
	for _, p := range s.reg.all() {
		retained, err := c.Do(ctx, c.B().Xrevrange().Key(p.stream).End("+").Start("-").Count(int64(s.opts.EventRetention)).Build()).AsXRange()
		if err != nil {
			return nil, unavailable(err)
		}
		lastID := "0-0"
		for i := len(retained) - 1; i >= 0; i-- {
			ev, ok := s.parseEvent(p, retained[i])
			if !ok {
				continue
			}
			p.lane.Events.Publish(ev)
			lastID = retained[i].ID
		}
		lastIDs[p] = lastID
	}
	return lastIDs, nil
}

// unavailable maps an error of the Redis client at start to EUNAVAILABLE.
func unavailable(err error) error {
	if err == nil {
		return nil
	}
	return &keystore.Error{Code: keystore.EUNAVAILABLE, Message: "the key store cannot be reached", Err: err}
}

// sharedSettings are the settings that change what the pools do, which every replica of
// a namespace must share, each by the flag that sets it and as this replica has it:
// the last is the secrets key's check value ("" without a key).
func (s *Store) sharedSettings() [][2]string {
	o, check := s.opts, ""
	if s.sealer != nil {
		check = s.sealer.check
	}
	return [][2]string{
		{"-lease-ttl", o.LeaseTTL.String()},
		{"-keepalive-ttl", o.KeepAliveTTL.String()},
		{"-max-lease-ttl", o.MaxLeaseTTL.String()},
		{"-quarantine-after", strconv.Itoa(o.QuarantineAfter)},
		{"-expired-lease-cooldown", o.ExpiredLeaseCooldown.String()},
		{"-max-cooldown", o.MaxCooldown.String()},
		{secretsKeyFlag, check},
	}
}

// agreeOnSettings records this replica's shared settings in the namespace where none
// is recorded yet (the first replica; or a setting that replicas before it did not
// know), and refuses to start, naming the flag, if one of its own differs from the
// recorded one.
func (s *Store) agreeOnSettings(ctx context.Context) error {
	mine := s.sharedSettings()
	own := make([]any, 0, 2*len(mine))
	for _, kv := range mine {
		own = append(own, kv[0], kv[1])
	}
	msgs, err := s.runNSMessages(ctx, s.scripts.settings, own...)
	if err != nil {
		return err
	}
	_, recorded, err := parseReply(msgs)
	if err != nil || len(recorded) != len(mine) {
		return fmt.Errorf("redis store: bad reply to the settings' check (%v)", err)
	}
	for i, kv := range mine {
		if kv[0] == secretsKeyFlag {
			if err := s.agreeOnSecretsKey(kv[1], recorded[i]); err != nil {
				return err
			}
			continue
		}
		if recorded[i] != kv[1] {
			return fmt.Errorf("redis store: %s is %s on this replica, but %s on the replicas of namespace %q (recorded in %ssettings): "+
				"start every replica with the same %s", kv[0], kv[1], recorded[i], s.namespace, s.nsPrefix, kv[0])
		}
	}
	return nil
}

// agreeOnSecretsKey refuses to start a replica whose secrets key is not the one whose
// check value the namespace recorded (the first replica with a key recorded its own),
// or that has none where one is recorded: it could not open the secrets sealed so.
func (s *Store) agreeOnSecretsKey(mine, recorded string) error {
	switch {
	case recorded == "" || recorded == mine:
		return nil
	case mine == "":
		return fmt.Errorf("redis store: the imported secrets of namespace %q are sealed under a secrets key (its check value is recorded in %ssettings), and this replica has none: "+
			"start every replica with the same %s", s.namespace, s.nsPrefix, secretsKeyFlag)
	}
	return fmt.Errorf("redis store: %s on this replica is not the secrets key of the replicas of namespace %q (its check value, recorded in %ssettings, differs): "+
		"start every replica with the same %s", secretsKeyFlag, s.namespace, s.nsPrefix, secretsKeyFlag)
}

// agreeOnClock sets the unit and base of script times, the same for every replica of
// the namespace: the first replica records its choice under "clock", the others read
// it and refuse to start on a namespace whose clock is not theirs.
func (s *Store) agreeOnClock(recorded, mine string) error {
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
	return fmt.Errorf("redis store: the namespace at %sclock keeps time as %q, this replica as %q: all replicas must use Redis's TIME, or all the same test clock",
		s.nsPrefix, recorded, strings.SplitN(mine, ":", 2)[0])
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

// recordInts is how many integers of a key reply record a key: {n, c, e, f, la, ld,
// timesAcquired, leasesExpired, coolingUntil, quarantined, failures,
// consecutiveFailures}.
const recordInts = 12

// forever is the keep-alive deadline, in script time, of a key kept until deleted:
// later than any other (2^53-1, the largest integer a Lua number and a sorted set's
// score hold exactly).
const forever = 1<<53 - 1

// record decodes a key of p from v (recordInts integers, as recordInts says), its
// holder and its name.
func (s *Store) record(p *rpool, v []int64, holder, name string) keystore.Record {
	r := keystore.Record{
		N:             p.keyN(v[0]),
		Pool:          p.name,
		CreatedAt:     s.at(v[1]),
		ExpiresAt:     s.at(v[2]),
		Fence:         v[3],
		AcquiredAt:    s.at(v[4]),
		TimesAcquired: v[6],
		LeasesExpired: v[7],
	}
	r.Pos = r.N // pages go by key number, the score of the pool's sets
	if v[2] >= forever {
		r.ExpiresAt = keystore.Never
	}
	if r.Fence != 0 {
		r.LeaseExpiresAt = s.at(v[5])
		r.Holder = holder
	}
	coolingUntil, quarantined, failures, consecutive := v[8], v[9], v[10], v[11]
	if coolingUntil != 0 || quarantined != 0 || failures != 0 || consecutive != 0 || name != "" {
		r.Ext = &keystore.RecordExt{Failures: failures, ConsecutiveFailures: consecutive, Name: name}
		switch {
		case coolingUntil != 0:
			r.Ext.Status, r.Ext.CoolingUntil = keystore.Cooling, s.at(coolingUntil)
		case quarantined != 0:
			r.Ext.Status = keystore.Quarantined
		}
	}
	return r
}

// keyReply decodes a script's key reply {1, now, n, …, holder, name}, and, for the
// holder's answers (withSecret), the key's sealed secret after them.
func (s *Store) keyReply(p *rpool, res []int64, strs []string, withSecret bool) (keystore.Record, error) {
	want := 2
	if withSecret {
		want = 3
	}
	if len(res) != 2+recordInts || len(strs) != want {
		return keystore.Record{}, fmt.Errorf("redis store: bad key reply of %d integers and %d strings", len(res), len(strs))
	}
	r := s.record(p, res[2:], strs[0], strs[1])
	if withSecret && strs[2] != "" {
		secret, err := s.open(p, r.N, strs[2])
		if err != nil {
			return keystore.Record{}, err
		}
		if r.Ext == nil {
			r.Ext = &keystore.RecordExt{}
		}
		r.Ext.Secret = secret
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
	case statusNotHeldBack:
		return keystore.ErrNotHeldBack
	}
	return fmt.Errorf("redis store: unknown script status %d", status)
}

// Generate implements keystore.Backend.
func (s *Store) Generate(ctx context.Context, pool string, count int) ([]keystore.Record, error) {
	if err := s.usable(); err != nil {
		return nil, err
	}
	if err := s.refusingChanges(); err != nil {
		return nil, err // before the pool is made
	}
	p, err := s.poolNamed(ctx, pool, true)
	if err != nil {
		return nil, err
	}
	res, _, err := s.run(ctx, p, s.scripts.generate, mutation, count, s.units(s.opts.KeepAliveTTL))
	if err != nil {
		return nil, err
	}
	if res[0] == statusExhausted {
		return nil, errExhausted(pool)
	}
	if len(res) != 4 {
		return nil, fmt.Errorf("redis store: bad generate reply %v", res)
	}
	now, first, expires := res[1], res[2], res[3]
	s.wakeBy(p, expires)
	recs := make([]keystore.Record, count)
	for i := range recs {
		recs[i] = keystore.Record{N: p.keyN(first + int64(i)), Pool: pool, CreatedAt: s.at(now), ExpiresAt: s.at(expires)}
	}
	return recs, nil
}

// errExhausted refuses new keys in a pool whose key numbers have run out.
func errExhausted(pool string) error {
	return fmt.Errorf("redis store: pool %q has used up its %d key numbers", pool, int64(maxLocal))
}

// Acquire implements keystore.Backend.
//
// The try for a waiting Acquire is a script in Redis and the line is in this process,
// so no one step can do both; queued after a try that found no key, a waiter would
// miss a key freed in between, to a fresh Acquire or to a later waiter. So the waiter
// joins its pool's line before its try (WaitQueue.Join) and is taken back out if the
// try finds a key (Withdraw), else it stays where it joined (Stay): it is in line, in
// the order of arrival, from before the step that found no key, as the Backend
// promises. The try of a pool not made yet is the lookup that finds it missing; the
// dispatcher serves the waiter once the pool's first keys are told.
//
// Each try leaves the keys owed to waiters to them: the script is told how many wait
// on this replica for the pool before the Acquire (all of them for a fresh Acquire,
// none for the dispatcher's try for the first in line) and takes a key only if more
// are free. So a key freed after a waiter's try goes to the waiters, whom the
// dispatcher serves in order as it learns of the key (it does not pass a waiter whose
// try is under way), before any Acquire this replica begins after the waiter joined.
// This holds no lock across a round trip and adds no request: tries still run at once,
// pipelined, and the script counts the free keys in O(1) (O(log n) in a backlog of due
// deadlines, as Stats does). The count errs on the waiters' side: a waiter whose try
// is taking a key at that moment still counts, so an Acquire racing it near the end of
// the free keys may leave one that is not owed (a fresh one answers NOT_FOUND, a
// waiting one waits for the dispatcher). Other replicas' Acquires may take any key:
// waiters are served first among one replica's Acquires only.
func (s *Store) Acquire(ctx context.Context, pool string, ttl time.Duration, holder string, w *keystore.Waiter) (keystore.Record, error) {
	if w == nil {
		reserve := 0
		if lane := s.lanes.Peek(pool); lane != nil {
			reserve = lane.Waiters.Len()
		}
		return s.acquireOnce(ctx, pool, ttl, holder, reserve)
	}
	waiters := s.lanes.Made(pool).Waiters
	rec, err := s.acquireOnce(ctx, pool, ttl, holder, waiters.Join(w))
	var wake bool
	if errors.Is(err, keystore.ErrNoKey) {
		if s.afterTry != nil {
			s.afterTry()
		}
		var stays bool
		if stays, wake = waiters.Stay(w); !stays {
			err = ctx.Err() // its client left during the try: it does not wait
		}
	} else {
		wake = waiters.Withdraw(w)
	}
	if wake {
		s.poke(s.lanes.Made(pool)) // the dispatcher stopped at w: now it serves w, or the next in line
	}
	return rec, err
}

// acquireOnce leases a key of pool: a key, or ErrNoKey. The script leaves reserve free
// keys to this replica's waiters of the pool. It runs again while the script cannot
// decide within its bounds (a backlog of due transitions, each run applying some).
func (s *Store) acquireOnce(ctx context.Context, pool string, ttl time.Duration, holder string, reserve int) (keystore.Record, error) {
	p, err := s.poolNamed(ctx, pool, false)
	if err != nil || p == nil {
		return keystore.Record{}, cmp.Or(err, keystore.ErrNoKey)
	}
	for {
		res, strs, err := s.run(ctx, p, s.scripts.acquire, acquisition, s.units(ttl), randomUint64()>>12, reserve, holder)
		if err != nil {
			return keystore.Record{}, err
		}
		switch res[0] {
		case statusNotFound:
			return keystore.Record{}, keystore.ErrNoKey
		case statusUndecided:
			if err := ctx.Err(); err != nil {
				return keystore.Record{}, err
			}
			continue
		}
		r, err := s.keyReply(p, res, strs, true)
		if err == nil {
			s.wakeBy(p, s.units(r.LeaseExpiresAt.Sub(s.base)))
		}
		return r, err
	}
}

// keyOp runs a per-key script on key n and decodes its key reply.
func (s *Store) keyOp(ctx context.Context, script *script, kind requestKind, n uint64, args ...any) (*rpool, keystore.Record, error) {
	return s.keyOpSecret(ctx, script, kind, n, false, args...)
}

// keyOpSecret is keyOp for a script whose reply carries the sealed secret when
// withSecret says so.
func (s *Store) keyOpSecret(ctx context.Context, script *script, kind requestKind, n uint64, withSecret bool, args ...any) (*rpool, keystore.Record, error) {
	p, err := s.poolOf(ctx, n)
	if err != nil || p == nil {
		return nil, keystore.Record{}, cmp.Or(err, keystore.ErrNoKey)
	}
	res, strs, err := s.run(ctx, p, script, kind, append([]any{int64(n & maxLocal)}, args...)...)
	if err != nil {
		return p, keystore.Record{}, err
	}
	if res[0] != statusOK {
		return p, keystore.Record{}, keyError(res[0])
	}
	r, err := s.keyReply(p, res, strs, withSecret)
	return p, r, err
}

// Unblock implements keystore.Backend.
func (s *Store) Unblock(ctx context.Context, n uint64, fence int64) (keystore.Record, error) {
	return s.UnblockWith(ctx, n, fence, 0, false)
}

// UnblockWith implements keystore.Backend.
func (s *Store) UnblockWith(ctx context.Context, n uint64, fence int64, cooldown time.Duration, failed bool) (keystore.Record, error) {
	f := 0
	if failed {
		f = 1
	}
	p, r, err := s.keyOp(ctx, s.scripts.unblock, mutation, n, fence, s.units(cooldown), f)
	if err == nil && r.Ext != nil && r.Ext.Status == keystore.Cooling {
		s.wakeBy(p, s.units(r.Ext.CoolingUntil.Sub(s.base)))
	}
	return r, err
}

// Restore implements keystore.Backend.
func (s *Store) Restore(ctx context.Context, n uint64) (keystore.Record, error) {
	_, r, err := s.keyOp(ctx, s.scripts.restore, mutation, n)
	return r, err
}

// Renew implements keystore.Backend.
func (s *Store) Renew(ctx context.Context, n uint64, fence int64, ttl time.Duration) (keystore.Record, error) {
	p, r, err := s.keyOpSecret(ctx, s.scripts.renew, mutation, n, true, fence, s.units(ttl), s.units(s.opts.MaxLeaseTTL))
	if err == nil {
		s.wakeBy(p, s.units(r.LeaseExpiresAt.Sub(s.base)))
	}
	return r, err
}

// KeepAlive implements keystore.Backend.
func (s *Store) KeepAlive(ctx context.Context, n uint64) (keystore.Record, error) {
	_, r, err := s.keyOp(ctx, s.scripts.keepAlive, mutation, n, s.units(s.opts.KeepAliveTTL))
	return r, err
}

// Get implements keystore.Backend.
func (s *Store) Get(ctx context.Context, n uint64) (keystore.Record, error) {
	_, r, err := s.keyOp(ctx, s.scripts.get, readOnly, n)
	return r, err
}

// Delete implements keystore.Backend.
func (s *Store) Delete(ctx context.Context, n uint64) error {
	p, err := s.poolOf(ctx, n)
	if err != nil || p == nil {
		return cmp.Or(err, keystore.ErrNoKey)
	}
	res, _, err := s.run(ctx, p, s.scripts.delete, mutation, int64(n&maxLocal))
	if err != nil {
		return err
	}
	if res[0] != statusOK {
		return keyError(res[0])
	}
	return nil
}

// Stats implements keystore.Backend.
func (s *Store) Stats(ctx context.Context, pool string) (keystore.Stats, error) {
	if err := s.usable(); err != nil {
		return keystore.Stats{}, err
	}
	p, err := s.poolNamed(ctx, pool, false)
	if err != nil || p == nil {
		return keystore.Stats{}, err
	}
	res, _, err := s.run(ctx, p, s.scripts.stats, readOnly)
	if err != nil {
		return keystore.Stats{}, err
	}
	return statsOf(res)
}

func statsOf(res []int64) (keystore.Stats, error) {
	if len(res) != 7 {
		return keystore.Stats{}, fmt.Errorf("redis store: bad stats reply %v", res)
	}
	return keystore.Stats{Total: int(res[2]), Available: int(res[3]), Blocked: int(res[4]),
		Cooling: int(res[5]), Quarantined: int(res[6])}, nil
}

// Pools implements keystore.Backend: the pools of the registry, the stats of each read
// in one pipelined pass.
func (s *Store) Pools(ctx context.Context) ([]keystore.PoolStats, error) {
	if err := s.usable(); err != nil {
		return nil, err
	}
	if err := s.readRegistry(ctx); err != nil {
		return nil, err
	}
	pools := s.reg.all()
	slices.SortFunc(pools, func(a, b *rpool) int { return cmp.Compare(a.name, b.name) })
	out := make([]keystore.PoolStats, len(pools))
	errs := make([]error, len(pools))
	s.each(pools, func(i int, p *rpool) {
		res, _, err := s.run(ctx, p, s.scripts.stats, readOnly)
		if err == nil {
			out[i].Stats, err = statsOf(res)
		}
		out[i].Name, errs[i] = p.name, err
	})
	for _, err := range errs {
		if err != nil {
			return nil, err
		}
	}
	return out, nil
}

// eachParallel is how many requests a pass over the pools has in flight at once: the
// client pipelines them.
const eachParallel = 64

// each calls f for every pool, eachParallel at a time, and returns when all are done.
func (s *Store) each(pools []*rpool, f func(i int, p *rpool)) {
	if len(pools) == 1 {
		f(0, pools[0])
		return
	}
	var wg sync.WaitGroup
	sem := make(chan struct{}, eachParallel)
	for i, p := range pools {
		sem <- struct{}{}
		wg.Go(func() {
			defer func() { <-sem }()
			f(i, p)
		})
	}
	wg.Wait()
}

// Status codes of List's script.
var listStatus = map[keystore.Status]int{"": 0, keystore.Available: 1, keystore.Blocked: 2, keystore.Cooling: 3, keystore.Quarantined: 4}

// List implements keystore.Backend. Each script looks at a bounded number of keys; in
// a storm of dead keys the expirer has yet to reach, the page takes several.
func (s *Store) List(ctx context.Context, pool string, status keystore.Status, from uint64, limit int) ([]keystore.Record, error) {
	if err := s.usable(); err != nil {
		return nil, err
	}
	p, err := s.poolNamed(ctx, pool, false)
	if err != nil || p == nil {
		return nil, err
	}
	code, ok := listStatus[status]
	if !ok {
		return nil, fmt.Errorf("redis store: no status %q", status)
	}
	local := int64(0)
	switch index := from >> localBits; {
	case index > p.index:
		return nil, nil // past the pool's keys
	case index == p.index:
		local = int64(from & maxLocal)
	}
	recs := make([]keystore.Record, 0, limit)
	for len(recs) < limit {
		want := limit - len(recs)
		res, strs, err := s.run(ctx, p, s.scripts.list, readOnly, code, local, want, want+listSlack)
		if err != nil {
			return nil, err
		}
		if len(res) < 4 || len(res) != 4+recordInts*int(res[3]) || len(strs) != 2*int(res[3]) {
			return nil, fmt.Errorf("redis store: bad list reply of %d integers and %d strings", len(res), len(strs))
		}
		count := int(res[3])
		for i := range count {
			recs = append(recs, s.record(p, res[4+recordInts*i:4+recordInts*(i+1)], strs[i], strs[count+i]))
		}
		if local = res[2]; local < 0 {
			break
		}
	}
	return recs, nil
}

// listSlack is how many keys beyond a page's one script of List may look at, to step
// over keys that turn out dead or in another state as their due transitions apply.
const listSlack = 64

// CatchUp implements keystore.Backend: it waits for the reader to reach the pool's
// newest event, so that a subscription sees every event made before it on any
// replica as past, not live. The local hub holds the same window of events as the
// stream (the newest EventRetention), so a replay with After is served from it.
func (s *Store) CatchUp(ctx context.Context, pool string) error {
	if err := s.refusing(); err != nil {
		return err
	}
	p, err := s.poolNamed(ctx, pool, false)
	if err != nil || p == nil {
		return err // not made yet: no events
	}
	// The stream's newest entry: its id is the pool's newest seq.
	last, err := s.rdb.Do(ctx, s.rdb.B().Xrevrange().Key(p.stream).End("+").Start("-").Count(1).Build()).AsXRange()
	if err != nil {
		return unavailable(err)
	}
	var newest int64
	if len(last) == 1 {
		newest, _ = strconv.ParseInt(strings.TrimSuffix(last[0].ID, "-0"), 10, 64)
	}
	timeout := time.NewTimer(catchUpTimeout)
	defer timeout.Stop()
	for {
		s.pmu.Lock()
		progress := s.progress
		s.pmu.Unlock()
		if p.lane.Events.LastSeq() >= newest {
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

// Ready implements keystore.Backend: Redis answers within readyTimeout, holds the
// namespace this replica joined, and takes changes (it may not evict keys, and has
// memory to spare: see health.go). One attempt, never retried: a readiness probe must
// fail fast when Redis is away or paused.
func (s *Store) Ready(ctx context.Context) error {
	if err := s.refusing(); err != nil {
		return err
	}
	if err := s.refusingChanges(); err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(ctx, readyTimeout)
	defer cancel()
	msgs, _, err := s.send(ctx, s.fn(s.scripts.nsCheck), s.nsKeys, []string{s.nsPrefix, s.nsID}, false, false)
	if err != nil {
		return s.unavailable(err, false, readOnly)
	}
	_, err = s.nsStatus(msgs)
	return err
}

// Close implements keystore.Backend.
func (s *Store) Close() error {
	var err error
	s.once.Do(func() {
		s.leave()
		s.cancel()
		s.rdb.Close() // also ends a blocked XREAD
		s.wg.Wait()
	})
	return err
}

// refusing fails once the store is closed or its namespace lost.
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
