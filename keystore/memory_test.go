package keystore_test

import (
	"context"
	"fmt"
	"math/rand/v2"
	"os"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/jonboulle/clockwork"
	"github.com/stretchr/testify/require"
	"go.uber.org/goleak"

	"github.com/keypool/keypool/keystore"
	"github.com/keypool/keypool/keystore/storetest"
)

// TestMain fails the package if any test leaves a goroutine behind: every store is
// closed by its test (the benchmarks' cached pools here), so its expirer and its
// subscriptions must be gone.
func TestMain(m *testing.M) {
	code := m.Run()
	closeBenchPools()
	if code == 0 {
		if err := goleak.Find(); err != nil {
			fmt.Fprintf(os.Stderr, "goleak: %v\n", err)
			code = 1
		}
	}
	os.Exit(code)
}

// openMemory opens an in-memory store for the conformance suite.
func openMemory(t *testing.T, clock *clockwork.FakeClock, opts keystore.Options) keystore.Store {
	t.Helper()
	m, err := keystore.NewMemory(clock, opts)
	require.NoError(t, err)
	t.Cleanup(func() { require.NoError(t, m.Close()) })
	return m
}

func TestMemoryConformance(t *testing.T) {
	storetest.Run(t, openMemory)
}

// The model-based tests below drive a store with sequences of operations and clock
// moves and check every answer, and the whole visible state after every step,
// against model: a plain reference written for clarity, not speed.

// Options of the modelled pools: small limits so that random sequences reach every
// boundary (an over-long TTL, an over-large count) often.
var modelOpts = keystore.Options{
	LeaseTTL:     time.Minute,
	KeepAliveTTL: 5 * time.Minute,
	MaxLeaseTTL:  10 * time.Minute,
	MaxGenerate:  4,
}

// modelMaxKeys caps the live keys of a modelled pool. It keeps the number of
// deadlines that fall due at one instant below the store's per-request settling batch,
// whose limit has its own test (storetest's DueTransitionsSeenByRequests).
const modelMaxKeys = 16

type modelKey struct {
	key keystore.Key // the expected snapshot, Lease nil when AVAILABLE
}

// model is the reference pool.
type model struct {
	keys      map[string]*modelKey
	order     []string // live ids, oldest first: gives each id a stable index
	gone      []string // deleted and expired ids, newest last
	tokens    []string // every token issued
	lastFence int64
}

func newModel() *model { return &model{keys: map[string]*modelKey{}} }

// settle applies every transition due at now: a lease that has run out ends (unless
// the key dies at the same instant or earlier), and a key not kept alive is gone.
func (m *model) settle(now time.Time) {
	for _, id := range slices.Clone(m.order) {
		k := m.keys[id]
		if l := k.key.Lease; l != nil && !now.Before(l.ExpiresAt) && l.ExpiresAt.Before(k.key.ExpiresAt) {
			k.key.Lease = nil
			k.key.Status = keystore.Available
			k.key.History.LeasesExpired++
		}
		if !now.Before(k.key.ExpiresAt) {
			m.forget(id)
		}
	}
}

func (m *model) forget(id string) {
	delete(m.keys, id)
	m.order = slices.DeleteFunc(m.order, func(s string) bool { return s == id })
	m.gone = append(m.gone, id)
}

func (m *model) stats() keystore.Stats {
	var s keystore.Stats
	for _, k := range m.keys {
		s.Total++
		if k.key.Lease == nil {
			s.Available++
		} else {
			s.Blocked++
		}
	}
	return s
}

// deadlines lists the future deadlines of the pool in order, to land the clock on them.
func (m *model) deadlines(now time.Time) []time.Time {
	var ds []time.Time
	for _, k := range m.keys {
		ds = append(ds, k.key.ExpiresAt)
		if k.key.Lease != nil {
			ds = append(ds, k.key.Lease.ExpiresAt)
		}
	}
	ds = slices.DeleteFunc(ds, func(d time.Time) bool { return !d.After(now) })
	slices.SortFunc(ds, time.Time.Compare)
	return ds
}

// opKind names a step of a sequence.
type opKind uint8

const (
	opGenerate opKind = iota
	opAcquire
	opUnblock
	opRenew
	opKeepAlive
	opDelete
	opGet
	opStats
	opAdvance
	opKinds
)

// op is one step. Its arguments are bytes, read against the model's state when the
// step runs (an id is an index into the ids the model knows), so that any byte
// string is a valid sequence for the fuzzer.
type op struct {
	kind    opKind
	a, b, c uint8
}

