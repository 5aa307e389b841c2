package keystore

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/jonboulle/clockwork"
	"github.com/stretchr/testify/require"
)

// TestHistoryRecordsEveryPool: RecordHistory samples each pool every HistoryInterval
// on the store's clock, History answers a pool's samples from since on, oldest first,
// with the counts of the moment, and RecordHistory ends with its context.
func TestHistoryRecordsEveryPool(t *testing.T) {
	clock := clockwork.NewFakeClock()
	p, err := NewMemory(clock, Options{})
	require.NoError(t, err)
	defer p.Close()
	ctx, cancel := context.WithCancel(t.Context())
	done := make(chan struct{})
	go func() { defer close(done); p.RecordHistory(ctx) }()

	_, err = p.Generate(t.Context(), "a", 3)
	require.NoError(t, err)
	tick := func() {
		t.Helper()
		before := len(p.history.samples("a", time.Time{}))
		// The expirer's timer and the sampler's ticker.
		require.NoError(t, clock.BlockUntilContext(t.Context(), 2))
		clock.Advance(HistoryInterval)
		require.Eventually(t, func() bool { return len(p.history.samples("a", time.Time{})) == before+1 },
			10*time.Second, time.Millisecond, "no sample after an interval")
	}
	tick()
	first := clock.Now()
	_, err = p.Acquire(t.Context(), AcquireOptions{Pool: "a"})
	require.NoError(t, err)
	tick()

	got, err := p.History(t.Context(), "a", time.Time{})
	require.NoError(t, err)
	require.Len(t, got, 2)
	require.True(t, got[0].At.Equal(first), "first sample at %v, want %v", got[0].At, first)
	require.Equal(t, Stats{Total: 3, Available: 3}, got[0].Stats)
	require.Equal(t, Stats{Total: 3, Available: 2, Blocked: 1}, got[1].Stats)

	// The default pool is sampled too, though never made; since cuts the older.
	got, err = p.History(t.Context(), "", first.Add(time.Nanosecond))
	require.NoError(t, err)
	require.Len(t, got, 1)
	require.Equal(t, Stats{}, got[0].Stats)
	got, err = p.History(t.Context(), "never", time.Time{})
	require.NoError(t, err)
	require.Empty(t, got)
	_, err = p.History(t.Context(), "no such name!", time.Time{})
	require.Equal(t, EINVALID, ErrorCode(err))

	cancel()
	select {
	case <-done:
	case <-time.After(10 * time.Second):
		t.Fatal("RecordHistory did not end with its context")
	}
}

// TestHistoryBounds: however many pools, the samples kept fit HistoryBytes, each pool
// keeping its newest; a day of samples is answered thinned to MaxHistorySamples, the
// newest last.
func TestHistoryBounds(t *testing.T) {
	var h history
	start := time.Unix(1_000_000, 0)
	day := int(HistoryRetention / HistoryInterval)
	at := func(i int) time.Time { return start.Add(time.Duration(i) * HistoryInterval) }
	for i := range day + 10 {
		h.record(at(i), []PoolStats{{Name: "a", Stats: Stats{Total: i}}})
	}
	got := h.samples("a", time.Time{})
	require.LessOrEqual(t, len(got), MaxHistorySamples)
	require.Greater(t, len(got), MaxHistorySamples*9/10)
	require.Equal(t, day+9, got[len(got)-1].Total, "the newest sample is last")
	step := got[1].Total - got[0].Total
	require.Greater(t, step, 1)
	for i := 1; i < len(got); i++ {
		require.Equal(t, step, got[i].Total-got[i-1].Total, "evenly thinned, oldest first")
	}
	// A day and ten samples were taken; the ring keeps a day.
	require.Equal(t, day, h.rings["a"].n)

	// A thousand pools share the budget: each keeps its newest samples.
	pools := make([]PoolStats, 1000)
	for i := range pools {
		pools[i] = PoolStats{Name: fmt.Sprintf("p%d", i)}
	}
	for i := range 200 {
		pools[0].Stats.Total = i
		h.record(at(day+10+i), pools)
	}
	kept := 0
	for _, r := range h.rings {
		kept += len(r.buf)
	}
	require.LessOrEqual(t, kept*sampleBytes, HistoryBytes)
	got = h.samples("p0", time.Time{})
	require.NotEmpty(t, got)
	require.Equal(t, 199, got[len(got)-1].Total)
	old := h.samples("a", time.Time{})
	require.Len(t, old, len(h.rings["a"].buf), "a shrank to its share")
	require.Equal(t, day+9, old[len(old)-1].Total, "keeping its newest")
}
