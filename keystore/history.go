package keystore

import (
	"context"
	"slices"
	"sort"
	"sync"
	"time"
)

// The history of the pools' counts, for a dashboard that opens with its chart full:
// a sample of every pool every HistoryInterval, kept for HistoryRetention, all pools
// together in at most HistoryBytes. When many pools share the budget, each keeps its
// newest samples, as many as its share holds (a thousand pools: about half an hour).
const (
	HistoryInterval  = 10 * time.Second
	HistoryRetention = 24 * time.Hour
	HistoryBytes     = 4 << 20
	// MaxHistorySamples bounds one answer: a longer span is thinned evenly, its
	// newest sample always last.
	MaxHistorySamples = 1000
)

// StatsSample is a pool's counts at one instant.
type StatsSample struct {
	At time.Time
	Stats
}

// sample is a StatsSample as the history keeps it: 32 bytes.
type sample struct {
	at     int64 // unix nanoseconds
	counts [6]int32
}

const sampleBytes = 32

func packSample(at time.Time, s Stats) sample {
	c := func(n int) int32 { return int32(min(n, 1<<31-1)) }
	return sample{at: at.UnixNano(), counts: [6]int32{c(s.Total), c(s.Available), c(s.Blocked), c(s.Cooling), c(s.Quarantined), c(s.Waiting)}}
}

func (s sample) unpack() StatsSample {
	c := s.counts
	return StatsSample{At: time.Unix(0, s.at).UTC(), Stats: Stats{Total: int(c[0]), Available: int(c[1]), Blocked: int(c[2]),
		Cooling: int(c[3]), Quarantined: int(c[4]), Waiting: int(c[5])}}
}

// history holds the samples of each pool, oldest first, in a ring per pool.
type history struct {
	mu    sync.Mutex
	rings map[string]*sampleRing
}

type sampleRing struct {
	buf   []sample
	start int // of the oldest
	n     int
}

func (r *sampleRing) at(i int) sample { return r.buf[(r.start+i)%len(r.buf)] }

// resize makes room for limit samples, keeping the newest.
func (r *sampleRing) resize(limit int) {
	kept := make([]sample, limit)
	n := min(r.n, limit)
	for i := range n {
		kept[i] = r.at(r.n - n + i)
	}
	r.buf, r.start, r.n = kept, 0, n
}

// push appends s, dropping the oldest sample if the ring is full.
func (r *sampleRing) push(s sample) {
	if r.n == len(r.buf) {
		r.start = (r.start + 1) % len(r.buf)
		r.n--
	}
	r.buf[(r.start+r.n)%len(r.buf)] = s
	r.n++
}

// record adds a sample of every pool in pools, taken at at.
func (h *history) record(at time.Time, pools []PoolStats) {
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.rings == nil {
		h.rings = map[string]*sampleRing{}
	}
	for _, ps := range pools {
		if h.rings[ps.Name] == nil {
			h.rings[ps.Name] = &sampleRing{}
		}
	}
	// Every ring is the same size, shrunk as pools come.
	limit := max(1, min(int(HistoryRetention/HistoryInterval), HistoryBytes/sampleBytes/len(h.rings)))
	for _, r := range h.rings {
		if len(r.buf) != limit {
			r.resize(limit)
		}
	}
	for _, ps := range pools {
		h.rings[ps.Name].push(packSample(at, ps.Stats))
	}
}

// samples returns pool's samples taken at or after since, oldest first, at most
// MaxHistorySamples (thinned evenly, the newest kept).
func (h *history) samples(pool string, since time.Time) []StatsSample {
	h.mu.Lock()
	defer h.mu.Unlock()
	r := h.rings[pool]
	if r == nil {
		return []StatsSample{}
	}
	from := sort.Search(r.n, func(i int) bool { return r.at(i).at >= since.UnixNano() })
	count := r.n - from
	step := (count + MaxHistorySamples - 1) / max(1, MaxHistorySamples)
	out := make([]StatsSample, 0, min(count, MaxHistorySamples))
	// Walk back from the newest, every step-th sample, then put them oldest first.
	for i := r.n - 1; i >= from; i -= max(1, step) {
		out = append(out, r.at(i).unpack())
	}
	slices.Reverse(out)
	return out
}

// RecordHistory samples every pool's counts each HistoryInterval, on the store's
// clock, until ctx ends or the store stops. The server runs it; History answers from
// what it recorded.
func (p *Pool) RecordHistory(ctx context.Context) {
	ticker := p.clock.NewTicker(HistoryInterval)
	defer ticker.Stop()
	for {
		select {
		case <-ticker.Chan():
			if pools, err := p.Pools(ctx); err == nil {
				p.history.record(p.clock.Now(), pools)
			}
		case <-ctx.Done():
			return
		case <-p.stop:
			return
		}
	}
}

// History implements Store.
func (p *Pool) History(ctx context.Context, pool string, since time.Time) ([]StatsSample, error) {
	pool, err := PoolName(pool)
	if err != nil {
		return nil, err
	}
	return p.history.samples(pool, since), nil
}
