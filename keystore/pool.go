package keystore

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"math"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"
	"unicode"
	"unicode/utf8"

	"github.com/jonboulle/clockwork"

	"github.com/keypool/keypool/redact"
)

// Pool is the domain front of the pools of keys, and the one Store that transports
// use. It owns every rule that does not depend on where the keys live: validation and
// the wording of errors, building Keys and Leases from a backend's records, each
// pool's lane (its first come, first served queue of waiting Acquires, served with
// timers here, and its event hub with the subscriptions' filters), and the walk of
// List over pools and pages. Under it a Backend makes each step atomic where the keys
// live: in this process's memory (NewMemory) or in Redis (package redisstore).
type Pool struct {
	backend Backend
	ids     *IDCodec
	clock   clockwork.Clock
	opts    Options
	lanes   *Lanes
	// waitSlots counts the Acquires that may wait, at most opts.MaxWaiters: each takes
	// a slot before its first try and gives it back when it returns.
	waitSlots atomic.Int64

	history history // of the pools' counts, while RecordHistory runs

	stop      chan struct{} // closed when waiting ends: StopWaiting or Close
	stopOnce  sync.Once
	closeOnce sync.Once
	closeErr  error
}

var _ Store = (*Pool)(nil)

// Backend is where a pool's keys live. Each method is one atomic step, O(1) or
// O(log n), and applies the deadlines that are due for the keys it touches first, so
// that it never acts on a transition that is due but not applied. Keys are named by
// their numbers, leases by their fences; the Pool turns both into ids and tokens.
//
// Pools are named by valid names (PoolName), never "". A backend publishes each
// pool's events to its lane's hub and serves its lane's waiters (Env.Lanes).
//
// Failures are ErrNoKey, ErrNotBlocked, ErrLeaseMismatch or ErrTooManyPools (the Pool
// words them), an *Error with a code (EUNAVAILABLE), or any other error, which clients
// see as internal.
type Backend interface {
	// Generate creates count AVAILABLE keys in pool, kept alive for
	// Options.KeepAliveTTL, making the pool if need be (ErrTooManyPools beyond
	// Options.MaxPools).
	Generate(ctx context.Context, pool string, count int) ([]Record, error)
	// Acquire leases a uniformly random live AVAILABLE key of pool for ttl, to holder;
	// its record carries the key's Secret if it was imported.
	// With none free it returns ErrNoKey, and if w is not nil it first queues w in the
	// pool's lane (WaitQueue.Push) in the same atomic step, or has queued it before the
	// step (WaitQueue.Join), so that a key freed after the step goes to the waiters (see
	// WaitQueue). A key owed to a waiter that the backend has yet to serve does not
	// count as free.
	Acquire(ctx context.Context, pool string, ttl time.Duration, holder string, w *Waiter) (Record, error)
	// Unblock returns key n to AVAILABLE. fence 0 accepts any lease; another fence
	// only the current lease's.
	Unblock(ctx context.Context, n uint64, fence int64) (Record, error)
	// UnblockWith ends the lease of key n as Unblock does, then counts a failure if
	// failed (resetting the consecutive count otherwise) and sends the key to
	// QUARANTINED at Options.QuarantineAfter consecutive failures, else to COOLING for
	// cooldown if it is not zero, else to AVAILABLE.
	UnblockWith(ctx context.Context, n uint64, fence int64, cooldown time.Duration, failed bool) (Record, error)
	// Restore returns COOLING or QUARANTINED key n to AVAILABLE and resets its
	// consecutive failures; ErrNotHeldBack in any other state.
	Restore(ctx context.Context, n uint64) (Record, error)
	// Import makes an AVAILABLE key of each input in pool (making the pool if need be),
	// kept alive for keepAliveTTL, or until deleted if it is zero. A secret that the
	// pool holds, or that an earlier input repeats, is a *DuplicateError naming the
	// first such input, and nothing is imported. The secrets are found by a keyed hash
	// (SecretDigest), in O(1) each.
	Import(ctx context.Context, pool string, keys []KeyInput, keepAliveTTL time.Duration) ([]Record, error)
	// Renew moves the deadline of the lease with fence to now+ttl, capped at its
	// AcquiredAt plus Options.MaxLeaseTTL; its record carries the key's Secret if it
	// was imported.
	Renew(ctx context.Context, n uint64, fence int64, ttl time.Duration) (Record, error)
	// KeepAlive moves key n's keep-alive deadline to now plus Options.KeepAliveTTL.
	KeepAlive(ctx context.Context, n uint64) (Record, error)
	// Get returns key n.
	Get(ctx context.Context, n uint64) (Record, error)
	// Delete removes key n.
	Delete(ctx context.Context, n uint64) error
	// Stats counts the keys of pool by state (Waiting aside); zero for a pool not made.
	Stats(ctx context.Context, pool string) (Stats, error)
	// Pools returns every pool made, ordered by name, with its counts (Waiting aside).
	Pools(ctx context.Context) ([]PoolStats, error)
	// List returns up to limit keys of pool whose positions (Record.Pos) are at least
	// from, in order of position, only those in state status unless it is "": O(limit
	// + log n), never walking keys of another state.
	List(ctx context.Context, pool string, status Status, from uint64, limit int) ([]Record, error)
	// CatchUp returns once every event of pool made before the call, by any replica, is
	// in the pool's hub, so that a new subscription sees it as past.
	CatchUp(ctx context.Context, pool string) error
	// Ready reports whether the backend can serve requests.
	Ready(ctx context.Context) error
	// Replicas counts the servers that serve these pools now, this one included.
	Replicas(ctx context.Context) (int, error)
	// Close stops the backend's background work.
	Close() error
}

