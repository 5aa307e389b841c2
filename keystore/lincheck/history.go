package lincheck

import (
	"context"
	"errors"
	"fmt"
	"math"
	"math/rand/v2"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/anishathalye/porcupine"

	"github.com/keypool/keypool/keystore"
)

// History records the calls made on one pool, from any number of clients and
// replicas, with their start and return instants on one monotonic clock.
type History struct {
	start time.Time

	mu      sync.Mutex
	ops     []porcupine.Operation
	ids     map[string]int // every key id seen, by the index the model knows it by
	order   []string       // the same ids by index
	made    map[string]bool
	twice   []string // ids that Generate returned more than once
	initial []Seeded
	counts  map[string]int // answers by call and code, for the summary
	unknown int
	// unsettled are the calls whose effect may come after they returned.
	unsettled []unsettledCall
}

type unsettledCall struct {
	op      int
	settler Settler
}

// settleTimeout bounds how long Check waits for a store to settle a call.
const settleTimeout = 30 * time.Second

// NewHistory starts an empty history.
func NewHistory() *History {
	return &History{start: time.Now(), ids: map[string]int{}, made: map[string]bool{}, counts: map[string]int{}}
}

func (h *History) now() int64 { return int64(time.Since(h.start)) }

// key returns the index of id, giving an id never seen before the next one.
func (h *History) key(id string) int {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.keyLocked(id)
}

func (h *History) keyLocked(id string) int {
	k, ok := h.ids[id]
	if !ok {
		k = len(h.order)
		h.ids[id] = k
		h.order = append(h.order, id)
	}
	return k
}

// Seed records keys that exist, AVAILABLE, before the history starts, in the pool
// the model knows by index pool.
func (h *History) Seed(keys []keystore.Key, pool uint8) {
	h.mu.Lock()
	defer h.mu.Unlock()
	for _, k := range keys {
		h.made[k.ID] = true
		h.initial = append(h.initial, Seeded{Key: h.keyLocked(k.ID), Pool: pool})
	}
}

// Settler is implemented by the errors of calls answered UNAVAILABLE that may still
// take effect after they returned (a request that reached a paused Redis runs when it
// resumes): Settled is closed once the store knows the call either took effect or
// never will, and SettledAt tells when. The model then lets the call take effect at any
// instant up to SettledAt. A call answered UNAVAILABLE whose error is not a Settler is
// taken to have taken effect, if at all, before it returned.
type Settler interface {
	Settled() <-chan struct{}
	SettledAt() time.Time
}

// record adds one call. A call of unknown outcome whose error is a Settler returns,
// as far as the model knows, when it settles.
func (h *History) record(client int, in Input, out Output, call, ret int64, settler Settler) {
	h.mu.Lock()
	defer h.mu.Unlock()
	if settler != nil {
		h.unsettled = append(h.unsettled, unsettledCall{len(h.ops), settler})
		ret = math.MaxInt64
	}
	h.ops = append(h.ops, porcupine.Operation{ClientId: client, Input: in, Output: out, Call: call, Return: ret})
	label := string(out.Code)
	switch {
	case out.Unknown:
		label = "UNAVAILABLE"
		h.unknown++
	case label == "":
		label = "ok"
	}
	h.counts[in.Kind.String()+" "+label]++
}

// Release records that the store freed key id, leased under fence by an Acquire that
// was answered UNAVAILABLE, between start and end.
func (h *History) Release(id string, fence int64, start, end time.Time) {
	in := Input{Kind: Release, Key: h.key(id), Fence: fence}
	h.record(-1, in, Output{}, int64(start.Sub(h.start)), int64(end.Sub(h.start)), nil)
}

// Len returns how many calls the history holds.
func (h *History) Len() int {
	h.mu.Lock()
	defer h.mu.Unlock()
	return len(h.ops)
}