func (o op) String() string { return fmt.Sprintf("{%d %d %d %d}", o.kind, o.a, o.b, o.c) }

// ttlChoices mixes the default (nil), an explicit zero, the limits and one
// nanosecond past each.
var ttlChoices = []*time.Duration{nil, nil, keystore.TTL(0), keystore.TTL(keystore.MinLeaseTTL - 1), keystore.TTL(keystore.MinLeaseTTL),
	keystore.TTL(2 * time.Second), keystore.TTL(45 * time.Second), keystore.TTL(90 * time.Second),
	keystore.TTL(modelOpts.MaxLeaseTTL), keystore.TTL(modelOpts.MaxLeaseTTL + 1), keystore.TTL(-time.Second)}

func validTTL(ttl *time.Duration) bool {
	return ttl == nil || (*ttl >= keystore.MinLeaseTTL && *ttl <= modelOpts.MaxLeaseTTL)
}

func leaseLength(ttl *time.Duration) time.Duration {
	if ttl == nil {
		return modelOpts.LeaseTTL
	}
	return *ttl
}

func ttlString(ttl *time.Duration) string {
	if ttl == nil {
		return "default"
	}
	return ttl.String()
}

// pickID chooses among the live ids, a few gone ones and two that never existed.
func (m *model) pickID(a uint8) string {
	candidates := slices.Clone(m.order)
	candidates = append(candidates, m.gone[max(0, len(m.gone)-4):]...)
	candidates = append(candidates, "", "no such key")
	return candidates[int(a)%len(candidates)]
}

// pickToken chooses no token, the key's current one, any issued one or garbage.
func (m *model) pickToken(b uint8, id string) string {
	switch b % 4 {
	case 0:
		return ""
	case 1:
		if k := m.keys[id]; k != nil && k.key.Lease != nil {
			return k.key.Lease.Token
		}
		fallthrough
	case 2:
		if len(m.tokens) > 0 {
			return m.tokens[int(b/4)%len(m.tokens)]
		}
	}
	return "garbage-token"
}

// runner applies ops to a store and to the model, checking one against the other.
type runner struct {
	t     testing.TB
	ctx   context.Context
	clock *clockwork.FakeClock
	store keystore.Store
	m     *model
	log   []string // the steps so far, for failure messages
}

func newRunner(t testing.TB) *runner {
	clock := clockwork.NewFakeClockAt(storetest.Start)
	store, err := keystore.NewMemory(clock, modelOpts)
	require.NoError(t, err)
	return &runner{t: t, ctx: context.Background(), clock: clock, store: store, m: newModel()}
}

func (r *runner) close() { require.NoError(r.t, r.store.Close()) }

// fail reports a mismatch with the steps that led to it.
func (r *runner) fail(format string, args ...any) {
	r.t.Helper()
	r.t.Fatalf("%s\nsteps:\n  %s", fmt.Sprintf(format, args...), strings.Join(r.log, "\n  "))
}

func (r *runner) expectCode(err error, codes ...keystore.Code) {
	r.t.Helper()
	if got := keystore.ErrorCode(err); !slices.Contains(codes, got) {
		r.fail("want error code %v, got %q (%v)", codes, got, err)
	}
}

func (r *runner) expectKey(want, got keystore.Key) {
	r.t.Helper()
	if msg := diffKey(want, got); msg != "" {
		r.fail("key %s: %s\nwant %+v lease %+v\ngot  %+v lease %+v", want.ID, msg, want, want.Lease, got, got.Lease)
	}
}

// diffKey names the first field where two snapshots differ, or returns "".
func diffKey(want, got keystore.Key) string {
	switch {
	case want.ID != got.ID:
		return "ID"
	case want.Status != got.Status:
		return "Status"
	case !want.CreatedAt.Equal(got.CreatedAt):
		return "CreatedAt"
	case !want.ExpiresAt.Equal(got.ExpiresAt):
		return "ExpiresAt"
	case want.History.TimesAcquired != got.History.TimesAcquired:
		return "History.TimesAcquired"
	case want.History.LeasesExpired != got.History.LeasesExpired:
		return "History.LeasesExpired"
	case !want.History.LastAcquiredAt.Equal(got.History.LastAcquiredAt):
		return "History.LastAcquiredAt"
	case (want.Lease == nil) != (got.Lease == nil):
		return "Lease presence"
	case want.Lease == nil:
		return ""
	case *want.Lease != *got.Lease && !(want.Lease.KeyID == got.Lease.KeyID && want.Lease.Token == got.Lease.Token &&
		want.Lease.Fence == got.Lease.Fence && want.Lease.AcquiredAt.Equal(got.Lease.AcquiredAt) &&
		want.Lease.ExpiresAt.Equal(got.Lease.ExpiresAt)):
		return "Lease"
	}
	return ""
}

