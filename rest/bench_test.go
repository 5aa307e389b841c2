package rest_test

import (
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"testing"
	"time"

	"github.com/jonboulle/clockwork"

	"github.com/keypool/keypool/keystore"
	"github.com/keypool/keypool/rest"
)

// The REST handler against the plainest net/http handler that serves the same answer
// with encoding/json. Run:
//
//	go test -run '^$' -bench . -benchmem ./rest/
//
// and compare ns/op of each pair (REST should be at least as fast as plain).

func benchStore(b *testing.B) (*keystore.Pool, string) {
	store, err := keystore.NewMemory(clockwork.NewRealClock(), keystore.Options{})
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { store.Close() })
	keys, err := store.Generate(b.Context(), "", 1000)
	if err != nil {
		b.Fatal(err)
	}
	for {
		k, err := store.Acquire(b.Context(), keystore.AcquireOptions{})
		if err != nil {
			b.Fatal(err)
		}
		if k.ID == keys[0].ID { // a blocked key: the full shape, lease and history included
			return store, k.ID
		}
	}
}

// plainKey is how a plain handler would shape a key with encoding/json.
type plainKey struct {
	ID        string      `json:"id"`
	Status    string      `json:"status"`
	CreatedAt string      `json:"createdAt"`
	ExpiresAt string      `json:"expiresAt"`
	Lease     *plainLease `json:"lease"`
	History   struct {
		TimesAcquired  int64   `json:"timesAcquired"`
		LeasesExpired  int64   `json:"leasesExpired"`
		LastAcquiredAt *string `json:"lastAcquiredAt"`
	} `json:"history"`
}

type plainLease struct {
	Token      string `json:"token"`
	Fence      int64  `json:"fence"`
	ExpiresAt  string `json:"expiresAt"`
	AcquiredAt string `json:"acquiredAt"`
}

func plainHandler(store keystore.Store) http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /v1/keys/{id}", func(w http.ResponseWriter, r *http.Request) {
		k, err := store.Get(r.Context(), r.PathValue("id"))
		if err != nil {
			http.Error(w, err.Error(), http.StatusNotFound)
			return
		}
		p := plainKey{ID: k.ID, Status: string(k.Status), CreatedAt: k.CreatedAt.UTC().Format(time.RFC3339Nano), ExpiresAt: k.ExpiresAt.UTC().Format(time.RFC3339Nano)}
		if k.Lease != nil {
			p.Lease = &plainLease{Token: k.Lease.Token, Fence: k.Lease.Fence, ExpiresAt: k.Lease.ExpiresAt.UTC().Format(time.RFC3339Nano), AcquiredAt: k.Lease.AcquiredAt.UTC().Format(time.RFC3339Nano)}
		}
		p.History.TimesAcquired, p.History.LeasesExpired = k.History.TimesAcquired, k.History.LeasesExpired
		if !k.History.LastAcquiredAt.IsZero() {
			last := k.History.LastAcquiredAt.UTC().Format(time.RFC3339Nano)
			p.History.LastAcquiredAt = &last
		}
		w.Header().Set("Content-Type", "application/json")
		json.NewEncoder(w).Encode(p)
	})
	mux.HandleFunc("GET /v1/stats", func(w http.ResponseWriter, r *http.Request) {
		s, _ := store.Stats(r.Context(), "")
		w.Header().Set("Content-Type", "application/json")
		json.NewEncoder(w).Encode(map[string]int{"total": s.Total, "available": s.Available, "blocked": s.Blocked})
	})
	return mux
}

func benchServe(b *testing.B, h http.Handler, path string) {
	r := httptest.NewRequest("GET", path, nil)
	b.ReportAllocs()
	b.ResetTimer()
	for b.Loop() {
		w := httptest.NewRecorder()
		h.ServeHTTP(w, r)
		if w.Code != 200 {
			b.Fatal(w.Code, w.Body)
		}
	}
}

func BenchmarkGetKey(b *testing.B) {
	store, id := benchStore(b)
	b.Run("rest", func(b *testing.B) { benchServe(b, rest.New(store, nil), "/v1/keys/"+id) })
	b.Run("plain", func(b *testing.B) { benchServe(b, plainHandler(store), "/v1/keys/"+id) })
}

func BenchmarkStats(b *testing.B) {
	store, _ := benchStore(b)
	b.Run("rest", func(b *testing.B) { benchServe(b, rest.New(store, nil), "/v1/stats") })
	b.Run("plain", func(b *testing.B) { benchServe(b, plainHandler(store), "/v1/stats") })
}