// Record is a backend's copy of one key.
type Record struct {
	N uint64
	// Pos is the key's position in its pool's listing order, which it keeps while it
	// lives; the backend chooses it (the key number will do).
	Pos       uint64
	Pool      string
	CreatedAt time.Time
	// ExpiresAt is the keep-alive deadline.
	ExpiresAt time.Time
	// Fence is the current lease's, 0 when the key is AVAILABLE.
	Fence int64
	// AcquiredAt and LeaseExpiresAt belong to the current lease; AcquiredAt also to
	// the last one, for History.
	AcquiredAt     time.Time
	LeaseExpiresAt time.Time
	TimesAcquired  int64
	LeasesExpired  int64
	// Holder is the current lease's.
	Holder string
	// Ext holds what a key may have beyond a leased or free key: nil when it has none
	// of it, so that the records of most keys (all of a Generate's) stay small.
	Ext *RecordExt
}

// RecordExt is the part of a Record that keys held back, keys that failed and imported
// keys have.
type RecordExt struct {
	// Status is COOLING or QUARANTINED; "" says AVAILABLE or BLOCKED as Fence does.
	Status Status
	// CoolingUntil is a COOLING key's end of cool-down.
	CoolingUntil time.Time
	// Failures and ConsecutiveFailures count the key's failures (History).
	Failures            int64
	ConsecutiveFailures int64
	// Name is an imported key's label.
	Name string
	// Secret is an imported key's secret, in the records of Acquire and Renew (the
	// Pool shows it in their answers only).
	Secret string
}

// The failures of a backend's per-key steps, which the Pool words for clients.
var (
	ErrNoKey         = errors.New("no such key")
	ErrNotBlocked    = errors.New("key not blocked")
	ErrLeaseMismatch = errors.New("lease mismatch")
	ErrTooManyPools  = errors.New("too many pools")
	ErrNotHeldBack   = errors.New("key not held back")
)

// DuplicateError is a backend's refusal of an Import: the input at Index holds a
// secret that the pool holds already, or that an earlier input repeats.
type DuplicateError struct{ Index int }

