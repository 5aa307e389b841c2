package redisstore

import (
	"bytes"
	"context"
	"log/slog"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/keypool/keypool/keystore"
)

// logBuffer records a store's log lines.
type logBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *logBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *logBuffer) logger() *slog.Logger {
	return slog.New(slog.NewTextHandler(b, &slog.HandlerOptions{Level: slog.LevelDebug}))
}

// lines returns the lines that hold every one of parts.
func (b *logBuffer) lines(parts ...string) []string {
	b.mu.Lock()
	defer b.mu.Unlock()
	var out []string
	for line := range strings.Lines(b.buf.String()) {
		all := true
		for _, part := range parts {
			all = all && strings.Contains(line, part)
		}
		if all {
			out = append(out, line)
		}
	}
	return out
}

// wantRefused wants an UNAVAILABLE error whose message holds reason.
func wantRefused(t *testing.T, err error, reason string) {
	t.Helper()
	wantCode(t, err, keystore.EUNAVAILABLE)
	if msg := keystore.ErrorMessage(err); !strings.Contains(msg, reason) {
		t.Fatalf("error %q does not name %q", msg, reason)
	}
}

// Short enough for the watcher to notice a change well inside the tests' waits.
const testHealthEvery = 20 * time.Millisecond

// TestEvictionPolicyRefusesChanges: with a maxmemory-policy other than noeviction,
// Redis may evict any of the pools' keys (a counter, a key) and the pools go
// wrong silently. The store refuses changes from its first request, says why in Ready
// and the log, still answers reads, and serves again by itself once the policy is
// noeviction; a policy changed under a running store is noticed as well.
func TestEvictionPolicyRefusesChanges(t *testing.T) {
	srv := startRedis(t)
	rdb := srv.client()
	defer rdb.Close()
	ctx := context.Background()
	must(rdb.do("CONFIG", "SET", "maxmemory-policy", "allkeys-lru").ToString())(t)
	logs := &logBuffer{}
	st := openStore(t, srv, newFakeClock(), keystore.Options{}, WithLogger(logs.logger()), withHealthEvery(testHealthEvery))

	_, err := st.Generate(ctx, "", 2)
	wantRefused(t, err, "maxmemory-policy is allkeys-lru")
	wantRefused(t, st.Ready(ctx), "maxmemory-policy is allkeys-lru")
	must(st.Stats(ctx, ""))(t) // reads answer
	must(st.Pools(ctx))(t)

	must(rdb.do("CONFIG", "SET", "maxmemory-policy", "noeviction").ToString())(t)
	require.Eventually(t, func() bool { return st.Ready(ctx) == nil }, 5*time.Second, 5*time.Millisecond)
	keys := must(st.Generate(ctx, "", 2))(t)
	held := must(st.Acquire(ctx, keystore.AcquireOptions{}))(t)

	// Changed under a running store.
	must(rdb.do("CONFIG", "SET", "maxmemory-policy", "volatile-ttl").ToString())(t)
	require.Eventually(t, func() bool { return st.Ready(ctx) != nil }, 5*time.Second, 5*time.Millisecond)
	wantRefused(t, st.Ready(ctx), "maxmemory-policy is volatile-ttl")
	_, err = st.Acquire(ctx, keystore.AcquireOptions{})
	wantRefused(t, err, "volatile-ttl")
	_, err = st.Unblock(ctx, held.ID, held.Lease.Token)
	wantRefused(t, err, "volatile-ttl")
	_, err = st.KeepAlive(ctx, keys[0].ID)
	wantRefused(t, err, "volatile-ttl")
	wantRefused(t, st.Delete(ctx, keys[0].ID), "volatile-ttl")
	if got := must(st.Get(ctx, held.ID))(t); got.Lease == nil || got.Lease.Token != held.Lease.Token {
		t.Fatalf("the held key while changes are refused: %+v", got)
	}
	page := must(st.List(ctx, keystore.ListOptions{First: 10}))(t)
	require.Len(t, page.Keys, 2)

	must(rdb.do("CONFIG", "SET", "maxmemory-policy", "noeviction").ToString())(t)
	require.Eventually(t, func() bool { return st.Ready(ctx) == nil }, 5*time.Second, 5*time.Millisecond)
	must(st.Unblock(ctx, held.ID, held.Lease.Token))(t)

	// Each spell of refusal is logged once as it begins and once as it ends.
	require.Len(t, logs.lines("level=ERROR", "refusing changes", "allkeys-lru"), 1, logs.lines())
	require.Len(t, logs.lines("level=ERROR", "refusing changes", "volatile-ttl"), 1, logs.lines())
	require.Len(t, logs.lines("level=INFO", "serving changes again", "lasted="), 2, logs.lines())
}

