package graph_test

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"os"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/jonboulle/clockwork"
	"github.com/stretchr/testify/require"

	"github.com/keypool/keypool/graph"
	"github.com/keypool/keypool/internal/costly"
	"github.com/keypool/keypool/keystore"
)

// costlyBytes is the size the costly documents are built to: the body limit, less
// room for the per-request comment that keeps each one out of the query cache.
// KEYPOOL_COSTLY_BYTES overrides it (to measure a server without the limits on
// documents small enough to finish). Under the race detector they are 64 KiB: it
// makes building them at 1 MiB take minutes, and the costs are measured without it
// (.ci/run runs these tests again so).
func costlyBytes(tb testing.TB) int {
	if s := os.Getenv("KEYPOOL_COSTLY_BYTES"); s != "" {
		n, err := strconv.Atoi(s)
		require.NoError(tb, err)
		return n
	}
	if raceEnabled {
		return 64 << 10
	}
	return graph.MaxBodyBytes - 64
}

// costlyDocuments are the worst requests of every shape, at their largest.
func costlyDocuments(tb testing.TB) []costly.Doc {
	return costly.Documents(costlyBytes(tb), graph.MaxDocumentTokens)
}

// uncached makes body's query text unique to i with a leading comment, so that the
// query cache cannot answer it: every request pays the full price of a new document.
func uncached(body []byte, i int) []byte {
	prefix := []byte(`{"query":"`)
	if !bytes.HasPrefix(body, prefix) {
		return body
	}
	out := make([]byte, 0, len(body)+16)
	out = append(out, prefix...)
	out = fmt.Appendf(out, `#%d\n`, i)
	return append(out, body[len(prefix):]...)
}

func newCostlyHandler(tb testing.TB) http.Handler {
	store, err := keystore.NewMemory(clockwork.NewRealClock(), keystore.Options{})
	require.NoError(tb, err)
	tb.Cleanup(func() { _ = store.Close() })
	return graph.NewServer(store, graph.ServerOptions{Logger: slog.New(slog.NewTextHandler(io.Discard, nil))})
}

func serve(h http.Handler, body []byte) *httptest.ResponseRecorder {
	req := httptest.NewRequest(http.MethodPost, "/graphql", bytes.NewReader(body))
	req.Header.Set("Content-Type", "application/json")
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, req)
	return rec
}

// newRequest is a POST of body and a recorder with room for the largest answer, so
// that what the client side allocates is not counted as the server's.
func newRequest(body []byte) (*http.Request, *httptest.ResponseRecorder) {
	req := httptest.NewRequest(http.MethodPost, "/graphql", bytes.NewReader(body))
	req.Header.Set("Content-Type", "application/json")
	rec := httptest.NewRecorder()
	rec.Body = bytes.NewBuffer(make([]byte, 0, 4<<20))
	return req, rec
}

