// Package keystore is keypool's domain: a pool of API keys handed out under leases,
// kept alive by their users, and expired on time from a lease heap and a keep-alive queue.
//
// It knows nothing of HTTP or GraphQL. Transports talk to a Store; every Store method is
// one atomic step, so that an implementation backed by a distributed engine (one script
// per method) behaves exactly like the in-memory one. The conformance suite in
// keystore/storetest holds every implementation to the same rules.
package keystore

import (
	"context"
	"time"
)

// Status is the state of a key: AVAILABLE to be acquired, BLOCKED under a lease,
// COOLING until a cool-down ends, or QUARANTINED until restored.
type Status string

// The states of a key.
const (
	Available Status = "AVAILABLE"
	Blocked   Status = "BLOCKED"
	// Cooling keys are not handed out until Key.CoolingUntil (an upstream throttled
	// the key, or its last lease ran out and its holder may still be using it).
	Cooling Status = "COOLING"
	// Quarantined keys failed Options.QuarantineAfter times in a row and are not
	// handed out until Restore.
	Quarantined Status = "QUARANTINED"
)

// Statuses lists every state, in the order of the listing's indexes.
var Statuses = []Status{Available, Blocked, Cooling, Quarantined}

// Key is a snapshot of one key.
type Key struct {
	ID string
	// Pool names the pool the key belongs to, for its whole life.
	Pool   string
	Status Status
	// CreatedAt is when the key was generated.
	CreatedAt time.Time
	// ExpiresAt is the keep-alive deadline: the key is deleted for good at this instant
	// unless KeepAlive moves it. Never for an imported key kept until deleted.
	ExpiresAt time.Time
	// Lease is the current lease; nil unless Status is Blocked.
	Lease *Lease
	// CoolingUntil is when a COOLING key's cool-down ends; nil in every other state.
	CoolingUntil *time.Time
	// Name is an imported key's label for people; "" for none.
	Name string
	// History tells how the key has been used, to spot keys whose leases keep running out.
	History History
}

// Lease is the right, granted by Acquire, to use a key until ExpiresAt.
type Lease struct {
	KeyID string
	// Token identifies this lease: Unblock and Renew with a token succeed only for the
	// lease that holds the key now.
	Token string
	// Fence grows by one for every lease granted by the pool (a fencing token): a later
	// lease always has a larger fence.
	Fence int64
	// AcquiredAt is when the lease was granted; renewals never move it.
	AcquiredAt time.Time
	// ExpiresAt is when the key returns to AVAILABLE unless unblocked or renewed first.
	ExpiresAt time.Time
	// Holder says who took the lease, as the Acquire said it; "" when it did not.
	Holder string
	// Secret is the value the holder uses: an imported key's secret, or a generated
	// key's id. It is set only in the answers of Acquire and Renew, the holder's own;
	// "" wherever else a Lease is read.
	Secret string
}

// History counts what happened to a key over its life.
type History struct {
	// TimesAcquired counts the leases granted on the key.
	TimesAcquired int64
	// LeasesExpired counts the leases that ran out without being unblocked.
	LeasesExpired int64
	// LastAcquiredAt is when the key was last acquired; zero if never.
	LastAcquiredAt time.Time
	// Failures counts the failures recorded on the key: unblocks that said so, and
	// leases that ran out.
	Failures int64
	// ConsecutiveFailures counts the failures since the last unblock that recorded
	// none (or Restore); at Options.QuarantineAfter the key is QUARANTINED.
	ConsecutiveFailures int64
}

// LastAcquired is LastAcquiredAt, or nil if the key was never acquired.
func (h History) LastAcquired() *time.Time {
	if h.LastAcquiredAt.IsZero() {
		return nil
	}
	return &h.LastAcquiredAt
}