func (e *DuplicateError) Error() string {
	return fmt.Sprintf("keys[%d]: secret held already", e.Index)
}

// Env is what a Pool gives the backend it is built on.
type Env struct {
	Options Options // with defaults, validated
	Clock   clockwork.Clock
	// Lanes hold each pool's hub, which takes the backend's events of the pool in the
	// order of its transitions, and its queue of waiting Acquires, which the backend
	// serves as keys of the pool come free.
	Lanes *Lanes
}

// NewPool validates opts, builds a backend with open on the pools' lanes, and returns
// the pool. open also returns the IDCodec of the pool's ids.
func NewPool(clock clockwork.Clock, opts Options, open func(Env) (Backend, *IDCodec, error)) (*Pool, error) {
	opts = opts.WithDefaults()
	if err := opts.Validate(); err != nil {
		return nil, err
	}
	p := &Pool{
		clock: clock,
		opts:  opts,
		lanes: newLanes(opts),
		stop:  make(chan struct{}),
	}
	b, ids, err := open(Env{Options: opts, Clock: clock, Lanes: p.lanes})
	if err != nil {
		return nil, err
	}
	p.backend, p.ids = b, ids
	return p, nil
}

// Validate reports the first option that no pool can work with.
func (o Options) Validate() error {
	switch {
	case o.LeaseTTL <= 0:
		return fmt.Errorf("lease TTL must be positive, got %v", o.LeaseTTL)
	case o.KeepAliveTTL <= 0:
		return fmt.Errorf("keep-alive TTL must be positive, got %v", o.KeepAliveTTL)
	case o.MaxLeaseTTL < o.LeaseTTL:
		return fmt.Errorf("max lease TTL %v is shorter than the lease TTL %v", o.MaxLeaseTTL, o.LeaseTTL)
	case o.MaxGenerate < 1:
		return fmt.Errorf("max generate must be at least 1, got %d", o.MaxGenerate)
	case o.EventRetention < 1:
		return fmt.Errorf("event retention must be at least 1, got %d", o.EventRetention)
	case o.MaxWaiters < 1:
		return fmt.Errorf("max waiters must be at least 1, got %d", o.MaxWaiters)
	case o.MaxPools < 1:
		return fmt.Errorf("max pools must be at least 1, got %d", o.MaxPools)
	case o.QuarantineAfter < 0:
		return fmt.Errorf("quarantine-after must be at least 0, got %d", o.QuarantineAfter)
	case o.ExpiredLeaseCooldown < 0:
		return fmt.Errorf("expired-lease cool-down must be at least 0s, got %v", o.ExpiredLeaseCooldown)
	case o.MaxCooldown < MinCooldown:
		return fmt.Errorf("max cool-down must be at least %v, got %v", MinCooldown, o.MaxCooldown)
	}
	return nil
}

// Generate implements Store.
func (p *Pool) Generate(ctx context.Context, pool string, count int) ([]Key, error) {
	if count < 1 || count > p.opts.MaxGenerate {
		return nil, Errorf(EINVALID, "count must be between 1 and %d, got %d", p.opts.MaxGenerate, count)
	}
	pool, err := PoolName(pool)
	if err != nil {
		return nil, err
	}
	recs, err := p.backend.Generate(ctx, pool, count)
	return p.made(recs, err, pool)
}

// made builds the keys a Generate or Import made, or words its failure.
func (p *Pool) made(recs []Record, err error, pool string) ([]Key, error) {
	var dup *DuplicateError
	switch {
	case errors.Is(err, ErrTooManyPools):
		return nil, Errorf(EINVALID, "there are %d pools, the most this server allows (-max-pools): pool %s cannot be made", p.opts.MaxPools, quoteName(pool))
	case errors.As(err, &dup):
		// Never the secret itself: only where it was.
		e := Errorf(EALREADYEXISTS, "keys[%d]: pool %s holds this secret already (or an earlier key of the request does): nothing was imported", dup.Index, quoteName(pool))
		e.Index = dup.Index
		return nil, e
	case err != nil:
		return nil, err
	}
	keys := make([]Key, len(recs))
	for i := range recs {
		keys[i] = p.key(recs[i])
	}
	return keys, nil
}