// step applies o and checks its answer and the pool's state afterwards.
func (r *runner) step(o op) {
	r.t.Helper()
	m := r.m
	now := r.clock.Now()
	m.settle(now)
	ctx := r.ctx
	switch o.kind {
	case opGenerate:
		count := int(o.a%7) - 1 // -1..5 around the limit of 4
		if len(m.order)+max(count, 0) > modelMaxKeys {
			r.log = append(r.log, "stats (generate skipped: pool full)")
			break
		}
		r.log = append(r.log, fmt.Sprintf("generate %d", count))
		keys, err := r.store.Generate(ctx, "", count)
		if count < 1 || count > modelOpts.MaxGenerate {
			r.expectCode(err, keystore.EINVALID)
			break
		}
		r.expectCode(err, "")
		if len(keys) != count {
			r.fail("generate %d returned %d keys", count, len(keys))
		}
		for _, k := range keys {
			if _, dup := m.keys[k.ID]; dup || slices.Contains(m.gone, k.ID) || len(k.ID) < 20 {
				r.fail("generate returned a reused or short id %q", k.ID)
			}
			want := keystore.Key{ID: k.ID, Status: keystore.Available, CreatedAt: now, ExpiresAt: now.Add(modelOpts.KeepAliveTTL)}
			r.expectKey(want, k)
			m.keys[k.ID] = &modelKey{key: want}
			m.order = append(m.order, k.ID)
		}
	case opAcquire:
		ttl := ttlChoices[int(o.a)%len(ttlChoices)]
		r.log = append(r.log, fmt.Sprintf("acquire ttl=%s", ttlString(ttl)))
		got, err := r.store.Acquire(ctx, keystore.AcquireOptions{TTL: ttl})
		if !validTTL(ttl) {
			r.expectCode(err, keystore.EINVALID)
			break
		}
		if m.stats().Available == 0 {
			r.expectCode(err, keystore.ENOTFOUND)
			break
		}
		r.expectCode(err, "")
		k := m.keys[got.ID]
		if k == nil || k.key.Lease != nil {
			r.fail("acquire returned %q, which is not an AVAILABLE key of the model", got.ID)
		}
		if got.Lease == nil || got.Lease.Fence <= m.lastFence || slices.Contains(m.tokens, got.Lease.Token) {
			r.fail("acquire: lease %+v: want a fence above %d and a new token", got.Lease, m.lastFence)
		}
		m.lastFence = got.Lease.Fence
		m.tokens = append(m.tokens, got.Lease.Token)
		k.key.Status = keystore.Blocked
		k.key.Lease = &keystore.Lease{KeyID: got.ID, Token: got.Lease.Token, Fence: got.Lease.Fence,
			AcquiredAt: now, ExpiresAt: now.Add(leaseLength(ttl))}
		k.key.History.TimesAcquired++
		k.key.History.LastAcquiredAt = now
		r.expectKey(k.key, got)
	case opUnblock:
		id := m.pickID(o.a)
		token := m.pickToken(o.b, id)
		r.log = append(r.log, fmt.Sprintf("unblock %q token=%q", id, token))
		got, err := r.store.Unblock(ctx, id, token)
		k := m.keys[id]
		switch {
		case k == nil:
			r.expectCode(err, keystore.ENOTFOUND)
		case k.key.Lease == nil:
			r.expectCode(err, keystore.ENOTBLOCKED)
		case token != "" && token != k.key.Lease.Token:
			r.expectCode(err, keystore.ELEASEMISMATCH)
		default:
			r.expectCode(err, "")
			k.key.Lease = nil
			k.key.Status = keystore.Available
			r.expectKey(k.key, got)
		}
	case opRenew:
		id := m.pickID(o.a)
		token := m.pickToken(o.b, id)
		ttl := ttlChoices[int(o.c)%len(ttlChoices)]
		r.log = append(r.log, fmt.Sprintf("renew %q token=%q ttl=%s", id, token, ttlString(ttl)))
		got, err := r.store.Renew(ctx, id, token, ttl)
		k := m.keys[id]
		switch {
		case !validTTL(ttl) || token == "":
			r.expectCode(err, keystore.EINVALID)
		case k == nil:
			r.expectCode(err, keystore.ENOTFOUND)
		case k.key.Lease == nil:
			r.expectCode(err, keystore.ENOTBLOCKED)
		case token != k.key.Lease.Token:
			r.expectCode(err, keystore.ELEASEMISMATCH)
		default:
			r.expectCode(err, "")
			l := k.key.Lease
			l.ExpiresAt = now.Add(leaseLength(ttl))
			if limit := l.AcquiredAt.Add(modelOpts.MaxLeaseTTL); l.ExpiresAt.After(limit) {
				l.ExpiresAt = limit
			}
			r.expectKey(k.key, got)
		}
	case opKeepAlive:
		id := m.pickID(o.a)
		r.log = append(r.log, fmt.Sprintf("keepAlive %q", id))
		got, err := r.store.KeepAlive(ctx, id)
		if k := m.keys[id]; k == nil {
			r.expectCode(err, keystore.ENOTFOUND)
		} else {
			r.expectCode(err, "")
			k.key.ExpiresAt = now.Add(modelOpts.KeepAliveTTL)
			r.expectKey(k.key, got)
		}
	case opDelete:
		id := m.pickID(o.a)
		r.log = append(r.log, fmt.Sprintf("delete %q", id))
		err := r.store.Delete(ctx, id)
		if m.keys[id] == nil {
			r.expectCode(err, keystore.ENOTFOUND)
		} else {
			r.expectCode(err, "")
			m.forget(id)
		}
	case opGet:
		id := m.pickID(o.a)
		r.log = append(r.log, fmt.Sprintf("get %q", id))
		got, err := r.store.Get(ctx, id)
		if k := m.keys[id]; k == nil {
			r.expectCode(err, keystore.ENOTFOUND)
		} else {
			r.expectCode(err, "")
			r.expectKey(k.key, got)
		}
	case opStats:
		r.log = append(r.log, "stats")
	case opAdvance:
		var d time.Duration
		switch o.a % 4 {
		case 0:
			d = time.Duration(o.b) * 100 * time.Millisecond
		case 1:
			d = time.Duration(o.b) * 5 * time.Second
		default:
			// Land on a deadline, or a nanosecond either side of it.
			if ds := m.deadlines(now); len(ds) > 0 {
				d = ds[int(o.b)%len(ds)].Add(time.Duration(int(o.c%3) - 1)).Sub(now)
			}
			d = max(d, time.Nanosecond)
		}
		r.log = append(r.log, fmt.Sprintf("advance %v", d))
		r.clock.Advance(d)
		m.settle(r.clock.Now())
	}
	r.check()
}