// Stats counts the keys of a pool, or of every pool, by state.
type Stats struct {
	// Total counts the keys in every state.
	Total       int
	Available   int
	Blocked     int
	Cooling     int
	Quarantined int
	// Waiting counts the Acquires waiting now for a key (on a shared store: those
	// waiting in this process).
	Waiting int
}

// Add returns the sums of s's and o's counts.
func (s Stats) Add(o Stats) Stats {
	return Stats{
		Total:       s.Total + o.Total,
		Available:   s.Available + o.Available,
		Blocked:     s.Blocked + o.Blocked,
		Cooling:     s.Cooling + o.Cooling,
		Quarantined: s.Quarantined + o.Quarantined,
		Waiting:     s.Waiting + o.Waiting,
	}
}

// PoolStats are one pool's counts.
type PoolStats struct {
	Name  string
	Stats Stats
}

// AcquireOptions tune one Acquire call. The zero value leases a key of the default
// pool for the default lease TTL and does not wait.
type AcquireOptions struct {
	// Pool is the pool to take a key from; "" means DefaultPool.
	Pool string
	// Holder says who takes the lease (free text, at most MaxHolder bytes, no control
	// characters); "" means nobody in particular.
	Holder string
	// TTL is the lease's length; nil means the pool's default. It must lie within
	// MinLeaseTTL..Options.MaxLeaseTTL: an explicit zero is refused, not taken as the
	// default.
	TTL *time.Duration
	// Wait is how long to wait for a key when none is free, at most MaxWait; zero means
	// answer NOT_FOUND at once. Waiters are served first come, first served.
	Wait time.Duration
}

// UnblockOptions say how a lease ends, for UnblockWith. The zero value returns the key
// to AVAILABLE and resets its consecutive failures, as Unblock does.
type UnblockOptions struct {
	// Cooldown, when set, sends the key to COOLING for that long instead of AVAILABLE,
	// MinCooldown..Options.MaxCooldown.
	Cooldown *time.Duration
	// Failed records a failure of the key; at Options.QuarantineAfter consecutive ones
	// the key goes to QUARANTINED (whatever Cooldown says). Without it the consecutive
	// count starts again from zero.
	Failed bool
}

// KeyInput is one key of an Import: a secret of the caller's and a label for people.
type KeyInput struct {
	// Secret is what the holder of a lease on the key uses, 1..MaxSecret bytes. It is
	// shown only in the answers of Acquire and Renew.
	Secret string
	// Name is a label, at most MaxName bytes without control characters; "" for none.
	Name string
}

// ImportOptions tune one Import call.
type ImportOptions struct {
	// Pool is the pool the keys join; "" means DefaultPool.
	Pool string
	// KeepAliveTTL, when set, subjects the keys to the keep-alive rule with this TTL
	// (MinKeepAliveTTL..MaxKeepAliveTTL); nil keeps them until deleted.
	KeepAliveTTL *time.Duration
}

// Never is the keep-alive deadline of an imported key kept until deleted: the last
// second of year 9999, later than any deadline, so that clients that read a deadline
// (and transports whose deadline is not nullable) need no case of their own.
var Never = time.Date(9999, time.December, 31, 23, 59, 59, 0, time.UTC)

// Limits on imported keys.
const (
	// MaxSecret is the longest secret an imported key may have, in bytes.
	MaxSecret = 4096
	// MaxName is the longest name of an imported key, in bytes.
	MaxName = 128
	// MinKeepAliveTTL and MaxKeepAliveTTL bound an Import's keep-alive TTL.
	MinKeepAliveTTL = time.Second
	MaxKeepAliveTTL = 366 * 24 * time.Hour
)

// Limits on per-request durations.
const (
	// MinLeaseTTL is the shortest lease a request may ask for.
	MinLeaseTTL = time.Second
	// MinCooldown is the shortest cool-down an unblock may ask for.
	MinCooldown = time.Second
	// MaxWait is the longest a request may wait for a free key.
	MaxWait = 30 * time.Second
)