// Import implements Store.
func (p *Pool) Import(ctx context.Context, keys []KeyInput, opts ImportOptions) ([]Key, error) {
	if len(keys) < 1 || len(keys) > p.opts.MaxGenerate {
		return nil, Errorf(EINVALID, "keys must hold between 1 and %d keys, got %d", p.opts.MaxGenerate, len(keys))
	}
	for i, k := range keys {
		if len(k.Secret) < 1 || len(k.Secret) > MaxSecret {
			return nil, Errorf(EINVALID, "keys[%d]: a secret must be 1 to %d bytes, got %d", i, MaxSecret, len(k.Secret))
		}
		switch {
		case len(k.Name) > MaxName:
			return nil, Errorf(EINVALID, "keys[%d]: a name must be at most %d bytes, got %d", i, MaxName, len(k.Name))
		case !utf8.ValidString(k.Name) || strings.ContainsFunc(k.Name, unicode.IsControl):
			return nil, Errorf(EINVALID, "keys[%d]: a name must be text without control characters", i)
		}
	}
	var keepAlive time.Duration
	if opts.KeepAliveTTL != nil {
		keepAlive = *opts.KeepAliveTTL
		if keepAlive < MinKeepAliveTTL || keepAlive > MaxKeepAliveTTL {
			return nil, Errorf(EINVALID, "keepAliveTTL must be between %v and %v, got %v", MinKeepAliveTTL, MaxKeepAliveTTL, keepAlive)
		}
	}
	pool, err := PoolName(opts.Pool)
	if err != nil {
		return nil, err
	}
	recs, err := p.backend.Import(ctx, pool, keys, keepAlive)
	return p.made(recs, err, pool)
}

// leaseTTL checks a requested lease TTL; nil means the pool's default.
func (p *Pool) leaseTTL(ttl *time.Duration) (time.Duration, error) {
	if ttl == nil {
		return p.opts.LeaseTTL, nil
	}
	if *ttl < MinLeaseTTL || *ttl > p.opts.MaxLeaseTTL {
		return 0, Errorf(EINVALID, "ttl must be between %v and %v, got %v", MinLeaseTTL, p.opts.MaxLeaseTTL, *ttl)
	}
	return *ttl, nil
}

// Acquire implements Store.
func (p *Pool) Acquire(ctx context.Context, opts AcquireOptions) (Key, error) {
	ttl, err := p.leaseTTL(opts.TTL)
	if err != nil {
		return Key{}, err
	}
	if opts.Wait < 0 || opts.Wait > MaxWait {
		return Key{}, Errorf(EINVALID, "wait must be between 0s and %v, got %v", MaxWait, opts.Wait)
	}
	pool, err := PoolName(opts.Pool)
	if err != nil {
		return Key{}, err
	}
	if err := checkHolder(opts.Holder); err != nil {
		return Key{}, err
	}
	if opts.Wait == 0 {
		rec, err := p.backend.Acquire(ctx, pool, ttl, opts.Holder, nil)
		return p.leasedOr(rec, err, "")
	}
	if err := p.waitStopped(); err != nil {
		return Key{}, err
	}
	if _, err := p.lanes.Get(pool); err != nil {
		return Key{}, err // a line to wait in, within the bound on lanes
	}
	if !p.takeWaitSlot() {
		// As many Acquires wait as the pool allows: this one may not wait, but a key
		// that is free now is still its, as if it had asked for no wait.
		rec, err := p.backend.Acquire(ctx, pool, ttl, opts.Holder, nil)
		if errors.Is(err, ErrNoKey) {
			return Key{}, Errorf(ETOOMANYWAITERS, "no key is available, and %d acquires are waiting already, the most this server allows: retry later", p.opts.MaxWaiters)
		}
		return p.leasedOr(rec, err, "")
	}
	defer p.waitSlots.Add(-1)
	// The timer exists before the backend may queue the waiter, so that whoever sees
	// it queued (a test moving a fake clock) moves the clock after the timer is armed.
	start := p.clock.Now()
	timer := p.clock.NewTimer(opts.Wait)
	defer timer.Stop()
	w := newWaiter(ctx, pool, ttl, opts.Holder)
	rec, err := p.backend.Acquire(ctx, pool, ttl, opts.Holder, w)
	if !errors.Is(err, ErrNoKey) {
		return p.leasedOr(rec, err, "")
	}
	key, err := p.wait(ctx, w, timer, opts.Wait)
	p.opts.Observer.Waited(p.clock.Since(start), err == nil)
	return key, err
}