// TestFullRedisAnswersReadsWritingNothing: Redis has reached maxmemory (noeviction)
// and refuses writes. Changes are refused at once naming the reason, Ready fails with
// it, and the reads still answer, as if the due transitions were applied (a lease
// whose deadline passed reads as ended) while writing nothing to Redis: no transition
// applied, no reply recorded. Once memory is freed the store serves again by itself.
func TestFullRedisAnswersReadsWritingNothing(t *testing.T) {
	srv := startRedis(t)
	rdb := srv.client()
	defer rdb.Close()
	ctx := context.Background()
	clock := newFakeClock()
	logs := &logBuffer{}
	st := openStore(t, srv, clock, keystore.Options{}, WithLogger(logs.logger()), withHealthEvery(testHealthEvery))
	keys := must(st.Generate(ctx, "", 3))(t)
	ttl := 2 * time.Second
	held := must(st.Acquire(ctx, keystore.AcquireOptions{TTL: &ttl}))(t)
	other := must(st.Acquire(ctx, keystore.AcquireOptions{}))(t)

	must(rdb.do("CONFIG", "SET", "maxmemory", "100kb").ToString())(t) // far below what Redis uses
	require.Eventually(t, func() bool { return st.Ready(ctx) != nil }, 5*time.Second, 5*time.Millisecond)
	wantRefused(t, st.Ready(ctx), "out of memory")
	before := snapshot(t, rdb)

	clock.Advance(ttl + time.Second) // held's lease ends; its release cannot be written
	got := must(st.Get(ctx, held.ID))(t)
	if got.Status != keystore.Available || got.Lease != nil {
		t.Fatalf("a key whose lease ended, read while Redis is full: %+v", got)
	}
	if got := must(st.Get(ctx, other.ID))(t); got.Lease == nil || got.Lease.Token != other.Lease.Token {
		t.Fatalf("a key still leased, read while Redis is full: %+v", got)
	}
	want := keystore.Stats{Total: 3, Available: 2, Blocked: 1}
	require.Equal(t, want, must(st.Stats(ctx, ""))(t))
	pools := must(st.Pools(ctx))(t)
	require.Len(t, pools, 1)
	require.Equal(t, want, pools[0].Stats)
	page := must(st.List(ctx, keystore.ListOptions{Status: keystore.Available, First: 10}))(t)
	require.Len(t, page.Keys, 2)

	start := time.Now()
	_, err := st.Acquire(ctx, keystore.AcquireOptions{})
	wantRefused(t, err, "out of memory")
	_, err = st.Unblock(ctx, other.ID, other.Lease.Token)
	wantRefused(t, err, "out of memory")
	_, err = st.KeepAlive(ctx, keys[0].ID)
	wantRefused(t, err, "out of memory")
	_, err = st.Generate(ctx, "", 1)
	wantRefused(t, err, "out of memory")
	if d := time.Since(start); d >= retryFor {
		t.Fatalf("changes took %v to be refused: refused, they are not retried", d)
	}
	// Let the expirer try its batches too.
	clock.Advance(time.Second)
	require.Equal(t, want, must(st.Stats(ctx, ""))(t))
	// A replica that starts now (a restart) joins and reads too: it needs to write
	// nothing, not even keypool's library, which Redis holds already.
	late := openNamespace(t, srv, clock, keystore.Options{}, st.b.namespace)
	require.Equal(t, want, must(late.Stats(ctx, ""))(t))
	require.Equal(t, before, snapshot(t, rdb), "reads and refusals wrote to a full Redis")

	must(rdb.do("CONFIG", "SET", "maxmemory", "0").ToString())(t)
	require.Eventually(t, func() bool { return st.Ready(ctx) == nil }, 5*time.Second, 5*time.Millisecond)
	must(st.Unblock(ctx, other.ID, other.Lease.Token))(t)
	require.Equal(t, keystore.Stats{Total: 3, Available: 3}, must(st.Stats(ctx, ""))(t))
	require.Len(t, logs.lines("level=ERROR", "refusing changes", "out of memory"), 1, logs.lines())
	require.Len(t, logs.lines("level=INFO", "serving changes again", "lasted="), 1, logs.lines())
}