// Summary tells what the history holds: calls by kind and answer.
func (h *History) Summary() string {
	h.mu.Lock()
	defer h.mu.Unlock()
	labels := make([]string, 0, len(h.counts))
	for l := range h.counts {
		labels = append(labels, l)
	}
	sort.Strings(labels)
	parts := make([]string, len(labels))
	for i, l := range labels {
		parts[i] = fmt.Sprintf("%s: %d", l, h.counts[l])
	}
	return fmt.Sprintf("%d calls (%d UNAVAILABLE); %s", len(h.ops), h.unknown, strings.Join(parts, ", "))
}

// Check searches the history for a linearization, for at most timeout, and returns
// porcupine's verdict. When there is none it writes porcupine's visualization of the
// longest partial linearizations to a file (in $KEYPOOL_ARTIFACTS if set, else in
// the test's temporary directory) and logs its path. An id that Generate returned
// twice fails t at once: ids are unique for the life of the pool.
func (h *History) Check(t testing.TB, timeout time.Duration) porcupine.CheckResult {
	t.Helper()
	res, twice := h.Verdict(t, timeout)
	if len(twice) > 0 {
		t.Errorf("Generate returned ids that already existed: %d of them, the first %.8s…", len(twice), twice[0])
	}
	return res
}

// Verdict is Check for a test that expects a violation: the ids Generate returned
// twice are returned, not failures of t.
func (h *History) Verdict(t testing.TB, timeout time.Duration) (porcupine.CheckResult, []string) {
	t.Helper()
	h.mu.Lock()
	unsettled := append([]unsettledCall(nil), h.unsettled...)
	h.mu.Unlock()
	waited := time.After(settleTimeout)
	for _, u := range unsettled {
		select {
		case <-u.settler.Settled():
			h.mu.Lock()
			h.ops[u.op].Return = max(int64(u.settler.SettledAt().Sub(h.start)), h.ops[u.op].Call)
			h.mu.Unlock()
		case <-waited:
			t.Errorf("a call of unknown outcome was not settled within %v", settleTimeout)
		}
	}
	h.mu.Lock()
	ops := append([]porcupine.Operation(nil), h.ops...)
	initial := append([]Seeded(nil), h.initial...)
	twice := append([]string(nil), h.twice...)
	h.mu.Unlock()
	model := Model(initial)
	res, info := porcupine.CheckOperationsVerbose(model, ops, timeout)
	if res == porcupine.Illegal {
		dir := os.Getenv("KEYPOOL_ARTIFACTS")
		if dir == "" {
			dir = t.TempDir()
		}
		path := filepath.Join(dir, strings.NewReplacer("/", "_", " ", "_").Replace(t.Name())+"-linearizability.html")
		if err := porcupine.VisualizePath(model, info, path); err != nil {
			t.Logf("visualization: %v", err)
		} else {
			t.Logf("no linearization; porcupine's visualization: %s", path)
		}
	}
	return res, twice
}

// Config is a workload.
type Config struct {
	// Stores are replicas of one pool; client i calls Stores[i%len(Stores)].
	Stores []keystore.Store
	// Clients call concurrently, Calls calls each, or, with Until set, until Until is
	// closed, at most Calls calls each.
	Clients, Calls int
	Until          <-chan struct{}
	// Keys are generated in each pool before the history starts; Generate and Delete
	// keep the pools between Keys/2 and 2*Keys keys a pool, about.
	Keys int
	// Pools are the pools the clients acquire from and generate into, at most
	// MaxPools; none means the default pool alone.
	Pools []string
	// Timeout, if set, is the deadline of each call of the first TimedClients clients
	// (of all, if TimedClients is 0); the others wait for as long as the store takes.
	// Each call that times out may or may not have taken effect, and the model must
	// consider both: a few such clients exercise that, many make the check slow.
	Timeout      time.Duration
	TimedClients int
	// Seed makes the choice of calls repeatable (not their interleaving).
	Seed uint64
	// Held adds the calls that hold keys back: unblocks with a cool-down or a failure,
	// and restores.
	Held bool
	// Seeded, if set, is called once the pools are seeded, before the first call.
	Seeded func()
}

