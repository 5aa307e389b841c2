package keystore_test

import (
	"context"
	"flag"
	"fmt"
	"math/rand/v2"
	"runtime"
	"slices"
	"sort"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/jonboulle/clockwork"

	"github.com/keypool/keypool/keystore"
	"github.com/keypool/keypool/keystore/storetest"
)

// The benchmarks run on the real clock with TTLs far longer than any run, so that
// nothing expires behind them, except the expiry ones, which are about expiring.
//
// Run them, once each, with (the last three build a million keys per iteration):
//
//	go test -run '^$' -bench 'AcquireUnblock|KeepAlive|Generate|Delete|ListPage' -benchtime 20000x -count 1 ./keystore/
//	go test -run '^$' -bench 'HeapPerKey|ExpiryStorm|ExpiryLateness' -benchtime 1x -count 1 ./keystore/
var benchOpts = keystore.Options{
	LeaseTTL:     time.Hour,
	KeepAliveTTL: 24 * time.Hour,
	MaxLeaseTTL:  24 * time.Hour,
}

var poolSizes = []int{1_000, 100_000, 1_000_000}

// benchPool is a pool kept across benchmark runs: building a million keys takes
// longer than what is measured on it.
type benchPool struct {
	store *keystore.Pool
	ids   []string
}

var (
	benchPoolsMu sync.Mutex
	benchPools   = map[int]*benchPool{}
)

// pool returns the cached pool of size keys, building it (timer stopped) on first use.
// Benchmarks that change its size put it back as they found it.
func pool(b *testing.B, size int) *benchPool {
	b.Helper()
	benchPoolsMu.Lock()
	defer benchPoolsMu.Unlock()
	if p := benchPools[size]; p != nil {
		return p
	}
	b.StopTimer()
	defer b.StartTimer()
	store, err := keystore.NewMemory(clockwork.NewRealClock(), benchOpts)
	if err != nil {
		b.Fatal(err)
	}
	p := &benchPool{store: store, ids: generate(b, store, size)}
	benchPools[size] = p
	return p
}

// closeBenchPools releases the cached pools, so that the leak check after the run
// sees no expirer left.
func closeBenchPools() {
	benchPoolsMu.Lock()
	defer benchPoolsMu.Unlock()
	for size, p := range benchPools {
		_ = p.store.Close()
		delete(benchPools, size)
	}
}

// generate adds n keys to store in batches of the largest size and returns their ids.
func generate(tb testing.TB, store keystore.Store, n int) []string {
	ids := make([]string, 0, n)
	for len(ids) < n {
		keys, err := store.Generate(context.Background(), "", min(n-len(ids), keystore.DefaultMaxGenerate))
		if err != nil {
			tb.Fatal(err)
		}
		for _, k := range keys {
			ids = append(ids, k.ID)
		}
	}
	return ids
}

func forEachSize(b *testing.B, bench func(b *testing.B, p *benchPool)) {
	for _, size := range poolSizes {
		b.Run(fmt.Sprintf("keys=%d", size), func(b *testing.B) {
			p := pool(b, size)
			b.ReportAllocs()
			b.ResetTimer()
			bench(b, p)
		})
	}
}

func rerun(b *testing.B, what string) {
	b.Logf("%s; rerun: go test -run '^$' -bench '^%s$' -benchtime %s -count 1 ./keystore/",
		what, b.Name(), benchtime())
}

// benchtime reads the -test.benchtime flag back, for the rerun line.
func benchtime() string {
	if f := flag.Lookup("test.benchtime"); f != nil {
		return f.Value.String()
	}
	return "1s"
}

// BenchmarkAcquireUnblock measures one Acquire of a random free key plus the Unblock
// that returns it, with the pool at each size.
func BenchmarkAcquireUnblock(b *testing.B) {
	forEachSize(b, func(b *testing.B, p *benchPool) {
		ctx := context.Background()
		for b.Loop() {
			k, err := p.store.Acquire(ctx, keystore.AcquireOptions{})
			if err != nil {
				b.Fatal(err)
			}
			if _, err := p.store.Unblock(ctx, k.ID, k.Lease.Token); err != nil {
				b.Fatal(err)
			}
		}
		rerun(b, "time per Acquire+Unblock cycle")
	})
}