// takeWaitSlot takes one of the Options.MaxWaiters slots of waiting Acquires, or
// reports false when none is left. The bound is the pool's, whatever its backend: each
// waiter costs this process a goroutine, a request and its connection.
func (p *Pool) takeWaitSlot() bool {
	for {
		n := p.waitSlots.Load()
		if n >= int64(p.opts.MaxWaiters) {
			return false
		}
		if p.waitSlots.CompareAndSwap(n, n+1) {
			return true
		}
	}
}

// wait blocks until w is handed a key, its wait runs out, its client leaves or
// waiting stops.
func (p *Pool) wait(ctx context.Context, w *Waiter, timer clockwork.Timer, d time.Duration) (Key, error) {
	var err error
	select {
	case rec, served := <-w.got:
		if served {
			return p.leased(rec), nil
		}
		// Given up, which happens only once its client has left.
		err = context.Cause(ctx)
	case <-timer.Chan():
		err = Errorf(ENOTFOUND, "no key became available within %v", d)
	case <-ctx.Done():
		err = ctx.Err()
	case <-p.stop:
		err = errStopping
	}
	if p.lanes.Made(w.pool).Waiters.leave(w) {
		return Key{}, err
	}
	// A backend took w out of line as we left: it hands w a key or gives it up, at
	// once (a key it has just freed) or within one backend step.
	rec, handed := <-w.got
	if !handed {
		return Key{}, err
	}
	key := p.leased(rec)
	if ctx.Err() == nil && p.waitStopped() == nil {
		return key, nil
	}
	// The client is gone: it never sees the key, which goes to the next in line.
	_, _ = p.backend.Unblock(context.WithoutCancel(ctx), rec.N, rec.Fence)
	return Key{}, err
}

var errStopping = Errorf(EUNAVAILABLE, "the server is shutting down")

func (p *Pool) waitStopped() error {
	select {
	case <-p.stop:
		return errStopping
	default:
		return nil
	}
}

// StopWaiting answers every waiting Acquire, and every later one that would wait,
// with EUNAVAILABLE at once; the rest of the pool goes on serving. A server calls it
// when it begins to shut down, so that waiters do not hold up the shutdown.
func (p *Pool) StopWaiting() { p.stopOnce.Do(func() { close(p.stop) }) }

// Unblock implements Store.
func (p *Pool) Unblock(ctx context.Context, id, token string) (Key, error) {
	return p.UnblockWith(ctx, id, token, UnblockOptions{})
}