// snapshot returns every key in Redis with its serialized value (DUMP).
func snapshot(t *testing.T, rdb *admin) map[string]string {
	t.Helper()
	out := map[string]string{}
	for _, key := range must(rdb.do("KEYS", "*").AsStrSlice())(t) {
		out[key] = must(rdb.do("DUMP", key).ToString())(t)
	}
	return out
}

// TestOutageLoggedOnce: Redis goes away and comes back. The replica logs the outage
// once at warn, however many requests fail meanwhile, and the recovery once at info
// with how long the outage lasted.
func TestOutageLoggedOnce(t *testing.T) {
	srv := startRedisAOF(t)
	ctx := context.Background()
	logs := &logBuffer{}
	st := openStore(t, srv, newFakeClock(), keystore.Options{}, WithLogger(logs.logger()), withHealthEvery(testHealthEvery))
	keys := must(st.Generate(ctx, "", 1))(t)

	srv.kill()
	var wg sync.WaitGroup
	for range 8 {
		wg.Go(func() {
			ctx, cancel := context.WithTimeout(ctx, 300*time.Millisecond)
			defer cancel()
			_, _ = st.Get(ctx, keys[0].ID)
		})
	}
	wg.Wait()
	require.Eventually(t, func() bool { return len(logs.lines("level=WARN", "cannot be reached")) > 0 },
		5*time.Second, 5*time.Millisecond)
	srv.start()
	require.Eventually(t, func() bool { return len(logs.lines("level=INFO", "answers again", "outage=")) > 0 },
		5*time.Second, 5*time.Millisecond)
	must(st.Get(ctx, keys[0].ID))(t)
	require.Len(t, logs.lines("level=WARN", "cannot be reached"), 1, logs.lines())
	require.Len(t, logs.lines("level=INFO", "answers again", "outage="), 1, logs.lines())
}

func TestMemoryHealth(t *testing.T) {
	for _, c := range []struct {
		info           string
		evicting, full string
	}{
		{"# Memory\r\nused_memory:900\r\nmaxmemory:0\r\nmaxmemory_policy:noeviction\r\n", "", ""},
		{"used_memory:900\r\nmaxmemory:1000\r\nmaxmemory_policy:noeviction\r\n", "", ""},
		{"used_memory:1900\r\nmaxmemory:1000\r\nmem_not_counted_for_evict:1000\r\nmaxmemory_policy:noeviction\r\n", "", ""},
		{"used_memory:1001\r\nmaxmemory:1000\r\nmaxmemory_policy:noeviction\r\n", "", "out of memory"},
		{"used_memory:10\r\nmaxmemory:0\r\nmaxmemory_policy:allkeys-lru\r\n", "allkeys-lru", ""},
	} {
		evicting, full := memoryHealth(c.info)
		if c.evicting == "" && evicting != "" || !strings.Contains(evicting, c.evicting) ||
			c.full == "" && full != "" || !strings.Contains(full, c.full) {
			t.Errorf("memoryHealth(%q) = %q, %q", c.info, evicting, full)
		}
	}
}