// Bounds that every backend keeps to.
const (
	// RequestBatch is how many due transitions of the whole pool an Acquire or Stats
	// applies on its way in, so that it reflects deadlines that passed since the
	// expirer last ran, at a bounded cost.
	RequestBatch = 32
	// MaxPicks bounds the random picks of one Acquire that land on keys whose
	// keep-alive deadline has passed (each such pick deletes that key, or, in the
	// in-memory store, takes a bucket of such keys out of the picks).
	MaxPicks = 64
)

// MaxEventKeys is how many keys one subscription may follow by id.
const MaxEventKeys = 100

// Pools and holders.
const (
	// DefaultPool is the pool of every request that names none.
	DefaultPool = "default"
	// MaxPoolName is the longest pool name, in bytes.
	MaxPoolName = 64
	// MaxHolder is the longest holder, in bytes.
	MaxHolder = 128
)

// Listing.
const (
	// DefaultListFirst is the size of a page that transports ask for when their client
	// names none.
	DefaultListFirst = 100
	// MaxListFirst is the largest page List returns.
	MaxListFirst = 1000
)

// ListOptions select one page of keys.
type ListOptions struct {
	// Pool keeps only that pool's keys; "" lists every pool, ordered by name.
	Pool string
	// Status keeps only keys in that state; "" keeps every key.
	Status Status
	// First is the most keys the page holds, 1..MaxListFirst.
	First int
	// After is the EndCursor of the page before; "" starts at the first key.
	After string
}

// Page is one page of keys, in the listing's order: by pool name, then in an order
// fixed for each key over its life.
type Page struct {
	Keys []Key
	// EndCursor names the last key of the page, for ListOptions.After; "" when the page
	// is empty.
	EndCursor string
	// HasNext reports whether keys that match come after this page.
	HasNext bool
}

// SubscribeOptions select the events a subscription receives.
type SubscribeOptions struct {
	// Pool is the pool whose events to follow; "" means DefaultPool.
	Pool string
	// Types keeps only events of these types; empty means all.
	Types []EventType
	// After, when set, first replays the retained events whose Seq is larger, then
	// goes live; at or past the newest seq it goes live at once. If events after it
	// have left the ring, Subscribe fails with ECOMPACTED. Nil means live events only.
	After *int64
	// Stream, when set, is the stream After counts in: if the pool's events have
	// started again since (another stream), Subscribe fails with ESTREAMCHANGED.
	Stream string
	// Keys keeps only events of these keys (by id), at most MaxEventKeys; empty means
	// every key.
	Keys []string
}