// UnblockWith implements Store.
func (p *Pool) UnblockWith(ctx context.Context, id, token string, opts UnblockOptions) (Key, error) {
	var cooldown time.Duration
	if opts.Cooldown != nil {
		cooldown = *opts.Cooldown
		if cooldown < MinCooldown || cooldown > p.opts.MaxCooldown {
			return Key{}, Errorf(EINVALID, "cooldown must be between %v and %v, got %v", MinCooldown, p.opts.MaxCooldown, cooldown)
		}
	}
	n, ok := p.ids.ParseKeyID(id)
	if !ok {
		return Key{}, notFound(id)
	}
	fence := int64(0)
	if token != "" {
		if fence, ok = p.parseToken(n, token); !ok {
			// A token of no lease of this key matches no lease; the backend still
			// says whether the key exists and is blocked.
			fence = -1
		}
	}
	var rec Record
	var err error
	if opts == (UnblockOptions{}) {
		rec, err = p.backend.Unblock(ctx, n, fence)
	} else {
		rec, err = p.backend.UnblockWith(ctx, n, fence, cooldown, opts.Failed)
	}
	return p.keyOr(rec, err, id)
}

// Restore implements Store.
func (p *Pool) Restore(ctx context.Context, id string) (Key, error) {
	return p.byID(id, p.backend.Restore, ctx)
}

// Renew implements Store.
func (p *Pool) Renew(ctx context.Context, id, token string, ttl *time.Duration) (Key, error) {
	d, err := p.leaseTTL(ttl)
	if err != nil {
		return Key{}, err
	}
	if token == "" {
		return Key{}, Errorf(EINVALID, "renew needs the lease's token")
	}
	n, ok := p.ids.ParseKeyID(id)
	if !ok {
		return Key{}, notFound(id)
	}
	fence, ok := p.parseToken(n, token)
	if !ok {
		fence = -1 // names no lease of this key: matches none
	}
	rec, err := p.backend.Renew(ctx, n, fence, d)
	return p.leasedOr(rec, err, id)
}

// KeepAlive implements Store.
func (p *Pool) KeepAlive(ctx context.Context, id string) (Key, error) {
	return p.byID(id, p.backend.KeepAlive, ctx)
}

// Get implements Store.
func (p *Pool) Get(ctx context.Context, id string) (Key, error) {
	return p.byID(id, p.backend.Get, ctx)
}

// Delete implements Store.
func (p *Pool) Delete(ctx context.Context, id string) error {
	n, ok := p.ids.ParseKeyID(id)
	if !ok {
		return notFound(id)
	}
	_, err := p.keyOr(Record{}, p.backend.Delete(ctx, n), id)
	return err
}

func (p *Pool) byID(id string, step func(context.Context, uint64) (Record, error), ctx context.Context) (Key, error) {
	n, ok := p.ids.ParseKeyID(id)
	if !ok {
		return Key{}, notFound(id)
	}
	rec, err := step(ctx, n)
	return p.keyOr(rec, err, id)
}

// parseToken returns the fence a token of key n names; false for a string that names
// no lease of that key.
func (p *Pool) parseToken(n uint64, token string) (int64, bool) {
	fence, ok := p.ids.ParseToken(n, token)
	return fence, ok && fence > 0
}

// keyOr builds the Key of rec, or words a backend's failure for key id ("" for
// Acquire, which names no key).
func (p *Pool) keyOr(rec Record, err error, id string) (Key, error) {
	switch {
	case err == nil:
		return p.key(rec), nil
	case errors.Is(err, ErrNoKey) && id == "":
		return Key{}, Errorf(ENOTFOUND, "no key is available")
	case errors.Is(err, ErrNoKey):
		return Key{}, notFound(id)
	case errors.Is(err, ErrNotBlocked):
		return Key{}, Errorf(ENOTBLOCKED, "key %s is not blocked", ShortID(id))
	case errors.Is(err, ErrLeaseMismatch):
		return Key{}, Errorf(ELEASEMISMATCH, "token does not match the current lease of key %s", ShortID(id))
	case errors.Is(err, ErrNotHeldBack):
		return Key{}, Errorf(ENOTHELDBACK, "key %s is neither COOLING nor QUARANTINED", ShortID(id))
	}
	return Key{}, err
}

// leasedOr is keyOr for the holder's own answers (Acquire, Renew): the lease carries
// its secret.
func (p *Pool) leasedOr(rec Record, err error, id string) (Key, error) {
	if err != nil {
		return p.keyOr(rec, err, id)
	}
	return p.leased(rec), nil
}