// TestReplicasAgreeOnSettings: each replica used to apply its own lease, keep-alive and
// max lease TTLs to the shared pools (and would its own quarantine and cool-down
// settings). The first replica records them with the
// namespace; a replica whose own differ refuses to start, naming the flag.
func TestReplicasAgreeOnSettings(t *testing.T) {
	srv := startRedis(t)
	base := keystore.Options{LeaseTTL: 30 * time.Second, KeepAliveTTL: time.Minute, MaxLeaseTTL: 10 * time.Minute}
	openNamespace(t, srv, newFakeClock(), base, "agree")
	openNamespace(t, srv, newFakeClock(), base, "agree") // the same: it starts

	for _, c := range []struct {
		flag string
		opts func(*keystore.Options)
	}{
		{"-lease-ttl", func(o *keystore.Options) { o.LeaseTTL = 40 * time.Second }},
		{"-keepalive-ttl", func(o *keystore.Options) { o.KeepAliveTTL = 2 * time.Minute }},
		{"-max-lease-ttl", func(o *keystore.Options) { o.MaxLeaseTTL = 20 * time.Minute }},
		{"-quarantine-after", func(o *keystore.Options) { o.QuarantineAfter = 3 }},
		{"-expired-lease-cooldown", func(o *keystore.Options) { o.ExpiredLeaseCooldown = time.Second }},
		{"-max-cooldown", func(o *keystore.Options) { o.MaxCooldown = time.Minute }},
	} {
		opts := base
		c.opts(&opts)
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		pool, _, err := open(ctx, srv.url(), newFakeClock(), opts, WithNamespace("agree"))
		cancel()
		if err == nil {
			_ = pool.Close()
			t.Fatalf("a replica with another %s started", c.flag)
		}
		if !strings.Contains(err.Error(), c.flag) {
			t.Fatalf("a replica with another %s: %v, which does not name the flag", c.flag, err)
		}
	}
}

// TestFullRedisReadsKeysHeldBack: while Redis is full, reads show the keys held back as
// they are once their due transitions apply, writing nothing: a lease that ran out is
// COOLING for the lock-delay from its deadline, with its failure counted; a cool-down
// that ended reads AVAILABLE; a quarantined key stays so.
func TestFullRedisReadsKeysHeldBack(t *testing.T) {
	srv := startRedis(t)
	rdb := srv.client()
	defer rdb.Close()
	ctx := context.Background()
	clock := newFakeClock()
	start := clock.Now()
	st := openStore(t, srv, clock, keystore.Options{ExpiredLeaseCooldown: 10 * time.Second, QuarantineAfter: 2},
		withHealthEvery(testHealthEvery))
	// One key at a time, so that each acquire takes the key just made.
	quarantined := must(st.Generate(ctx, "", 1))(t)[0]
	for range 2 {
		k := must(st.Acquire(ctx, keystore.AcquireOptions{}))(t)
		must(st.UnblockWith(ctx, k.ID, k.Lease.Token, keystore.UnblockOptions{Failed: true}))(t)
	}
	must(st.Generate(ctx, "", 1))(t)
	cooled := must(st.Acquire(ctx, keystore.AcquireOptions{}))(t)
	must(st.UnblockWith(ctx, cooled.ID, cooled.Lease.Token, keystore.UnblockOptions{Cooldown: keystore.TTL(2 * time.Second)}))(t)
	must(st.Generate(ctx, "", 1))(t)
	leased := must(st.Acquire(ctx, keystore.AcquireOptions{TTL: keystore.TTL(2 * time.Second)}))(t)

	must(rdb.do("CONFIG", "SET", "maxmemory", "100kb").ToString())(t)
	require.Eventually(t, func() bool { return st.Ready(ctx) != nil }, 5*time.Second, 5*time.Millisecond)
	before := snapshot(t, rdb)
	clock.Advance(3 * time.Second)

	got := must(st.Get(ctx, leased.ID))(t)
	require.Equal(t, keystore.Cooling, got.Status)
	require.NotNil(t, got.CoolingUntil)
	require.True(t, got.CoolingUntil.Equal(start.Add(12*time.Second)), "cooling until %v", got.CoolingUntil)
	require.EqualValues(t, 1, got.History.Failures)
	require.EqualValues(t, 1, got.History.LeasesExpired)
	require.Equal(t, keystore.Available, must(st.Get(ctx, cooled.ID))(t).Status)
	require.Equal(t, keystore.Quarantined, must(st.Get(ctx, quarantined.ID))(t).Status)
	require.Equal(t, keystore.Stats{Total: 3, Available: 1, Cooling: 1, Quarantined: 1}, must(st.Stats(ctx, ""))(t))
	for status, want := range map[keystore.Status]string{keystore.Available: cooled.ID, keystore.Cooling: leased.ID, keystore.Quarantined: quarantined.ID} {
		page := must(st.List(ctx, keystore.ListOptions{Status: status, First: 10}))(t)
		require.Len(t, page.Keys, 1, status)
		require.Equal(t, want, page.Keys[0].ID, status)
	}
	require.Equal(t, before, snapshot(t, rdb), "reads wrote to a full Redis")
}