// Run seeds the pool with cfg.Keys keys, then lets cfg.Clients clients make their
// calls concurrently and records them. Answers other than the store's codes fail t
// (they are recorded as of unknown outcome).
func (h *History) Run(t testing.TB, cfg Config) {
	t.Helper()
	ctx := context.Background()
	if len(cfg.Pools) == 0 {
		cfg.Pools = []string{keystore.DefaultPool}
	}
	if len(cfg.Pools) > MaxPools {
		t.Fatalf("%d pools, the model keeps at most %d", len(cfg.Pools), MaxPools)
	}
	for i, pool := range cfg.Pools {
		var keys []keystore.Key
		for attempt := 0; ; attempt++ {
			var err error
			if keys, err = cfg.Stores[0].Generate(ctx, pool, cfg.Keys); err == nil {
				break
			}
			if attempt == 100 {
				t.Fatalf("generating the pool: %v", err)
			}
		}
		h.Seed(keys, uint8(i))
	}
	if cfg.Seeded != nil {
		cfg.Seeded()
	}
	w := &workload{h: h, cfg: cfg, tokens: map[leaseRef]string{}}
	w.live.Store(int64(cfg.Keys * len(cfg.Pools)))
	var wg sync.WaitGroup
	for i := range cfg.Clients {
		c := &client{w: w, id: i, store: cfg.Stores[i%len(cfg.Stores)], rng: rand.New(rand.NewPCG(cfg.Seed, uint64(i)))}
		wg.Add(1)
		go func() {
			defer wg.Done()
			for range cfg.Calls {
				select {
				case <-cfg.Until:
					return
				default:
				}
				c.next(t)
			}
		}()
	}
	wg.Wait()
}

// workload is what the clients of one Run share.
type workload struct {
	h    *History
	cfg  Config
	live atomic.Int64 // keys generated less keys deleted, as the clients were told

	mu     sync.Mutex
	tokens map[leaseRef]string // every lease token seen
	leases []leaseRef
}

// leaseRef names a lease: its key and its fence (each pool counts its own).
type leaseRef struct {
	id    string
	fence int64
}

func (w *workload) sawLease(k keystore.Key) {
	if k.Lease == nil {
		return
	}
	w.mu.Lock()
	defer w.mu.Unlock()
	ref := leaseRef{k.ID, k.Lease.Fence}
	if _, ok := w.tokens[ref]; !ok {
		w.tokens[ref] = k.Lease.Token
		w.leases = append(w.leases, ref)
	}
}

// anyToken returns a token seen in the history (of any lease, most likely not the
// current one of the key it is used on), and the lease it names.
func (w *workload) anyToken(rng *rand.Rand) (string, leaseRef, bool) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if len(w.leases) == 0 {
		return "", leaseRef{}, false
	}
	ref := w.leases[rng.IntN(len(w.leases))]
	return w.tokens[ref], ref, true
}

// anyKey returns an id the history has seen: mostly one of the newest (likely live),
// sometimes any (likely deleted).
func (w *workload) anyKey(rng *rand.Rand) string {
	w.h.mu.Lock()
	defer w.h.mu.Unlock()
	n := len(w.h.order)
	if recent := 2 * w.cfg.Keys * len(w.cfg.Pools); n > recent && rng.IntN(4) > 0 {
		return w.h.order[n-recent+rng.IntN(recent)]
	}
	return w.h.order[rng.IntN(n)]
}

type lease struct {
	id, token string
	fence     int64
}

type client struct {
	w     *workload
	id    int
	store keystore.Store
	rng   *rand.Rand
	held  []lease
}

// foreignID and foreignToken name no key and no lease of any pool.
const (
	foreignID    = "AAAAAAAAAAAAAAAAAAAAAA"
	foreignToken = "BBBBBBBBBBBBBBBBBBBBBB"
)