// leased builds the holder's view of a leased record: the key with the lease's secret,
// the imported one or else the key's id.
func (p *Pool) leased(r Record) Key {
	k := p.key(r)
	if k.Lease != nil {
		k.Lease.Secret = k.ID
		if r.Ext != nil && r.Ext.Secret != "" {
			k.Lease.Secret = r.Ext.Secret
		}
	}
	return k
}

func notFound(id string) error { return Errorf(ENOTFOUND, "no key %s", ShortID(id)) }

// ShortID keeps enough of an id to follow it in messages without repeating it whole
// (or repeating kilobytes of garbage sent as an id), quoted; logs cut ids the same way.
func ShortID(id string) string { return fmt.Sprintf("%q", redact.KeyID(id)) }

// key builds the client's view of a record.
func (p *Pool) key(r Record) Key {
	id := p.ids.KeyID(r.N)
	k := Key{
		ID:        id,
		Pool:      r.Pool,
		Status:    Available,
		CreatedAt: r.CreatedAt,
		ExpiresAt: r.ExpiresAt,
		History: History{
			TimesAcquired: r.TimesAcquired,
			LeasesExpired: r.LeasesExpired,
		},
	}
	if r.TimesAcquired > 0 {
		k.History.LastAcquiredAt = r.AcquiredAt
	}
	held := false
	if x := r.Ext; x != nil {
		k.Name = x.Name
		k.History.Failures, k.History.ConsecutiveFailures = x.Failures, x.ConsecutiveFailures
		switch x.Status {
		case Cooling:
			k.Status, k.CoolingUntil, held = Cooling, &x.CoolingUntil, true
		case Quarantined:
			k.Status, held = Quarantined, true
		}
	}
	if r.Fence != 0 && !held {
		k.Status = Blocked
		k.Lease = &Lease{
			KeyID:      id,
			Token:      p.ids.Token(r.N, r.Fence),
			Fence:      r.Fence,
			AcquiredAt: r.AcquiredAt,
			ExpiresAt:  r.LeaseExpiresAt,
			Holder:     r.Holder,
		}
	}
	return k
}

// Stats implements Store.
func (p *Pool) Stats(ctx context.Context, pool string) (Stats, error) {
	if pool == "" {
		pools, err := p.Pools(ctx)
		var sum Stats
		for _, ps := range pools {
			sum = sum.Add(ps.Stats)
		}
		return sum, err
	}
	if _, err := PoolName(pool); err != nil {
		return Stats{}, err
	}
	s, err := p.backend.Stats(ctx, pool)
	s.Waiting = p.waiting(pool)
	return s, err
}

// waiting counts the Acquires waiting for a key of pool in this process.
func (p *Pool) waiting(pool string) int {
	if lane := p.lanes.Peek(pool); lane != nil {
		return lane.Waiters.Len()
	}
	return 0
}

// Pools implements Store. The default pool is always among them, made or not, so that
// a new server shows it.
func (p *Pool) Pools(ctx context.Context) ([]PoolStats, error) {
	pools, err := p.backend.Pools(ctx)
	if err != nil {
		return nil, err
	}
	i, made := slices.BinarySearchFunc(pools, DefaultPool, func(ps PoolStats, name string) int { return cmp.Compare(ps.Name, name) })
	if !made {
		pools = slices.Insert(pools, i, PoolStats{Name: DefaultPool})
	}
	for i := range pools {
		pools[i].Stats.Waiting = p.waiting(pools[i].Name)
	}
	return pools, nil
}