// BenchmarkListPage measures one page of List at each pool size: 100 keys of the
// common state (AVAILABLE), 100 of any state, from cursors spread over the whole
// pool, and the page of the 10 BLOCKED keys among the rest, which must cost about as
// much: a page never walks keys of another state.
func BenchmarkListPage(b *testing.B) {
	forEachSize(b, func(b *testing.B, p *benchPool) {
		ctx := context.Background()
		b.StopTimer()
		var cursors []string // spread over the pool
		for page := (keystore.Page{HasNext: true}); page.HasNext && len(cursors) < 1000; {
			var err error
			page, err = p.store.List(ctx, keystore.ListOptions{First: max(1, len(p.ids)/1000), After: page.EndCursor})
			if err != nil {
				b.Fatal(err)
			}
			cursors = append(cursors, page.EndCursor)
		}
		var leases []keystore.Key
		for range 10 {
			k, err := p.store.Acquire(ctx, keystore.AcquireOptions{})
			if err != nil {
				b.Fatal(err)
			}
			leases = append(leases, k)
		}
		defer func() {
			for _, k := range leases {
				_, _ = p.store.Unblock(ctx, k.ID, k.Lease.Token)
			}
		}()
		b.StartTimer()
		for _, c := range []struct {
			name   string
			status keystore.Status
			first  int
		}{{"available-100", keystore.Available, 100}, {"any-100", "", 100}, {"blocked-10-of-all", keystore.Blocked, 10}} {
			b.Run(c.name, func(b *testing.B) {
				i := 0
				for b.Loop() {
					after := cursors[i%len(cursors)]
					if c.status == keystore.Blocked {
						after = ""
					}
					page, err := p.store.List(ctx, keystore.ListOptions{Status: c.status, First: c.first, After: after})
					if err != nil {
						b.Fatal(err)
					}
					if c.status == keystore.Blocked && len(page.Keys) != 10 {
						b.Fatalf("%d BLOCKED keys listed, want 10", len(page.Keys))
					}
					i++
				}
				rerun(b, "time per page of List")
			})
		}
	})
}

// BenchmarkKeepAlive measures KeepAlive of a random key, which moves it in the
// keep-alive heap.
func BenchmarkKeepAlive(b *testing.B) {
	forEachSize(b, func(b *testing.B, p *benchPool) {
		ctx := context.Background()
		rng := rand.New(rand.NewPCG(1, 2))
		for b.Loop() {
			if _, err := p.store.KeepAlive(ctx, p.ids[rng.IntN(len(p.ids))]); err != nil {
				b.Fatal(err)
			}
		}
		rerun(b, "time per KeepAlive")
	})
}

// chunk is how many keys Generate and Delete add or remove between trips off the
// clock that put the pool back to its size: the pool stays within chunk of it.
const chunk = 1000

// BenchmarkGenerate measures Generate per key, in batches of 100, into a pool of each
// size; every chunk keys, the new keys are deleted off the clock.
func BenchmarkGenerate(b *testing.B) {
	const batch = 100
	forEachSize(b, func(b *testing.B, p *benchPool) {
		ctx := context.Background()
		made := make([]string, 0, chunk)
		var onClock time.Duration
		start, n := time.Now(), 0
		for b.Loop() {
			keys, err := p.store.Generate(ctx, "", batch)
			if err != nil {
				b.Fatal(err)
			}
			for _, k := range keys {
				made = append(made, k.ID)
			}
			n++
			if len(made) >= chunk {
				onClock += time.Since(start)
				b.StopTimer()
				for _, id := range made {
					if err := p.store.Delete(ctx, id); err != nil {
						b.Fatal(err)
					}
				}
				made = made[:0]
				b.StartTimer()
				start = time.Now()
			}
		}
		onClock += time.Since(start)
		b.StopTimer()
		for _, id := range made {
			if err := p.store.Delete(ctx, id); err != nil {
				b.Fatal(err)
			}
		}
		b.ReportMetric(float64(onClock.Nanoseconds())/float64(n*batch), "ns/key")
		rerun(b, fmt.Sprintf("time per Generate(%d) (ns/op) and per key (ns/key)", batch))
	})
}