// check compares everything the store shows with the model.
func (r *runner) check() {
	r.t.Helper()
	m := r.m
	m.settle(r.clock.Now())
	got, err := r.store.Stats(r.ctx, "")
	r.expectCode(err, "")
	if want := m.stats(); got != want {
		r.fail("stats: want %+v, got %+v", want, got)
	}
	for _, id := range m.order {
		got, err := r.store.Get(r.ctx, id)
		r.expectCode(err, "")
		r.expectKey(m.keys[id].key, got)
	}
	for _, id := range m.gone[max(0, len(m.gone)-4):] {
		_, err := r.store.Get(r.ctx, id)
		r.expectCode(err, keystore.ENOTFOUND)
	}
}

// randomOps draws a sequence with every kind of step, clock moves included.
func randomOps(rng *rand.Rand, n int) []op {
	weights := []int{opGenerate: 3, opAcquire: 4, opUnblock: 3, opRenew: 2, opKeepAlive: 2, opDelete: 1, opGet: 1, opStats: 1, opAdvance: 4}
	total := 0
	for _, w := range weights {
		total += w
	}
	ops := make([]op, n)
	for i := range ops {
		x := rng.IntN(total)
		kind := opKind(0)
		for ; x >= weights[kind]; kind++ {
			x -= weights[kind]
		}
		ops[i] = op{kind: kind, a: uint8(rng.Uint32()), b: uint8(rng.Uint32()), c: uint8(rng.Uint32())}
	}
	return ops
}

func TestMemoryModel(t *testing.T) {
	sequences, length := 2000, 80
	if raceEnabled { // the race detector makes each step several times slower
		sequences = 800
	}
	if testing.Short() {
		sequences = 200
	}
	seed := uint64(time.Now().UnixNano())
	t.Logf("seed %d (set KEYPOOL_MODEL_SEED to replay)", seed)
	if s := os.Getenv("KEYPOOL_MODEL_SEED"); s != "" {
		var err error
		seed, err = strconv.ParseUint(s, 10, 64)
		require.NoError(t, err)
	}
	rng := rand.New(rand.NewPCG(seed, 0x6b6579706f6f6c))
	for i := range sequences {
		r := newRunner(t)
		for _, o := range randomOps(rng, length) {
			r.step(o)
		}
		r.close()
		if t.Failed() {
			t.Fatalf("sequence %d failed", i)
		}
	}
}

