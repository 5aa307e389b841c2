package metrics_test

import (
	"context"
	"errors"
	"fmt"
	"net/http/httptest"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/jonboulle/clockwork"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"github.com/stretchr/testify/require"

	"github.com/keypool/keypool/internal/buildinfo"
	"github.com/keypool/keypool/keystore"
	"github.com/keypool/keypool/metrics"
)

func newStore(t *testing.T, m *metrics.Metrics) (*keystore.Pool, *clockwork.FakeClock) {
	t.Helper()
	clock := clockwork.NewFakeClock()
	store, err := keystore.NewMemory(clock, keystore.Options{Observer: m, EventRetention: 4})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { store.Close() })
	m.WatchStore(store)
	return store, clock
}

// scrape returns /metrics as text.
func scrape(t *testing.T, m *metrics.Metrics) string {
	t.Helper()
	w := httptest.NewRecorder()
	m.Handler().ServeHTTP(w, httptest.NewRequest("GET", "/metrics", nil))
	if w.Code != 200 {
		t.Fatalf("/metrics: %d %s", w.Code, w.Body)
	}
	return w.Body.String()
}

func value(t *testing.T, m *metrics.Metrics, name string, labels ...string) float64 {
	t.Helper()
	families, err := m.Registry().Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, f := range families {
		if f.GetName() != name {
			continue
		}
	next:
		for _, metric := range f.GetMetric() {
			for i := 0; i+1 < len(labels); i += 2 {
				found := false
				for _, l := range metric.GetLabel() {
					if l.GetName() == labels[i] && l.GetValue() == labels[i+1] {
						found = true
					}
				}
				if !found {
					continue next
				}
			}
			switch {
			case metric.Counter != nil:
				return metric.Counter.GetValue()
			case metric.Gauge != nil:
				return metric.Gauge.GetValue()
			case metric.Histogram != nil:
				return float64(metric.Histogram.GetSampleCount())
			}
		}
	}
	return 0
}

func TestEveryMetricIsExposed(t *testing.T) {
	m := metrics.New()
	store, _ := newStore(t, m)
	m.Instrument(store, metrics.REST) // request latency children exist once a transport is instrumented
	text := scrape(t, m)
	for _, name := range []string{
		"keypool_keys", "keypool_operations_total", "keypool_request_duration_seconds",
		"keypool_lease_renewals_total", "keypool_leases_expired_total", "keypool_keys_expired_total",
		"keypool_expiry_lateness_seconds", "keypool_subscribers", "keypool_slow_consumer_cuts_total",
		"keypool_acquire_waiters", "keypool_pool_acquire_waiters", "keypool_acquire_wait_seconds",
		"keypool_fanout_frames_total", "keypool_fanout_bytes_total", "keypool_fanout_writes_total",
		"keypool_fanout_coalesced_writes_total", "keypool_fanout_encodes_total", "keypool_fanout_stalls_total",
		"keypool_fanout_queued", "keypool_build_info",
		"go_goroutines", "process_start_time_seconds",
	} {
		if !strings.Contains(text, "# TYPE "+name+" ") {
			t.Errorf("/metrics lacks %s", name)
		}
	}
	if n, err := testutil.GatherAndLint(m.Registry()); err != nil || len(n) > 0 {
		t.Errorf("lint: %v %v", n, err)
	}
	for line := range strings.SplitSeq(text, "\n") {
		if strings.HasPrefix(line, "# TYPE ") && !strings.HasPrefix(line, "# TYPE keypool_") &&
			!strings.HasPrefix(line, "# TYPE go_") && !strings.HasPrefix(line, "# TYPE process_") {
			t.Errorf("unprefixed metric: %s", line)
		}
	}
}

// TestBuildInfo scrapes keypool_build_info: one series, value 1, labelled with what
// the binary recorded of its build.
func TestBuildInfo(t *testing.T) {
	m := metrics.New()
	build := buildinfo.Read()
	revision := build.Revision
	if revision == "" {
		revision = "unknown" // go test records no VCS revision
	}
	want := fmt.Sprintf("keypool_build_info{goversion=%q,revision=%q,version=%q} 1\n", runtime.Version(), revision, build.Version)
	text := scrape(t, m)
	require.Contains(t, text, "# TYPE keypool_build_info gauge\n")
	require.Contains(t, text, want)
	require.Equal(t, 1, strings.Count(text, "keypool_build_info{"), "one series")
	require.Equal(t, 1.0, value(t, m, "keypool_build_info", "goversion", runtime.Version(), "version", build.Version))
}