// BenchmarkDelete measures Delete of a random key of a pool of each size. The keys it
// deletes are added beforehand, chunk by chunk off the clock, so the pool keeps its size.
func BenchmarkDelete(b *testing.B) {
	forEachSize(b, func(b *testing.B, p *benchPool) {
		ctx := context.Background()
		var extra []string
		for b.Loop() {
			if len(extra) == 0 {
				b.StopTimer()
				extra = generate(b, p.store, chunk)
				rand.Shuffle(len(extra), func(i, j int) { extra[i], extra[j] = extra[j], extra[i] })
				b.StartTimer()
			}
			if err := p.store.Delete(ctx, extra[len(extra)-1]); err != nil {
				b.Fatal(err)
			}
			extra = extra[:len(extra)-1]
		}
		b.StopTimer()
		for _, id := range extra {
			if err := p.store.Delete(ctx, id); err != nil {
				b.Fatal(err)
			}
		}
		rerun(b, "time per Delete")
	})
}

// BenchmarkHeapPerKey measures the live heap a pool of a million keys holds, per key:
// HeapAlloc after a GC with the pool built, minus HeapAlloc after a GC before it.
func BenchmarkHeapPerKey(b *testing.B) {
	const n = 1_000_000
	for b.Loop() {
		var before, after runtime.MemStats
		runtime.GC()
		runtime.ReadMemStats(&before)
		store, err := keystore.NewMemory(clockwork.NewRealClock(), benchOpts)
		if err != nil {
			b.Fatal(err)
		}
		for made := 0; made < n; made += keystore.DefaultMaxGenerate {
			if _, err := store.Generate(context.Background(), "", keystore.DefaultMaxGenerate); err != nil {
				b.Fatal(err)
			}
		}
		runtime.GC()
		runtime.ReadMemStats(&after)
		perKey := float64(int64(after.HeapAlloc)-int64(before.HeapAlloc)) / n
		runtime.KeepAlive(store)
		_ = store.Close()
		b.ReportMetric(perKey, "B/key")
	}
	rerun(b, "live heap bytes per key of a pool of 1e6 AVAILABLE keys (target <= 160)")
}

// schedProbe measures how late a goroutine that sleeps 100 µs at a time wakes up,
// touching no store: the machine's own scheduling delay, to read the latencies below
// against (on a shared 2-core machine it can be tens of milliseconds).
type schedProbe struct {
	stop chan struct{}
	done chan time.Duration
}

func startSchedProbe() *schedProbe {
	p := &schedProbe{stop: make(chan struct{}), done: make(chan time.Duration, 1)}
	go func() {
		var worst time.Duration
		for {
			select {
			case <-p.stop:
				p.done <- worst
				return
			default:
			}
			start := time.Now()
			time.Sleep(100 * time.Microsecond)
			worst = max(worst, time.Since(start)-100*time.Microsecond)
		}
	}()
	return p
}

// worst stops the probe and returns the longest oversleep it saw.
func (p *schedProbe) worst() time.Duration {
	close(p.stop)
	return <-p.done
}