// next makes one call, chosen at random with weights that keep every answer coming.
func (c *client) next(t testing.TB) {
	r := c.rng.IntN(100)
	switch {
	case r < 25 && len(c.held) < 2:
		c.acquire(t)
	case r < 45 && len(c.held) > 0:
		l := c.take()
		c.unblock(t, l.id, l.token, leaseRef{l.id, l.fence})
	case r < 52 && len(c.held) > 0:
		l := c.held[c.rng.IntN(len(c.held))]
		c.renew(t, l.id, l.token, leaseRef{l.id, l.fence})
	case r < 57 && c.w.cfg.Held && c.rng.IntN(2) == 0:
		c.keyCall(t, Restore, c.w.anyKey(c.rng))
	case r < 57:
		c.unblock(t, c.w.anyKey(c.rng), "", leaseRef{fence: NoToken})
	case r < 63:
		if token, ref, ok := c.w.anyToken(c.rng); ok {
			if c.rng.IntN(2) == 0 {
				c.unblock(t, c.w.anyKey(c.rng), token, ref)
			} else {
				c.renew(t, c.w.anyKey(c.rng), token, ref)
			}
		}
	case r < 65:
		c.unblock(t, c.w.anyKey(c.rng), foreignToken, leaseRef{fence: ForeignToken})
	case r < 74:
		c.keyCall(t, KeepAlive, c.w.anyKey(c.rng))
	case r < 88:
		c.keyCall(t, Get, c.w.anyKey(c.rng))
	case r < 91 && c.w.live.Load() > int64(c.w.cfg.Keys*len(c.w.cfg.Pools)/2):
		c.keyCall(t, Delete, c.w.anyKey(c.rng))
	case r < 94 && c.w.live.Load() < int64(2*c.w.cfg.Keys*len(c.w.cfg.Pools)):
		c.generate(t, 1+c.rng.IntN(2))
	case r < 96:
		c.keyCall(t, []Kind{Get, KeepAlive, Delete, Unblock}[c.rng.IntN(4)], foreignID)
	default:
		c.acquire(t)
	}
}

// take removes one of the client's leases, at random.
func (c *client) take() lease {
	i := c.rng.IntN(len(c.held))
	l := c.held[i]
	c.held = append(c.held[:i], c.held[i+1:]...)
	return l
}

func (c *client) ctx() (context.Context, context.CancelFunc) {
	if cfg := c.w.cfg; cfg.Timeout > 0 && (cfg.TimedClients == 0 || c.id < cfg.TimedClients) {
		return context.WithTimeout(context.Background(), c.w.cfg.Timeout)
	}
	return context.WithCancel(context.Background())
}

// answer turns a store's answer into the model's, failing t for errors no store
// should give.
func (c *client) answer(t testing.TB, k keystore.Key, err error) Output {
	switch code := keystore.ErrorCode(err); code {
	case "":
		if k.ID == "" { // Delete, Generate: no key to describe
			return Output{}
		}
		c.w.sawLease(k)
		out := Output{Key: c.w.h.key(k.ID), Blocked: k.Status == keystore.Blocked, Held: HeldOf(k.Status)}
		if k.Lease != nil {
			out.Fence = k.Lease.Fence
		}
		return out
	case keystore.ENOTFOUND, keystore.ENOTBLOCKED, keystore.ELEASEMISMATCH, keystore.ENOTHELDBACK:
		return Output{Code: code}
	case keystore.EUNAVAILABLE:
		return Output{Unknown: true}
	default:
		if !errors.Is(err, context.DeadlineExceeded) && !errors.Is(err, context.Canceled) {
			t.Errorf("client %d: %v", c.id, err)
		}
		return Output{Unknown: true}
	}
}

// settler returns err's Settler, if it has one.
func settler(err error) Settler {
	var s Settler
	if errors.As(err, &s) {
		return s
	}
	return nil
}

func (c *client) keyIndex(id string) int {
	if id == foreignID {
		return NoKey
	}
	return c.w.h.key(id)
}

// pool picks one of the workload's pools at random.
func (c *client) pool() (uint8, string) {
	i := c.rng.IntN(len(c.w.cfg.Pools))
	return uint8(i), c.w.cfg.Pools[i]
}

func (c *client) acquire(t testing.TB) {
	ctx, cancel := c.ctx()
	defer cancel()
	pool, name := c.pool()
	start := c.w.h.now()
	k, err := c.store.Acquire(ctx, keystore.AcquireOptions{Pool: name})
	end := c.w.h.now()
	out := c.answer(t, k, err)
	c.w.h.record(c.id, Input{Kind: Acquire, Key: NoKey, Pool: pool}, out, start, end, settler(err))
	if err == nil {
		c.held = append(c.held, lease{id: k.ID, token: k.Lease.Token, fence: k.Lease.Fence})
	}
}