func TestCountersMove(t *testing.T) {
	m := metrics.New()
	store, clock := newStore(t, m)
	ctx := context.Background()
	rest := m.Instrument(store, metrics.REST)
	gql := m.Instrument(store, metrics.GraphQL)

	keys, err := rest.Generate(ctx, "", 3)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := rest.Generate(ctx, "", 0); err == nil {
		t.Fatal("count 0 accepted")
	}
	k, err := gql.Acquire(ctx, keystore.AcquireOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := rest.Renew(ctx, k.ID, k.Lease.Token, keystore.TTL(90*time.Second)); err != nil {
		t.Fatal(err)
	}
	if _, err := rest.Renew(ctx, k.ID, "bad", nil); err == nil {
		t.Fatal("renew with a bad token")
	}
	if _, err := rest.Unblock(ctx, keys[0].ID, "nope"); err == nil {
		t.Fatal("unblock with a bad token")
	}
	rest.Get(ctx, "nope")
	gql.Stats(ctx, "")

	for _, c := range []struct {
		op, outcome string
		want        float64
	}{
		{"generate", "ok", 1}, {"generate", "BAD_USER_INPUT", 1}, {"acquire", "ok", 1}, {"renew", "ok", 1},
		{"renew", "LEASE_MISMATCH", 1}, {"get", "NOT_FOUND", 1}, {"stats", "ok", 1},
	} {
		if got := value(t, m, "keypool_operations_total", "op", c.op, "outcome", c.outcome); got != c.want {
			t.Errorf("operations{op=%s,outcome=%s} = %v, want %v", c.op, c.outcome, got, c.want)
		}
	}
	if got := value(t, m, "keypool_request_duration_seconds", "transport", "rest", "op", "generate"); got != 2 {
		t.Errorf("rest generate latency samples %v, want 2", got)
	}
	if got := value(t, m, "keypool_request_duration_seconds", "transport", "graphql", "op", "acquire"); got != 1 {
		t.Errorf("graphql acquire latency samples %v, want 1", got)
	}
	if got := value(t, m, "keypool_lease_renewals_total"); got != 1 {
		t.Errorf("renewals %v", got)
	}
	if got := value(t, m, "keypool_keys", "state", "AVAILABLE"); got != 2 {
		t.Errorf("available keys %v", got)
	}
	if got := value(t, m, "keypool_keys", "state", "BLOCKED"); got != 1 {
		t.Errorf("blocked keys %v", got)
	}

	// The renewed lease runs out at 90s: a release by expiry; at 5 min every key expires.
	clock.Advance(90 * time.Second)
	waitFor(t, func() bool { return value(t, m, "keypool_leases_expired_total") == 1 })
	if got := value(t, m, "keypool_expiry_lateness_seconds", "event", "RELEASED"); got != 1 {
		t.Errorf("lateness samples %v", got)
	}
	clock.Advance(5 * time.Minute)
	waitFor(t, func() bool { return value(t, m, "keypool_keys_expired_total") == 3 })
	if got := value(t, m, "keypool_keys", "state", "AVAILABLE"); got != 0 {
		t.Errorf("available keys after expiry %v", got)
	}
}

func TestWaitersAndSubscribers(t *testing.T) {
	m := metrics.New()
	store, clock := newStore(t, m)
	ctx := t.Context()

	done := make(chan error)
	go func() {
		_, err := store.Acquire(ctx, keystore.AcquireOptions{Wait: 2 * time.Second})
		done <- err
	}()
	waitFor(t, func() bool { return value(t, m, "keypool_acquire_waiters") == 1 })
	blockCtx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	clock.BlockUntilContext(blockCtx, 1)
	clock.Advance(2 * time.Second)
	if err := <-done; keystore.ErrorCode(err) != keystore.ENOTFOUND {
		t.Fatalf("wait ended with %v", err)
	}
	if got := value(t, m, "keypool_acquire_waiters"); got != 0 {
		t.Errorf("waiters %v", got)
	}
	if got := value(t, m, "keypool_acquire_wait_seconds", "outcome", "unserved"); got != 1 {
		t.Errorf("unserved waits %v", got)
	}

	subCtx, unsubscribe := context.WithCancel(ctx)
	sub, err := store.Subscribe(subCtx, keystore.SubscribeOptions{})
	if err != nil {
		t.Fatal(err)
	}
	waitFor(t, func() bool { return value(t, m, "keypool_subscribers") == 1 })
	// Retention is 4 events; 100 unread ones cut the subscriber.
	if _, err := store.Generate(ctx, "", 100); err != nil {
		t.Fatal(err)
	}
	for ev, _ := sub.Next(ctx); ev != nil; ev, _ = sub.Next(ctx) {
	}
	if keystore.ErrorCode(sub.Err()) != keystore.ESLOWCONSUMER {
		t.Fatalf("subscription ended with %v", sub.Err())
	}
	unsubscribe()
	waitFor(t, func() bool { return value(t, m, "keypool_subscribers") == 0 })
	if got := value(t, m, "keypool_slow_consumer_cuts_total"); got != 1 {
		t.Errorf("cuts %v", got)
	}
}

// waitFor polls for what the store's own goroutines do after a fake clock moves.
func waitFor(t *testing.T, cond func() bool) {
	t.Helper()
	require.Eventually(t, cond, 5*time.Second, time.Millisecond, "condition not met within 5s")
}

// A store that cannot answer Pools leaves keypool_keys out rather than failing the scrape.
type brokenStore struct{ keystore.Store }

func (brokenStore) Pools(context.Context) ([]keystore.PoolStats, error) {
	return nil, errors.New("down")
}

func TestScrapeSurvivesStoreFailure(t *testing.T) {
	m := metrics.New()
	m.WatchStore(brokenStore{})
	if text := scrape(t, m); strings.Contains(text, "keypool_keys{") {
		t.Fatalf("keys reported from a broken store")
	}
}

// TestOnlyPossibleOutcomesArePreCreated scrapes a fresh registry: every operation shows
// ok and the codes its store call can return, at zero, and nothing else (no
// acquire/SLOW_CONSUMER, no delete/LEASE_MISMATCH). The table is the store's contract
// (keystore.Store's docs): UNAVAILABLE and INTERNAL_SERVER_ERROR for every call, plus
// each call's own codes.
func TestOnlyPossibleOutcomesArePreCreated(t *testing.T) {
	m := metrics.New()
	store, _ := newStore(t, m)
	m.Instrument(store, metrics.REST)
	always := []string{"ok", "UNAVAILABLE", "INTERNAL_SERVER_ERROR"}
	want := map[string][]string{
		"generate":  {"BAD_USER_INPUT"},
		"acquire":   {"NOT_FOUND", "BAD_USER_INPUT"},
		"unblock":   {"NOT_FOUND", "NOT_BLOCKED", "LEASE_MISMATCH", "BAD_USER_INPUT"},
		"renew":     {"NOT_FOUND", "NOT_BLOCKED", "LEASE_MISMATCH", "BAD_USER_INPUT"},
		"keepalive": {"NOT_FOUND"},
		"delete":    {"NOT_FOUND"},
		"get":       {"NOT_FOUND"},
		"stats":     {"BAD_USER_INPUT"},
		"pools":     {},
		"list":      {"BAD_USER_INPUT"},
		"history":   {"BAD_USER_INPUT"},
		"subscribe": {"BAD_USER_INPUT", "EVENTS_COMPACTED"},
		"restore":   {"NOT_FOUND", "NOT_HELD_BACK"},
		"import":    {"BAD_USER_INPUT", "ALREADY_EXISTS"},
	}
	wantSeries := map[string]bool{}
	for op, codes := range want {
		for _, outcome := range append(codes, always...) {
			wantSeries[`keypool_operations_total{op="`+op+`",outcome="`+outcome+`"} 0`] = true
		}
	}
	gotSeries := map[string]bool{}
	for line := range strings.SplitSeq(scrape(t, m), "\n") {
		if strings.HasPrefix(line, "keypool_operations_total{") {
			gotSeries[line] = true
		}
	}
	for s := range gotSeries {
		if !wantSeries[s] {
			t.Errorf("impossible series pre-created: %s", s)
		}
	}
	for s := range wantSeries {
		if !gotSeries[s] {
			t.Errorf("series missing: %s", s)
		}
	}

	// A code outside the table is still counted, on first use.
	_, _ = m.Instrument(oddStats{}, metrics.REST).Stats(context.Background(), "")
	if got := value(t, m, "keypool_operations_total", "op", "stats", "outcome", "NOT_FOUND"); got != 1 {
		t.Errorf("unexpected code not counted: %v", got)
	}
}

// oddStats answers Stats with a code no Stats returns.
type oddStats struct{ keystore.Store }

func (oddStats) Stats(context.Context, string) (keystore.Stats, error) {
	return keystore.Stats{}, keystore.Errorf(keystore.ENOTFOUND, "odd")
}