// BenchmarkExpiryStorm lets a million keep-alive deadlines fall due at one instant (a
// fake clock moved past them at once) while two goroutines loop Acquire/Unblock on a
// thousand other keys. It reports the longest single Acquire (target < 5 ms), its p99,
// how long the storm took to drain (polling Stats every millisecond until only the
// survivors are left) and the longest of those Stats calls. In "blocked" the storm
// keys are BLOCKED under leases that outlive them, so the loopers only ever acquire
// survivors and the storm is the expirer's alone; in "available" they are AVAILABLE,
// so that, once dead, they are a thousand to one among the keys an Acquire may pick.
// BenchmarkExpiryStorm's storms: 1e6 keep-alive deadlines of BLOCKED keys, or of
// AVAILABLE ones, or 1e6 cool-downs (of keys that stay alive) ending at one instant.
func BenchmarkExpiryStorm(b *testing.B) {
	b.Run("blocked", func(b *testing.B) { benchExpiryStorm(b, "blocked") })
	b.Run("available", func(b *testing.B) { benchExpiryStorm(b, "available") })
	b.Run("cooling", func(b *testing.B) { benchExpiryStorm(b, "cooling") })
}

func benchExpiryStorm(b *testing.B, storming string) {
	const storm, survivors, loopers = 1_000_000, 1_000, 2
	for b.Loop() {
		b.StopTimer()
		ctx := context.Background()
		clock := clockwork.NewFakeClockAt(storetest.Start)
		opts := keystore.Options{}
		if storming == "cooling" {
			opts.KeepAliveTTL = time.Hour // the storm is of cool-downs alone
		}
		store, err := keystore.NewMemory(clock, opts)
		if err != nil {
			b.Fatal(err)
		}
		generate(b, store, storm)
		cooldown := 5 * time.Minute // every cool-down ends at Start+5m
		for i := 0; storming != "available" && i < storm; i++ {
			k, err := store.Acquire(ctx, keystore.AcquireOptions{TTL: keystore.TTL(10 * time.Minute)})
			if err != nil {
				b.Fatal(err)
			}
			if storming == "cooling" {
				if _, err := store.UnblockWith(ctx, k.ID, k.Lease.Token, keystore.UnblockOptions{Cooldown: &cooldown}); err != nil {
					b.Fatal(err)
				}
			}
		}
		clock.Advance(time.Minute)
		generate(b, store, survivors) // alive until Start+6m at least

		var (
			stop      atomic.Bool
			wg        sync.WaitGroup
			mu        sync.Mutex
			latencies []time.Duration
			failures  atomic.Int64
			failMu    sync.Mutex
			failCodes = map[string]int{}
		)
		fail := func(what string, err error) {
			failures.Add(1)
			failMu.Lock()
			failCodes[what+" "+string(keystore.ErrorCode(err))]++
			failMu.Unlock()
		}
		for range loopers {
			wg.Go(func() {
				var mine []time.Duration
				for !stop.Load() {
					start := time.Now()
					// An hour-long lease: the clock jumps four minutes in the storm.
					k, err := store.Acquire(ctx, keystore.AcquireOptions{TTL: keystore.TTL(time.Hour)})
					mine = append(mine, time.Since(start))
					if err != nil {
						fail("Acquire", err)
						continue
					}
					if _, err := store.Unblock(ctx, k.ID, k.Lease.Token); err != nil {
						fail("Unblock", err)
					}
				}
				mu.Lock()
				latencies = append(latencies, mine...)
				mu.Unlock()
			})
		}
		time.Sleep(20 * time.Millisecond) // the loopers are running before the storm
		probe := startSchedProbe()
		b.StartTimer()
		start := time.Now()
		clock.Advance(4 * time.Minute) // Start+5m: every storm deadline passes at once
		var longestStats time.Duration
		for {
			statsStart := time.Now()
			s, err := store.Stats(ctx, "")
			longestStats = max(longestStats, time.Since(statsStart))
			if err != nil {
				b.Fatal(err)
			}
			if storming == "cooling" && s.Cooling == 0 || storming != "cooling" && s.Total == survivors {
				break
			}
			if time.Since(start) > time.Minute {
				b.Fatalf("the storm did not drain in a minute: %+v", s)
			}
			time.Sleep(time.Millisecond)
		}
		drain := time.Since(start)
		b.StopTimer()
		time.Sleep(20 * time.Millisecond) // a little calm after the storm, for contrast
		stop.Store(true)
		wg.Wait()
		b.ReportMetric(float64(probe.worst().Microseconds())/1000, "max-oversleep-ms")
		_ = store.Close()
		slices.Sort(latencies)
		slow := len(latencies) - sort.Search(len(latencies), func(i int) bool { return latencies[i] >= 5*time.Millisecond })
		if len(failCodes) > 0 {
			b.Logf("failed requests during the storm: %v", failCodes)
		}
		b.ReportMetric(float64(slow), "acquires>=5ms")
		b.ReportMetric(float64(drain.Milliseconds()), "drain-ms")
		b.ReportMetric(float64(longestStats.Microseconds())/1000, "max-stats-ms")
		b.ReportMetric(float64(latencies[len(latencies)-1].Microseconds())/1000, "max-acquire-ms")
		b.ReportMetric(float64(latencies[len(latencies)*99/100].Microseconds())/1000, "p99-acquire-ms")
		b.ReportMetric(float64(len(latencies)), "acquires")
		b.ReportMetric(float64(failures.Load()), "failed-acquires")
		b.StartTimer()
	}
	rerun(b, "a storm of 1e6 keep-alive expiries or cool-downs ending: time to drain (drain-ms), longest and p99 Acquire meanwhile (target max < 5 ms)")
}