// tokenKey is the model's index of the key whose lease ref names; NoKey for none.
func (c *client) tokenKey(ref leaseRef) int {
	if ref.id == "" {
		return NoKey
	}
	return c.keyIndex(ref.id)
}

func (c *client) unblock(t testing.TB, id, token string, ref leaseRef) {
	ctx, cancel := c.ctx()
	defer cancel()
	in := Input{Kind: Unblock, Key: c.keyIndex(id), Fence: ref.fence, TokenKey: c.tokenKey(ref)}
	var opts keystore.UnblockOptions
	if c.w.cfg.Held {
		// A third plain, a third cooling for longer than any run, a third failed (with
		// a cool-down, half of them).
		switch c.rng.IntN(6) {
		case 0, 1:
			in.Cooldown, opts.Cooldown = true, keystore.TTL(time.Hour)
		case 2:
			in.Failed, opts.Failed = true, true
		case 3:
			in.Failed, opts.Failed = true, true
			in.Cooldown, opts.Cooldown = true, keystore.TTL(time.Hour)
		}
	}
	start := c.w.h.now()
	k, err := c.store.UnblockWith(ctx, id, token, opts)
	end := c.w.h.now()
	c.w.h.record(c.id, in, c.answer(t, k, err), start, end, settler(err))
}

func (c *client) renew(t testing.TB, id, token string, ref leaseRef) {
	ctx, cancel := c.ctx()
	defer cancel()
	in := Input{Kind: Renew, Key: c.keyIndex(id), Fence: ref.fence, TokenKey: c.tokenKey(ref)}
	start := c.w.h.now()
	k, err := c.store.Renew(ctx, id, token, nil)
	end := c.w.h.now()
	c.w.h.record(c.id, in, c.answer(t, k, err), start, end, settler(err))
}

func (c *client) keyCall(t testing.TB, kind Kind, id string) {
	if kind == Unblock {
		c.unblock(t, id, "", leaseRef{fence: NoToken})
		return
	}
	ctx, cancel := c.ctx()
	defer cancel()
	in := Input{Kind: kind, Key: c.keyIndex(id)}
	start := c.w.h.now()
	var (
		k   keystore.Key
		err error
	)
	switch kind {
	case KeepAlive:
		k, err = c.store.KeepAlive(ctx, id)
	case Get:
		k, err = c.store.Get(ctx, id)
	case Delete:
		err = c.store.Delete(ctx, id)
	case Restore:
		k, err = c.store.Restore(ctx, id)
	}
	end := c.w.h.now()
	out := c.answer(t, k, err)
	if kind == Delete && err == nil {
		out.Key = in.Key
		c.w.live.Add(-1)
	}
	c.w.h.record(c.id, in, out, start, end, settler(err))
}

func (c *client) generate(t testing.TB, count int) {
	ctx, cancel := c.ctx()
	defer cancel()
	pool, name := c.pool()
	start := c.w.h.now()
	keys, err := c.store.Generate(ctx, name, count)
	end := c.w.h.now()
	out := c.answer(t, keystore.Key{}, err)
	if err == nil {
		out = Output{}
		h := c.w.h
		h.mu.Lock()
		for _, k := range keys {
			if h.made[k.ID] {
				h.twice = append(h.twice, k.ID)
			}
			h.made[k.ID] = true
			out.Keys = append(out.Keys, h.keyLocked(k.ID))
		}
		h.mu.Unlock()
		c.w.live.Add(int64(len(keys)))
	}
	c.w.h.record(c.id, Input{Kind: Generate, Count: count, Pool: pool}, out, start, end, settler(err))
}

// Options are pool options for a checked run: leases and keep-alives that outlast any
// run, so that no deadline passes (the model has none).
var Options = keystore.Options{LeaseTTL: time.Hour, MaxLeaseTTL: 2 * time.Hour, KeepAliveTTL: 24 * time.Hour, QuarantineAfter: QuarantineAfter}