// Store holds the named pools of keys. Every method is one atomic step and costs O(1)
// or O(log n) in the number of keys. Errors carry a Code (see ErrorCode). Pool is the
// Store; transports may wrap it (for metrics) behind this interface.
type Store interface {
	// Generate creates count new AVAILABLE keys in pool ("" means DefaultPool), each
	// kept alive until now plus the keep-alive TTL. A count outside
	// 1..Options.MaxGenerate, a bad pool name, or a new pool beyond Options.MaxPools is
	// EINVALID and creates nothing.
	Generate(ctx context.Context, pool string, count int) ([]Key, error)
	// Acquire blocks a uniformly random AVAILABLE key of opts.Pool under a new lease and
	// returns the key with its Lease set. ENOTFOUND when no key of that pool is free
	// (after opts.Wait, if any).
	Acquire(ctx context.Context, opts AcquireOptions) (Key, error)
	// Unblock returns a BLOCKED key to AVAILABLE. With a non-empty token, only the
	// current lease's token is accepted (ELEASEMISMATCH otherwise). ENOTBLOCKED if the
	// key is not BLOCKED, ENOTFOUND if there is no such key. It is UnblockWith with
	// zero options.
	Unblock(ctx context.Context, id, token string) (Key, error)
	// UnblockWith ends the lease as Unblock does, then sends the key to COOLING or
	// QUARANTINED, and counts a failure, as opts say.
	UnblockWith(ctx context.Context, id, token string, opts UnblockOptions) (Key, error)
	// Restore returns a COOLING or QUARANTINED key to AVAILABLE at once and resets its
	// consecutive failures; ENOTHELDBACK for an AVAILABLE or BLOCKED key.
	Restore(ctx context.Context, id string) (Key, error)
	// Import makes an AVAILABLE key of each input, with an id of the store's. A secret
	// already in the pool (or twice in keys) is EALREADYEXISTS, naming the position of
	// the first duplicate, and imports nothing; so are more than Options.MaxGenerate
	// keys and invalid inputs (EINVALID).
	Import(ctx context.Context, keys []KeyInput, opts ImportOptions) ([]Key, error)
	// Renew extends the live lease that token names to now plus ttl (nil: the default
	// lease TTL), capped at the lease's AcquiredAt plus Options.MaxLeaseTTL. A lease that
	// has run out is never renewed: ELEASEMISMATCH if another lease holds the key,
	// ENOTBLOCKED if none does.
	Renew(ctx context.Context, id, token string, ttl *time.Duration) (Key, error)
	// KeepAlive moves the key's keep-alive deadline to now plus the keep-alive TTL; the
	// lease is untouched.
	KeepAlive(ctx context.Context, id string) (Key, error)
	// Delete removes the key at once.
	Delete(ctx context.Context, id string) error
	// Get returns the key, or ENOTFOUND.
	Get(ctx context.Context, id string) (Key, error)
	// Stats counts the keys of pool by state; "" sums every pool's counts, read pool by
	// pool. A pool never made counts zero.
	Stats(ctx context.Context, pool string) (Stats, error)
	// Pools returns every pool made so far, ordered by name, with its counts.
	Pools(ctx context.Context) ([]PoolStats, error)
	// History returns pool's counts sampled every HistoryInterval at or after since,
	// oldest first, at most MaxHistorySamples (a longer span thinned evenly), as far
	// back as HistoryRetention and the shared HistoryBytes allow.
	History(ctx context.Context, pool string, since time.Time) ([]StatsSample, error)
	// List returns one page of keys, O(First + log n) whatever the filter.
	List(ctx context.Context, opts ListOptions) (Page, error)
	// Subscribe streams one pool's events until ctx ends or the subscriber falls too far
	// behind.
	Subscribe(ctx context.Context, opts SubscribeOptions) (*Subscription, error)
	// Ready reports whether the store can serve requests (EUNAVAILABLE when not).
	Ready(ctx context.Context) error
	// Replicas counts the servers that serve these pools now, this one included: 1
	// for an in-memory store; for a Redis store, the replicas of its namespace heard
	// from within the last few seconds.
	Replicas(ctx context.Context) (int, error)
	// Close stops the store's background work and ends every subscription.
	Close() error
}

// Options configure a pool. Zero fields take the defaults below.
type Options struct {
	// LeaseTTL is the default lease length (60 s).
	LeaseTTL time.Duration
	// KeepAliveTTL is how long a key lives without KeepAlive (5 min).
	KeepAliveTTL time.Duration
	// MaxLeaseTTL caps a lease, renewals included, counted from its AcquiredAt (1 h).
	MaxLeaseTTL time.Duration
	// MaxGenerate is the largest count one Generate accepts (10000).
	MaxGenerate int
	// MaxPools bounds how many pools may be made (1000): a Generate into one more is
	// EINVALID. A pool once made stays (its counters outlive its keys).
	MaxPools int
	// EventRetention is how many recent events of each pool are kept for replay and for
	// subscribers that lag (65536, or 4*MaxGenerate if larger: one Generate publishes up to two
	// events a key in one step, and a smaller ring would cut subscribers that read
	// promptly). A subscriber more than this many events behind is cut.
	EventRetention int
	// QuarantineAfter is how many consecutive failures send a key to QUARANTINED; 0
	// never does.
	QuarantineAfter int
	// ExpiredLeaseCooldown is how long a key whose lease ran out cools before it is
	// handed out again (its last holder may still be using it); 0 frees it at once.
	ExpiredLeaseCooldown time.Duration
	// MaxCooldown is the longest cool-down an unblock may ask for (1 h).
	MaxCooldown time.Duration
	// MaxWaiters bounds the Acquires that may wait for a key at once, in every pool
	// together (1000). One more that would wait is refused at once with ETOOMANYWAITERS
	// and changes nothing; one that finds a key free is served whatever the count.
	MaxWaiters int
	// Observer, if set, is told of transitions for metrics. Its methods must be fast
	// and must not call back into the store.
	Observer Observer
}

