package redisstore

import (
	"fmt"
	"math/rand/v2"
	"os"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/anishathalye/porcupine"
	"github.com/stretchr/testify/require"

	"github.com/keypool/keypool/keystore"
	"github.com/keypool/keypool/keystore/lincheck"
)

// linReplicas opens n replicas of one pool for a checked run: the first two talk to
// Redis through px (when not nil), the others directly. Keys the replicas' resolvers
// free go into h.
func linReplicas(t *testing.T, srv *redisServer, px *faultProxy, h *lincheck.History, n int, options ...Option) []testStore {
	t.Helper()
	urls := make([]string, n)
	for i := range urls {
		urls[i] = srv.url()
		if px != nil && i < 2 {
			urls[i] = px.url()
		}
	}
	return linReplicasAt(t, urls, h, options...)
}

// linReplicasAt opens a replica of one pool on each of urls for a checked run.
func linReplicasAt(t *testing.T, urls []string, h *lincheck.History, options ...Option) []testStore {
	t.Helper()
	clock := newFakeClock()
	ns := fmt.Sprintf("lin%d", namespaces.Add(1))
	var ids atomic.Pointer[keystore.IDCodec]
	resolved := withResolved(func(key uint64, fence int64, start, end time.Time) {
		h.Release(ids.Load().KeyID(key), fence, start, end)
	})
	stores := make([]testStore, len(urls))
	for i, url := range urls {
		stores[i] = openAt(t, url, clock, lincheck.Options, ns, append([]Option{resolved}, options...)...)
	}
	ids.Store(stores[0].b.ids)
	return stores
}

func asStores(replicas []testStore) []keystore.Store {
	stores := make([]keystore.Store, len(replicas))
	for i, r := range replicas {
		stores[i] = r
	}
	return stores
}

// linRounds is how many rounds of faults TestLinearizableUnderFaults injects (a round
// is one of each kind): a size for CI, or KEYPOOL_LINCHECK_ROUNDS for a longer run.
func linRounds(t *testing.T) int {
	rounds := 2
	if v := os.Getenv("KEYPOOL_LINCHECK_ROUNDS"); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil || n < 1 {
			t.Fatalf("KEYPOOL_LINCHECK_ROUNDS=%q: want a positive count", v)
		}
		rounds = n
	}
	return rounds
}

// TestLinearizableUnderFaults records a history of 8 clients on three replicas of one
// pool while faults are injected one after another: Redis paused (SIGSTOP, then
// SIGCONT), Redis killed (SIGKILL) and restarted from its append-only file, and a proxy
// in front of two of the replicas that loses replies after Redis ran the request.
// The calls of two of the clients have a 300 ms deadline, shorter than the longer
// pauses, so that some calls end UNAVAILABLE with their outcome unknown. porcupine must find the history
// linearizable against the sequential model. The clients call until the faults are
// over, at most 1000 calls each per round of faults.
//
//	KEYPOOL_LINCHECK_ROUNDS=20 go test -run TestLinearizableUnderFaults -v ./keystore/redisstore
func TestLinearizableUnderFaults(t *testing.T) {
	srv := startRedisAOF(t)
	px := startProxy(t, srv)
	h := lincheck.NewHistory()
	replicas := linReplicas(t, srv, px, h, 3)

	rounds := linRounds(t)
	done := make(chan struct{})
	t.Cleanup(func() { <-done }) // before the server's own cleanup
	var paused, killed, lossy atomic.Int64
	go func() {
		defer close(done)
		rng := rand.New(rand.NewPCG(1, 2))
		// Real-time pauses between and within faults: how long a fault lasts, not a
		// stand-in for the pool's clock.
		pause := func(min, spread int) { time.Sleep(time.Duration(min+rng.IntN(spread)) * time.Millisecond) }
		for range rounds {
			pause(30, 70)
			srv.pause()
			pause(100, 400)
			srv.resume()
			paused.Add(1)

			pause(30, 70)
			srv.kill()
			srv.start()
			killed.Add(1)

			pause(30, 70)
			px.loseReplies(0.2)
			pause(100, 200)
			px.loseReplies(0)
			lossy.Add(1)
		}
		pause(30, 70)
	}()
	start := time.Now()
	h.Run(t, lincheck.Config{Stores: asStores(replicas), Clients: 8, Calls: 1000 * rounds, Until: done, Keys: 4, Pools: []string{keystore.DefaultPool, "b"},
		Timeout: 300 * time.Millisecond, TimedClients: 2, Seed: 7, Held: true})
	<-done
	recorded := time.Since(start)
	// Every acquire of unknown outcome is resolved before the history is checked, so
	// that the keys freed for them are in it.
	for _, r := range replicas {
		waitFor(t, func() bool { return r.b.pending() == 0 })
	}
	res := h.Check(t, 45*time.Second)
	t.Logf("%s; faults: %d pauses, %d kills, %d bursts of lost replies (%d replies lost); recorded in %v, checked in %v",
		h.Summary(), paused.Load(), killed.Load(), lossy.Load(), px.dropped.Load(), recorded.Round(time.Millisecond),
		(time.Since(start) - recorded).Round(time.Millisecond))
	require.Equal(t, porcupine.Ok, res, "the history has no linearization")
}

// TestLinearizabilityCatchesBrokenScripts shows that the check can fail: the same
// workload on replicas running a deliberately broken script has no linearization. The
// last case is the defect of lost replies: requests sent again without their slot, so
// that a retry after a lost reply runs them twice.
func TestLinearizabilityCatchesBrokenScripts(t *testing.T) {
	cases := []struct {
		name    string
		options func(t *testing.T) []Option
		lossy   bool
	}{
		{"unblock ignores the token", func(t *testing.T) []Option {
			src := strings.Replace(unblockSource, "if want ~= 0 and want ~= f then return done({-3, now}) end", "", 1)
			require.NotEqual(t, unblockSource, src)
			set := defaultScripts
			set.unblock = poolFn("unblock", src)
			return []Option{withScripts(set)}
		}, false},
		{"acquire leaves the key available", func(t *testing.T) []Option {
			src := strings.Replace(acquireSource, "redis.call('ZREM', AVAIL, n)\n", "", 1)
			require.NotEqual(t, acquireSource, src)
			set := defaultScripts
			set.acquire = poolFn("acquire", src)
			return []Option{withScripts(set)}
		}, false},
		{"retries run requests again", func(*testing.T) []Option { return []Option{withoutSlots()} }, true},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			srv := startRedis(t)
			var px *faultProxy
			if c.lossy {
				px = startProxy(t, srv)
			}
			h := lincheck.NewHistory()
			replicas := linReplicas(t, srv, px, h, 2, c.options(t)...)
			if px != nil {
				px.loseReplies(0.1)
			}
			h.Run(t, lincheck.Config{Stores: asStores(replicas), Clients: 8, Calls: 100, Keys: 4, Pools: []string{keystore.DefaultPool, "b"}, Seed: 3})
			res := h.Check(t, time.Minute)
			t.Logf("%s", h.Summary())
			require.Equal(t, porcupine.Illegal, res, "the check found no violation in a history of a broken store")
		})
	}
}