// decodeOps reads a byte string as a sequence of four-byte steps.
func decodeOps(data []byte) []op {
	var ops []op
	for len(data) >= 4 {
		ops = append(ops, op{kind: opKind(data[0] % uint8(opKinds)), a: data[1], b: data[2], c: data[3]})
		data = data[4:]
	}
	return ops
}

// FuzzOps checks the store against the model on sequences the fuzzer writes:
// go test -fuzz=FuzzOps -run='^$' ./keystore/
func FuzzOps(f *testing.F) {
	f.Add([]byte{})
	f.Add([]byte{byte(opGenerate), 3, 0, 0, byte(opAcquire), 0, 0, 0, byte(opAdvance), 2, 0, 1})
	f.Add([]byte{byte(opGenerate), 5, 0, 0, byte(opAcquire), 4, 0, 0, byte(opRenew), 0, 1, 7,
		byte(opAdvance), 3, 1, 0, byte(opUnblock), 0, 1, 0, byte(opKeepAlive), 0, 0, 0})
	f.Add([]byte{byte(opGenerate), 2, 0, 0, byte(opAcquire), 8, 0, 0, byte(opAdvance), 2, 0, 2,
		byte(opDelete), 1, 0, 0, byte(opGet), 0, 0, 0, byte(opAdvance), 1, 200, 0, byte(opStats), 0, 0, 0})
	rng := rand.New(rand.NewPCG(1, 2))
	for range 8 {
		var seed []byte
		for _, o := range randomOps(rng, 40) {
			seed = append(seed, byte(o.kind), o.a, o.b, o.c)
		}
		f.Add(seed)
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		r := newRunner(t)
		defer r.close()
		for _, o := range decodeOps(data) {
			r.step(o)
		}
	})
}