// cpuTime is the CPU time the process has used so far, user and system, every thread
// (the garbage collector's included).
func cpuTime() time.Duration {
	var ru syscall.Rusage
	_ = syscall.Getrusage(syscall.RUSAGE_SELF, &ru)
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// BenchmarkCostlyDocuments sends each worst document to the handler, a new text every
// time, and reports the server CPU time per request (cpu-ms/op, the process's user and
// system time: GC included) beside Go's B/op and allocs/op.
//
//	go test -run '^$' -bench Costly -benchtime 20x ./graph/
func BenchmarkCostlyDocuments(b *testing.B) {
	h := newCostlyHandler(b)
	for _, doc := range costlyDocuments(b) {
		b.Run(doc.Name, func(b *testing.B) {
			reqs := make([]*http.Request, b.N)
			recs := make([]*httptest.ResponseRecorder, b.N)
			for i := range reqs {
				reqs[i], recs[i] = newRequest(uncached(doc.Body, i))
			}
			b.ReportAllocs()
			b.ResetTimer()
			start := cpuTime()
			for i := 0; i < b.N; i++ {
				rec := recs[i]
				h.ServeHTTP(rec, reqs[i])
				if rec.Code >= 500 {
					b.Fatalf("status %d: %.300s", rec.Code, rec.Body)
				}
			}
			b.ReportMetric(float64(cpuTime()-start)/float64(time.Millisecond)/float64(b.N), "cpu-ms/op")
			b.ReportMetric(float64(len(doc.Body)), "body-B")
		})
	}
}

// maxRequestAlloc is the most one request may allocate, whatever its shape: the
// issue's 16 MiB, as bytes allocated (an upper bound of the memory it holds).
const maxRequestAlloc = 16 << 20

// TestCostlyDocuments sends every worst document, each a new text, and checks that
// each is answered (a refusal with a code, or a bounded answer) and allocates less
// than maxRequestAlloc. Their CPU time is measured by BenchmarkCostlyDocuments.
func TestCostlyDocuments(t *testing.T) {
	h := newCostlyHandler(t)
	for i, doc := range costlyDocuments(t) {
		t.Run(doc.Name, func(t *testing.T) {
			body := uncached(doc.Body, i)
			req, rec := newRequest(body)
			var before, after runtime.MemStats
			runtime.ReadMemStats(&before)
			h.ServeHTTP(rec, req)
			runtime.ReadMemStats(&after)
			require.Less(t, rec.Code, 500, "%.300s", rec.Body)
			var resp response
			require.NoError(t, json.Unmarshal(rec.Body.Bytes(), &resp), "%.300s", rec.Body)
			for _, e := range resp.Errors {
				require.NotEmpty(t, e.code(), "every error has a code: %.300s", rec.Body)
				require.NotEqual(t, "INTERNAL_SERVER_ERROR", e.code())
			}
			if costly.IsAnswer(doc) {
				require.Empty(t, resp.Errors, "the limits let it through: it is answered")
			}
			allocated := after.TotalAlloc - before.TotalAlloc
			t.Logf("%d bytes in, %d bytes allocated, %s", len(body), allocated, firstCode(resp))
			if !raceEnabled { // the race detector's own allocations are not the request's
				require.Less(t, allocated, uint64(maxRequestAlloc), "allocated %d bytes", allocated)
			}
		})
	}
}

func firstCode(r response) string {
	if len(r.Errors) == 0 {
		return "answered"
	}
	return r.Errors[0].code()
}

// TestCachesAreBoundedInBytes fills the query cache and the persisted queries' cache
// with distinct documents of nearly 1 MiB each, and checks that the heap they leave
// behind stays within the caches' budgets; and that documents the complexity limit
// refuses are not kept at all.
func TestCachesAreBoundedInBytes(t *testing.T) {
	const documents = 64
	padding := strings.Repeat(" ", graph.MaxBodyBytes-4096)
	aliases := strings.Repeat(" a: stats { total }", 8) // one response name: merged, cheap
	heldAfter := func(t *testing.T, send func(h http.Handler, i int)) (held int64) {
		h := newCostlyHandler(t)
		serve(h, []byte(`{"query":"{ stats { total } }"}`)) // warm up
		var before, after runtime.MemStats
		runtime.GC()
		runtime.ReadMemStats(&before)
		for i := range documents {
			send(h, i)
		}
		runtime.GC()
		runtime.ReadMemStats(&after)
		runtime.KeepAlive(h)
		return int64(after.HeapAlloc) - int64(before.HeapAlloc)
	}
	post := func(t *testing.T, h http.Handler, req map[string]any) response {
		body, err := json.Marshal(req)
		require.NoError(t, err)
		rec := serve(h, body)
		var resp response
		require.NoError(t, json.Unmarshal(rec.Body.Bytes(), &resp), "%.300s", rec.Body)
		return resp
	}

	t.Run("documents the complexity limit refuses are not cached", func(t *testing.T) {
		var flood strings.Builder
		flood.WriteString("{")
		for i := range 150 {
			fmt.Fprintf(&flood, " a%d: stats { total }", i)
		}
		flood.WriteString(" }")
		held := heldAfter(t, func(h http.Handler, i int) {
			resp := post(t, h, map[string]any{"query": fmt.Sprintf("#%d\n", i) + flood.String() + padding})
			require.Equal(t, "COMPLEXITY_LIMIT_EXCEEDED", firstCode(resp))
		})
		t.Logf("%d documents refused, %d bytes held", documents, held)
		require.Less(t, held, int64(8<<20))
	})
	t.Run("documents that pass are cached within QueryCacheBytes", func(t *testing.T) {
		held := heldAfter(t, func(h http.Handler, i int) {
			resp := post(t, h, map[string]any{"query": fmt.Sprintf("#%d\n{", i) + aliases + " }" + padding})
			require.Empty(t, resp.Errors)
		})
		t.Logf("%d documents cached, %d bytes held", documents, held)
		require.Less(t, held, int64(graph.QueryCacheBytes+8<<20))
	})
	t.Run("persisted queries are cached within their budgets", func(t *testing.T) {
		held := heldAfter(t, func(h http.Handler, i int) {
			query := fmt.Sprintf("#%d\n{", i) + aliases + " }" + padding
			resp := post(t, h, map[string]any{"query": query, "extensions": map[string]any{
				"persistedQuery": map[string]any{"version": 1, "sha256Hash": sha256Hex(query)}}})
			require.Empty(t, resp.Errors)
		})
		t.Logf("%d persisted queries, %d bytes held", documents, held)
		require.Less(t, held, int64(graph.QueryCacheBytes+graph.PersistedQueryCacheBytes+8<<20))
	})
}

// BenchmarkCostlyNeighbours measures what others see while attackers send the worst
// documents: costlyAttackers clients loop over every worst document (a new text each
// time) against a real server on loopback, and one client sends a cached query, one
// request at a time, b.N times; it reports that client's p50 and p99 latency.
//
//	go test -run '^$' -bench CostlyNeighbours -benchtime 2000x ./graph/
func BenchmarkCostlyNeighbours(b *testing.B) {
	srv := httptest.NewServer(newCostlyHandler(b))
	defer srv.Close()
	docs := costlyDocuments(b)
	stop := make(chan struct{})
	var attacks atomic.Int64
	var wg sync.WaitGroup
	for a := range costlyAttackers {
		wg.Go(func() {
			client := &http.Client{Transport: &http.Transport{}}
			defer client.CloseIdleConnections()
			for i := a; ; i++ {
				select {
				case <-stop:
					return
				default:
				}
				res, err := client.Post(srv.URL, "application/json", bytes.NewReader(uncached(docs[i%len(docs)].Body, i)))
				if err == nil {
					_, _ = io.Copy(io.Discard, res.Body)
					res.Body.Close()
					attacks.Add(1)
				}
			}
		})
	}
	client := &http.Client{Transport: &http.Transport{}}
	query := []byte(`{"query":"{ stats { total available blocked } }"}`)
	latencies := make([]time.Duration, 0, b.N)
	b.ResetTimer()
	for range b.N {
		start := time.Now()
		res, err := client.Post(srv.URL, "application/json", bytes.NewReader(query))
		require.NoError(b, err)
		_, _ = io.Copy(io.Discard, res.Body)
		res.Body.Close()
		require.Equal(b, http.StatusOK, res.StatusCode)
		latencies = append(latencies, time.Since(start))
	}
	b.StopTimer()
	close(stop)
	wg.Wait()
	slices.Sort(latencies)
	pct := func(p float64) float64 {
		return float64(latencies[int(float64(len(latencies)-1)*p)]) / float64(time.Millisecond)
	}
	b.ReportMetric(pct(0.5), "p50-ms")
	b.ReportMetric(pct(0.99), "p99-ms")
	b.ReportMetric(float64(attacks.Load())/float64(b.N), "attacks/op")
}

// costlyAttackers is how many clients send the worst documents at once.
const costlyAttackers = 4
