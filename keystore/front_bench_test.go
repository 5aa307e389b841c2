package keystore_test

import (
	"context"
	"fmt"
	"slices"
	"testing"
	"time"

	"github.com/jonboulle/clockwork"

	"github.com/keypool/keypool/keystore"
)

// BenchmarkAcquireUnblockSubscribers measures one Acquire plus its Unblock while many
// subscriptions are live that filter on EXPIRED, which none of these events is: they
// should cost the pool next to nothing. It reports the median and p99 of a cycle.
//
//	go test -run '^$' -bench 'AcquireUnblockSubscribers' -benchtime 20000x -count 1 ./keystore/
func BenchmarkAcquireUnblockSubscribers(b *testing.B) {
	for _, subscribers := range []int{0, 5000} {
		b.Run(fmt.Sprintf("subscribers=%d", subscribers), func(b *testing.B) {
			store, err := keystore.NewMemory(clockwork.NewRealClock(), benchOpts)
			if err != nil {
				b.Fatal(err)
			}
			defer store.Close()
			generate(b, store, 1000)
			ctx, cancel := context.WithCancel(context.Background())
			defer cancel()
			for range subscribers {
				if _, err := store.Subscribe(ctx, keystore.SubscribeOptions{Types: []keystore.EventType{keystore.EventExpired}}); err != nil {
					b.Fatal(err)
				}
			}
			cycles := make([]time.Duration, 0, b.N)
			b.ResetTimer()
			for b.Loop() {
				start := time.Now()
				k, err := store.Acquire(ctx, keystore.AcquireOptions{})
				if err != nil {
					b.Fatal(err)
				}
				if _, err := store.Unblock(ctx, k.ID, k.Lease.Token); err != nil {
					b.Fatal(err)
				}
				cycles = append(cycles, time.Since(start))
			}
			b.StopTimer()
			slices.Sort(cycles)
			b.ReportMetric(float64(cycles[len(cycles)/2].Nanoseconds()), "p50-ns")
			b.ReportMetric(float64(cycles[len(cycles)*99/100].Nanoseconds()), "p99-ns")
		})
	}
}

// BenchmarkAcquireInStormNotFound times an Acquire that finds no live key while a
// storm of 500,000 AVAILABLE keys whose keep-alive has just run out waits for the
// expirer: the answer, NOT_FOUND, must not wait for the storm to drain.
//
//	go test -run '^$' -bench 'AcquireInStormNotFound' -benchtime 3x -count 1 ./keystore/
func BenchmarkAcquireInStormNotFound(b *testing.B) {
	const storm = 500_000
	var took []time.Duration
	for b.Loop() {
		b.StopTimer()
		clock := clockwork.NewFakeClockAt(time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC))
		store, err := keystore.NewMemory(clock, keystore.Options{})
		if err != nil {
			b.Fatal(err)
		}
		generate(b, store, storm)
		clock.Advance(keystore.DefaultKeepAliveTTL)
		b.StartTimer()
		start := time.Now()
		_, err = store.Acquire(context.Background(), keystore.AcquireOptions{})
		took = append(took, time.Since(start))
		b.StopTimer()
		if keystore.ErrorCode(err) != keystore.ENOTFOUND {
			b.Fatalf("want NOT_FOUND, got %v", err)
		}
		_ = store.Close()
		b.StartTimer()
	}
	slices.Sort(took)
	b.ReportMetric(float64(took[len(took)/2].Microseconds()), "median-µs")
}