// TestMemoryConcurrent runs every kind of request at once under the race detector and
// checks that no key ever has two holders, that fences grow across the pool and that
// the counts add up afterwards. The fake clock never moves, so no lease runs out
// behind a holder's back: a second holder can only come from a bug.
func TestMemoryConcurrent(t *testing.T) {
	clock := clockwork.NewFakeClockAt(storetest.Start)
	store, err := keystore.NewMemory(clock, keystore.Options{})
	require.NoError(t, err)
	defer func() { require.NoError(t, store.Close()) }()
	ctx := t.Context()

	const workers, steps = 8, 1500
	var (
		mu         sync.Mutex
		holders    = map[string]int64{} // key id -> fence of the lease that holds it
		ids        []string
		fences     []int64
		generated  int
		deleted    int
		violations []string
	)
	var maxFence atomic.Int64 // the largest fence any Acquire has returned so far
	first, err := store.Generate(ctx, "", 50)
	require.NoError(t, err)
	for _, k := range first {
		ids = append(ids, k.ID)
	}
	generated = len(first)

	randomID := func(rng *rand.Rand) string {
		mu.Lock()
		defer mu.Unlock()
		return ids[rng.IntN(len(ids))]
	}
	// took records a lease just granted and checks that nobody else holds its key.
	took := func(k keystore.Key, floor int64) {
		mu.Lock()
		defer mu.Unlock()
		if f, held := holders[k.ID]; held {
			violations = append(violations, fmt.Sprintf("key %s acquired with fence %d while fence %d holds it", k.ID, k.Lease.Fence, f))
		}
		if k.Lease.Fence <= floor {
			violations = append(violations, fmt.Sprintf("fence %d granted after fence %d was seen", k.Lease.Fence, floor))
		}
		holders[k.ID] = k.Lease.Fence
		fences = append(fences, k.Lease.Fence)
	}
	// release forgets a lease before it is ended, so that the next holder never sees it.
	release := func(k keystore.Key) {
		mu.Lock()
		defer mu.Unlock()
		if holders[k.ID] == k.Lease.Fence {
			delete(holders, k.ID)
		}
	}
	unexpected := func(err error, allowed ...keystore.Code) {
		if err == nil || slices.Contains(allowed, keystore.ErrorCode(err)) {
			return
		}
		mu.Lock()
		defer mu.Unlock()
		violations = append(violations, fmt.Sprintf("unexpected error %v", err))
	}

	var wg sync.WaitGroup
	for w := range workers {
		wg.Go(func() {
			rng := rand.New(rand.NewPCG(uint64(w), 7))
			var held []keystore.Key
			for range steps {
				switch x := rng.IntN(100); {
				case x < 30:
					floor := maxFence.Load()
					opts := keystore.AcquireOptions{}
					actx, cancel := ctx, context.CancelFunc(func() {})
					if x < 5 { // a few wait, bounded by a short real-time context
						opts.Wait = 10 * time.Second
						actx, cancel = context.WithTimeout(ctx, 2*time.Millisecond)
					}
					k, err := store.Acquire(actx, opts)
					cancel()
					if err != nil {
						if keystore.ErrorCode(err) != keystore.ENOTFOUND && actx.Err() == nil {
							unexpected(err)
						}
						continue
					}
					took(k, floor)
					for f := maxFence.Load(); f < k.Lease.Fence && !maxFence.CompareAndSwap(f, k.Lease.Fence); f = maxFence.Load() {
					}
					held = append(held, k)
				case x < 55 && len(held) > 0:
					i := rng.IntN(len(held))
					k := held[i]
					held = slices.Delete(held, i, i+1)
					release(k)
					token := k.Lease.Token
					if rng.IntN(2) == 0 {
						token = ""
					}
					_, err := store.Unblock(ctx, k.ID, token)
					unexpected(err, keystore.ENOTFOUND) // deleted meanwhile
				case x < 62 && len(held) > 0:
					k := held[rng.IntN(len(held))]
					_, err := store.Renew(ctx, k.ID, k.Lease.Token, nil)
					unexpected(err, keystore.ENOTFOUND)
				case x < 72:
					_, err := store.KeepAlive(ctx, randomID(rng))
					unexpected(err, keystore.ENOTFOUND)
				case x < 77:
					if err := store.Delete(ctx, randomID(rng)); err == nil {
						mu.Lock()
						deleted++
						mu.Unlock()
					} else {
						unexpected(err, keystore.ENOTFOUND)
					}
				case x < 84:
					keys, err := store.Generate(ctx, "", 1+rng.IntN(5))
					unexpected(err)
					mu.Lock()
					for _, k := range keys {
						ids = append(ids, k.ID)
					}
					generated += len(keys)
					mu.Unlock()
				case x < 92:
					_, err := store.Get(ctx, randomID(rng))
					unexpected(err, keystore.ENOTFOUND)
				default:
					s, err := store.Stats(ctx, "")
					unexpected(err)
					if s.Available+s.Blocked != s.Total {
						unexpected(fmt.Errorf("stats %+v do not add up", s))
					}
				}
			}
			for _, k := range held {
				release(k)
				_, err := store.Unblock(ctx, k.ID, k.Lease.Token)
				unexpected(err, keystore.ENOTFOUND)
			}
		})
	}
	wg.Wait()
	require.Empty(t, violations)
	s, err := store.Stats(ctx, "")
	require.NoError(t, err)
	require.Equal(t, keystore.Stats{Total: generated - deleted, Available: generated - deleted}, s)
	slices.Sort(fences)
	for i := 1; i < len(fences); i++ {
		require.Less(t, fences[i-1], fences[i], "fence granted twice")
	}
	require.Greater(t, len(fences), workers*steps/10, "too few leases to mean anything")
}

// TestMemoryAcquireUniform checks that Acquire picks uniformly among the AVAILABLE
// keys, and never a BLOCKED or dead one, with a chi-square test. The keys' keep-alive
// deadlines spread over the TTL, so that they sit in different buckets of the
// AVAILABLE set. With 20 free keys the statistic has 19 degrees of freedom;
// P(chi2 > 63.68) = 1e-6, so a correct store fails this test about once in a million
// runs.
func TestMemoryAcquireUniform(t *testing.T) {
	const (
		free      = 20
		rounds    = 40000
		threshold = 63.68 // the 1-1e-6 quantile of chi-square with free-1 degrees of freedom
	)
	clock := clockwork.NewFakeClockAt(storetest.Start)
	store, err := keystore.NewMemory(clock, keystore.Options{})
	require.NoError(t, err)
	defer func() { require.NoError(t, store.Close()) }()
	ctx := t.Context()
	_, err = store.Generate(ctx, "", 10) // these die before the draws
	require.NoError(t, err)
	clock.Advance(keystore.DefaultKeepAliveTTL / 2)
	for range 3 {
		_, err = store.Generate(ctx, "", (free+10)/3)
		require.NoError(t, err)
		clock.Advance(keystore.DefaultKeepAliveTTL/6 + time.Millisecond)
	}
	blocked := map[string]bool{}
	for range 10 { // these stay BLOCKED: they must never come out
		k, err := store.Acquire(ctx, keystore.AcquireOptions{})
		require.NoError(t, err)
		blocked[k.ID] = true
	}
	counts := map[string]int{}
	for range rounds {
		k, err := store.Acquire(ctx, keystore.AcquireOptions{})
		require.NoError(t, err)
		require.False(t, blocked[k.ID], "a BLOCKED key was acquired")
		counts[k.ID]++
		_, err = store.Unblock(ctx, k.ID, k.Lease.Token)
		require.NoError(t, err)
	}
	require.Len(t, counts, free)
	expected := float64(rounds) / free
	var chi2 float64
	for _, n := range counts {
		chi2 += (float64(n) - expected) * (float64(n) - expected) / expected
	}
	t.Logf("chi-square %.2f with %d degrees of freedom (fails above %.2f)", chi2, free-1, threshold)
	require.Less(t, chi2, threshold, "counts %v", counts)
}