// List implements Store. Without a pool it walks the pools in order of name, skipping
// those with no key of the state asked for.
func (p *Pool) List(ctx context.Context, opts ListOptions) (Page, error) {
	first := opts.First
	if first < 1 || first > MaxListFirst {
		return Page{}, Errorf(EINVALID, "first must be between 1 and %d, got %d", MaxListFirst, opts.First)
	}
	if opts.Status != "" && !slices.Contains(Statuses, opts.Status) {
		return Page{}, Errorf(EINVALID, "unknown status %q", opts.Status)
	}
	if opts.Pool != "" {
		if _, err := PoolName(opts.Pool); err != nil {
			return Page{}, err
		}
	}
	var from string  // the pool to start in
	var after uint64 // the first position to list in it
	if opts.After != "" {
		pool, pos, ok := decodeCursor(opts.After)
		if !ok || pos == math.MaxUint64 || opts.Pool != "" && pool != opts.Pool {
			return Page{}, Errorf(EINVALID, "after is not a cursor of this listing: pass a page's endCursor as it is")
		}
		from, after = pool, pos+1
	}
	pools := []string{cmp.Or(from, opts.Pool)}
	if opts.Pool == "" {
		all, err := p.backend.Pools(ctx)
		if err != nil {
			return Page{}, err
		}
		pools = pools[:0]
		for _, ps := range all {
			if ps.Name >= from && ps.Stats.count(opts.Status) > 0 {
				pools = append(pools, ps.Name)
			}
		}
	}
	// One key more than the page, to tell whether another page follows.
	var recs []Record
	for _, pool := range pools {
		if pool != from {
			after = 0
		}
		more, err := p.backend.List(ctx, pool, opts.Status, after, first+1-len(recs))
		if err != nil {
			return Page{}, err
		}
		if recs = append(recs, more...); len(recs) > first {
			break
		}
	}
	page := Page{HasNext: len(recs) > first}
	recs = recs[:min(len(recs), first)]
	page.Keys = make([]Key, len(recs))
	for i := range recs {
		page.Keys[i] = p.key(recs[i])
	}
	if len(recs) > 0 {
		last := recs[len(recs)-1]
		page.EndCursor = encodeCursor(last.Pool, last.Pos)
	}
	return page, nil
}

// count returns how many keys are in state status; all of them for "".
func (s Stats) count(status Status) int {
	switch status {
	case Available:
		return s.Available
	case Blocked:
		return s.Blocked
	case Cooling:
		return s.Cooling
	case Quarantined:
		return s.Quarantined
	}
	return s.Total
}

// Subscribe implements Store.
func (p *Pool) Subscribe(ctx context.Context, opts SubscribeOptions) (*Subscription, error) {
	for _, t := range opts.Types {
		if !t.Valid() {
			return nil, Errorf(EINVALID, "unknown event type %q", t)
		}
	}
	if opts.After != nil && *opts.After < 0 {
		return nil, Errorf(EINVALID, "after must be at least 0, got %d", *opts.After)
	}
	if len(opts.Keys) > MaxEventKeys {
		return nil, Errorf(EINVALID, "keys may name at most %d keys, got %d", MaxEventKeys, len(opts.Keys))
	}
	pool, err := PoolName(opts.Pool)
	if err != nil {
		return nil, err
	}
	lane, err := p.lanes.Get(pool)
	if err != nil {
		return nil, err
	}
	if err := p.backend.CatchUp(ctx, pool); err != nil {
		return nil, err
	}
	return lane.Events.Subscribe(ctx, opts)
}

// Ready implements Store.
func (p *Pool) Ready(ctx context.Context) error { return p.backend.Ready(ctx) }

// Replicas implements Store.
func (p *Pool) Replicas(ctx context.Context) (int, error) { return p.backend.Replicas(ctx) }

// Close implements Store: waiting Acquires end with EUNAVAILABLE, the backend stops,
// and every subscription ends.
func (p *Pool) Close() error {
	p.closeOnce.Do(func() {
		p.StopWaiting()
		p.closeErr = p.backend.Close()
		p.lanes.each(func(l *Lane) { l.Events.Close() })
	})
	return p.closeErr
}
