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

// Status is the state of a key: AVAILABLE to be acquired, or BLOCKED under a lease.
type Status string

// The two states of a key.
const (
	Available Status = "AVAILABLE"
	Blocked   Status = "BLOCKED"
)

// Key is a snapshot of one key.
type Key struct {
	ID string
	// Pool names the pool the key belongs to, for its whole life.
	Pool   string
	Status Status
	// CreatedAt is when the key was generated.
	CreatedAt time.Time
	// ExpiresAt is the keep-alive deadline: the key is deleted for good at this instant
	// unless KeepAlive moves it.
	ExpiresAt time.Time
	// Lease is the current lease; nil unless Status is Blocked.
	Lease *Lease
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
}

// History counts what happened to a key over its life.
type History struct {
	// TimesAcquired counts the leases granted on the key.
	TimesAcquired int64
	// LeasesExpired counts the leases that ran out without being unblocked.
	LeasesExpired int64
	// LastAcquiredAt is when the key was last acquired; zero if never.
	LastAcquiredAt time.Time
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
	Total     int
	Available int
	Blocked   int
	// Waiting counts the Acquires waiting now for a key (on a shared store: those
	// waiting in this process).
	Waiting int
}

// Add returns the sums of s's and o's counts.
func (s Stats) Add(o Stats) Stats {
	return Stats{
		Total:     s.Total + o.Total,
		Available: s.Available + o.Available,
		Blocked:   s.Blocked + o.Blocked,
		Waiting:   s.Waiting + o.Waiting,
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

// Limits on per-request durations.
const (
	// MinLeaseTTL is the shortest lease a request may ask for.
	MinLeaseTTL = time.Second
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
	// key is AVAILABLE, ENOTFOUND if there is no such key.
	Unblock(ctx context.Context, id, token string) (Key, error)
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
	if o.Observer == nil {
		o.Observer = NopObserver{}
	}
	return o
}

// Observer hears of what the store does on its own, for metrics.
type Observer interface {
	// Expired is called once per automatic transition (EventReleased or EventExpired)
	// with how late it was applied after its deadline.
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