// TestMemoryAcquireUniformMixed: as TestMemoryAcquireUniform, over keys kept alive in
// every way: generated (the pool's TTL), imported without keep-alive (no deadline) and
// imported with a TTL far longer than the pool's, which the AVAILABLE set holds apart
// from its ring of deadlines and must draw from together with it.
func TestMemoryAcquireUniformMixed(t *testing.T) {
	const (
		free      = 21
		rounds    = 42000
		threshold = 65.42 // the 1-1e-6 quantile of chi-square with free-1 degrees of freedom
	)
	clock := clockwork.NewFakeClockAt(storetest.Start)
	store, err := keystore.NewMemory(clock, keystore.Options{})
	require.NoError(t, err)
	defer func() { require.NoError(t, store.Close()) }()
	ctx := t.Context()
	_, err = store.Generate(ctx, "", 10) // these die before the draws
	require.NoError(t, err)
	clock.Advance(keystore.DefaultKeepAliveTTL / 2)
	_, err = store.Generate(ctx, "", free/3)
	require.NoError(t, err)
	var none, long []keystore.KeyInput
	for i := range free / 3 {
		none = append(none, keystore.KeyInput{Secret: fmt.Sprintf("none-%d", i)})
		long = append(long, keystore.KeyInput{Secret: fmt.Sprintf("long-%d", i)})
	}
	_, err = store.Import(ctx, none, keystore.ImportOptions{})
	require.NoError(t, err)
	_, err = store.Import(ctx, long, keystore.ImportOptions{KeepAliveTTL: keystore.TTL(48 * time.Hour)})
	require.NoError(t, err)
	clock.Advance(keystore.DefaultKeepAliveTTL/2 + time.Millisecond)
	counts := map[string]int{}
	for range rounds {
		k, err := store.Acquire(ctx, keystore.AcquireOptions{})
		require.NoError(t, err)
		counts[k.Lease.Secret]++
		_, err = store.Unblock(ctx, k.ID, k.Lease.Token)
		require.NoError(t, err)
	}
	require.Len(t, counts, free)
	expected := float64(rounds) / free
	var chi2 float64
	for _, n := range counts {
		chi2 += (float64(n) - expected) * (float64(n) - expected) / expected
	}
	t.Logf("chi-square %.2f with %d degrees of freedom (fails above %.2f)", chi2, free-1, threshold)
	require.Less(t, chi2, threshold, "counts %v", counts)
}

// TestMemoryMillionIDs generates a million keys in batches of the largest size and
// checks that no id repeats.
func TestMemoryMillionIDs(t *testing.T) {
	const total = 1_000_000
	clock := clockwork.NewFakeClockAt(storetest.Start)
	store, err := keystore.NewMemory(clock, keystore.Options{})
	require.NoError(t, err)
	defer func() { require.NoError(t, store.Close()) }()
	ids := make([]string, 0, total)
	for len(ids) < total {
		keys, err := store.Generate(t.Context(), "", keystore.DefaultMaxGenerate)
		require.NoError(t, err)
		for _, k := range keys {
			ids = append(ids, k.ID)
		}
	}
	slices.Sort(ids)
	for i := 1; i < len(ids); i++ {
		if ids[i] == ids[i-1] {
			t.Fatalf("id %q issued twice", ids[i])
		}
	}
	s, err := store.Stats(t.Context(), "")
	require.NoError(t, err)
	require.Equal(t, total, s.Total)
}