// Defaults for Options.
const (
	DefaultLeaseTTL       = 60 * time.Second
	DefaultKeepAliveTTL   = 5 * time.Minute
	DefaultMaxLeaseTTL    = time.Hour
	DefaultMaxGenerate    = 10000
	DefaultMaxPools       = 1000
	DefaultEventRetention = 1 << 16
	DefaultMaxCooldown    = time.Hour
	// DefaultMaxWaiters: a waiting Acquire holds a goroutine or two, its request and
	// its connection (a file descriptor) for up to MaxWait; over HTTP that measured
	// about 40 KB of RSS each, so 1000 waiters cost some 40 MB and 1000 descriptors,
	// well inside a small server's memory and the usual limits on open files.
	DefaultMaxWaiters = 1000
)

// WithDefaults returns o with every zero field set to its default.
func (o Options) WithDefaults() Options {
	if o.LeaseTTL == 0 {
		o.LeaseTTL = DefaultLeaseTTL
	}
	if o.KeepAliveTTL == 0 {
		o.KeepAliveTTL = DefaultKeepAliveTTL
	}
	if o.MaxLeaseTTL == 0 {
		o.MaxLeaseTTL = DefaultMaxLeaseTTL
	}
	if o.MaxGenerate == 0 {
		o.MaxGenerate = DefaultMaxGenerate
	}
	if o.MaxPools == 0 {
		o.MaxPools = DefaultMaxPools
	}
	if o.EventRetention == 0 {
		o.EventRetention = max(DefaultEventRetention, 4*o.MaxGenerate)
	}
	if o.MaxWaiters == 0 {
		o.MaxWaiters = DefaultMaxWaiters
	}
	if o.MaxCooldown == 0 {
		o.MaxCooldown = DefaultMaxCooldown
	}
	if o.Observer == nil {
		o.Observer = NopObserver{}
	}
	return o
}

// Observer hears of what the store does on its own, for metrics.
type Observer interface {
	// Expired is called once per automatic transition (EventReleased, EventRecovered
	// or EventExpired) with how late it was applied after its deadline.
	Expired(t EventType, lateness time.Duration)
	// Waited is called when an Acquire that waited ends, served or not.
	Waited(d time.Duration, served bool)
	// WaitersChanged is called with the change in the number of waiting Acquires.
	WaitersChanged(delta int)
	// SubscribersChanged is called with the change in the number of live subscriptions.
	SubscribersChanged(delta int)
	// SlowConsumerCut is called when a subscription is ended for falling behind.
	SlowConsumerCut()
}

// NopObserver ignores everything.
type NopObserver struct{}

func (NopObserver) Expired(EventType, time.Duration) {}
func (NopObserver) Waited(time.Duration, bool)       {}
func (NopObserver) WaitersChanged(int)               {}
func (NopObserver) SubscribersChanged(int)           {}
func (NopObserver) SlowConsumerCut()                 {}

// TTL returns d as an explicit lease TTL, for AcquireOptions.TTL and Renew.
func TTL(d time.Duration) *time.Duration { return &d }