// BenchmarkExpiryLateness measures how late RELEASED events arrive on the real clock:
// 2000 leases of 1 s to 2 s, so that their deadlines spread over a second, and a
// subscriber that notes when each RELEASED arrives. Lateness is arrival minus the
// lease's deadline; it must never be negative (early), and p99 should stay < 20 ms.
func BenchmarkExpiryLateness(b *testing.B) {
	const leases = 2000
	for b.Loop() {
		b.StopTimer()
		ctx, cancel := context.WithCancel(context.Background())
		store, err := keystore.NewMemory(clockwork.NewRealClock(), benchOpts)
		if err != nil {
			b.Fatal(err)
		}
		generate(b, store, leases)
		sub, err := store.Subscribe(ctx, keystore.SubscribeOptions{Types: []keystore.EventType{keystore.EventReleased}})
		if err != nil {
			b.Fatal(err)
		}
		deadlines := map[string]time.Time{}
		rng := rand.New(rand.NewPCG(3, 4))
		for range leases {
			ttl := time.Second + time.Duration(rng.Int64N(int64(time.Second)))
			k, err := store.Acquire(ctx, keystore.AcquireOptions{TTL: keystore.TTL(ttl)})
			if err != nil {
				b.Fatal(err)
			}
			deadlines[k.ID] = k.Lease.ExpiresAt
		}
		probe := startSchedProbe()
		b.StartTimer()
		var lateness []time.Duration
		wrongAt := 0
		waitCtx, stop := context.WithTimeout(ctx, 30*time.Second)
		for len(lateness) < leases {
			ev, err := sub.Next(waitCtx)
			if ev == nil {
				b.Fatalf("only %d of %d RELEASED events arrived: %v", len(lateness), leases, err)
			}
			now := time.Now()
			deadline := deadlines[ev.KeyID]
			if !ev.At.Equal(deadline) {
				wrongAt++
			}
			lateness = append(lateness, now.Sub(deadline))
		}
		stop()
		b.StopTimer()
		b.ReportMetric(float64(probe.worst().Microseconds())/1000, "max-oversleep-ms")
		cancel()
		_ = store.Close()
		slices.Sort(lateness)
		early := max(-lateness[0], 0)
		b.ReportMetric(float64(early.Microseconds())/1000, "max-early-ms")
		b.ReportMetric(float64(lateness[len(lateness)/2].Microseconds())/1000, "p50-late-ms")
		b.ReportMetric(float64(lateness[len(lateness)*99/100].Microseconds())/1000, "p99-late-ms")
		b.ReportMetric(float64(lateness[len(lateness)-1].Microseconds())/1000, "max-late-ms")
		b.ReportMetric(float64(wrongAt), "wrong-At")
		b.StartTimer()
	}
	rerun(b, "lateness of RELEASED events on the real clock (target: never early, p99 < 20 ms)")
}