// TestMemoryClose checks that Close ends waiting Acquires and subscriptions, and that
// the store then says it is unavailable.
func TestMemoryClose(t *testing.T) {
	clock := clockwork.NewFakeClockAt(storetest.Start)
	obs := &waitCounter{}
	store, err := keystore.NewMemory(clock, keystore.Options{Observer: obs})
	require.NoError(t, err)
	ctx := t.Context()
	sub, err := store.Subscribe(ctx, keystore.SubscribeOptions{})
	require.NoError(t, err)
	waited := make(chan error, 1)
	go func() {
		_, err := store.Acquire(ctx, keystore.AcquireOptions{Wait: 10 * time.Second})
		waited <- err
	}()
	require.Eventually(t, func() bool { return obs.waiting.Load() == 1 }, 10*time.Second, time.Millisecond)
	require.NoError(t, store.Close())
	select {
	case err := <-waited:
		require.Equal(t, keystore.EUNAVAILABLE, keystore.ErrorCode(err), "error: %v", err)
	case <-time.After(10 * time.Second):
		t.Fatal("a waiting Acquire outlived Close")
	}
	waitCtx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	ev, err := sub.Next(waitCtx)
	require.Nil(t, ev)
	require.NoError(t, err, "a subscription outlived Close")
	require.Equal(t, keystore.EUNAVAILABLE, keystore.ErrorCode(store.Ready(ctx)))
	_, err = store.Subscribe(ctx, keystore.SubscribeOptions{})
	require.Error(t, err)
	require.NoError(t, store.Close(), "Close twice is harmless")
}

// waitCounter counts waiting Acquires through the Observer.
type waitCounter struct {
	keystore.NopObserver
	waiting atomic.Int64
}

func (o *waitCounter) WaitersChanged(delta int) { o.waiting.Add(int64(delta)) }

// TestListWalkOfAMillionKeys walks every page of a pool of a million keys (1e5 under
// the race detector) while other clients add, acquire, free and delete keys between
// and during the pages: each key that existed throughout is listed exactly once, and
// no key twice.
func TestListWalkOfAMillionKeys(t *testing.T) {
	n := 1_000_000
	if raceEnabled || testing.Short() {
		n = 100_000
	}
	store, err := keystore.NewMemory(clockwork.NewRealClock(), keystore.Options{LeaseTTL: time.Hour, KeepAliveTTL: 24 * time.Hour, MaxLeaseTTL: 24 * time.Hour})
	require.NoError(t, err)
	defer store.Close()
	ctx := t.Context()
	var initial []string
	for len(initial) < n {
		keys, err := store.Generate(ctx, "", keystore.DefaultMaxGenerate)
		require.NoError(t, err)
		for _, k := range keys {
			initial = append(initial, k.ID)
		}
	}
	_, err = store.Generate(ctx, "other", 1000) // another pool, in the walk of every pool
	require.NoError(t, err)

	// The churn: deleted keys are not lasting; every other initial key lasts.
	deleted := make(map[string]bool)
	var mu sync.Mutex
	stop := make(chan struct{})
	var wg sync.WaitGroup
	for c := range 2 {
		wg.Go(func() {
			rng := rand.New(rand.NewPCG(uint64(c), 7))
			for {
				select {
				case <-stop:
					return
				default:
				}
				switch rng.IntN(4) {
				case 0:
					_, _ = store.Generate(ctx, "", 1+rng.IntN(5))
				case 1:
					if k, err := store.Acquire(ctx, keystore.AcquireOptions{}); err == nil && rng.IntN(2) == 0 {
						_, _ = store.Unblock(ctx, k.ID, k.Lease.Token)
					}
				default:
					id := initial[rng.IntN(len(initial))]
					mu.Lock()
					deleted[id] = true // from now on it may be gone
					mu.Unlock()
					_ = store.Delete(ctx, id)
				}
			}
		})
	}
	seen := make(map[string]int, n+n/10)
	pages := 0
	for page := (keystore.Page{HasNext: true}); page.HasNext; pages++ {
		page, err = store.List(ctx, keystore.ListOptions{First: keystore.MaxListFirst, After: page.EndCursor})
		require.NoError(t, err)
		for _, k := range page.Keys {
			seen[k.ID]++
		}
	}
	close(stop)
	wg.Wait()
	lasting := 0
	for _, id := range initial {
		if !deleted[id] {
			lasting++
			require.Equal(t, 1, seen[id], "key %s lasted the walk", id)
		}
	}
	for id, times := range seen {
		require.Equal(t, 1, times, "key %s listed twice", id)
	}
	t.Logf("%d pages; %d keys listed, %d of %d initial keys lasted the walk", pages, len(seen), lasting, n)
	require.Greater(t, lasting, n/2, "the churn left too few lasting keys to test")
}
