package rest_test

import (
	"context"
	"errors"
	"net/http"
	"net/http/httptest"
	"net/url"
	"testing"
	"time"

	"github.com/keypool/keypool/keystore"
	"github.com/keypool/keypool/rest"
	"github.com/keypool/keypool/rest/resttest"
)

// TestHistory: GET /v1/history answers the pool's recorded samples, oldest first,
// from since on; a bad since or pool is 400 and a pool never made has none.
func TestHistory(t *testing.T) {
	p := newPool(t)
	ctx, cancel := context.WithCancel(t.Context())
	defer cancel()
	go p.store.RecordHistory(ctx)
	p.generate(2)
	tick := func(want int) {
		t.Helper()
		if err := p.clock.BlockUntilContext(t.Context(), 2); err != nil { // the expirer, the sampler
			t.Fatal(err)
		}
		p.clock.Advance(keystore.HistoryInterval)
		deadline := time.Now().Add(10 * time.Second)
		for {
			if s, _ := p.store.History(t.Context(), "", time.Time{}); len(s) == want {
				return
			}
			if time.Now().After(deadline) {
				t.Fatalf("no sample %d after an interval", want)
			}
			time.Sleep(time.Millisecond)
		}
	}
	tick(1)
	p.acquire()
	tick(2)

	type sample struct {
		At                                                       time.Time
		Total, Available, Blocked, Cooling, Quarantined, Waiting int
	}
	type history struct{ Samples []sample }
	got := expect[history](t, p.do("GET", "/v1/history", ""), 200, "").Samples
	if len(got) != 2 || got[0].Available != 2 || got[1].Blocked != 1 || got[1].Total != 2 ||
		got[1].At.Sub(got[0].At) != keystore.HistoryInterval {
		t.Fatalf("history: %+v", got)
	}
	since := url.QueryEscape(got[1].At.In(time.FixedZone("CET", 3600)).Format(time.RFC3339Nano))
	if later := expect[history](t, p.do("GET", "/v1/history?pool=default&since="+since, ""), 200, "").Samples; len(later) != 1 || later[0] != got[1] {
		t.Fatalf("since the second sample: %+v", later)
	}
	if none := expect[history](t, p.do("GET", "/v1/history?pool=never", ""), 200, "").Samples; len(none) != 0 {
		t.Fatalf("a pool never made: %+v", none)
	}
	expect[errorBody](t, p.do("GET", "/v1/history?since=yesterday", ""), 400, "BAD_USER_INPUT")
	expect[errorBody](t, p.do("GET", "/v1/history?pool=no%20such", ""), 400, "BAD_USER_INPUT")
	expect[errorBody](t, p.do("GET", "/v1/history?limit=3", ""), 400, "BAD_USER_INPUT")
}

// TestReadyzJSON: asked for JSON, /readyz says whether the store is ready, which kind
// it is and why not, at the same status as its plain answer.
func TestReadyzJSON(t *testing.T) {
	p := newPool(t)
	ask := func(h http.Handler) *httptest.ResponseRecorder {
		r := httptest.NewRequest("GET", "/readyz", nil)
		r.Header.Set("Accept", "application/json, text/plain;q=0.5")
		w := httptest.NewRecorder()
		resttest.Handler(t, h).ServeHTTP(w, r)
		return w
	}
	type readiness struct {
		Ready    bool
		Store    string
		Reason   string
		Replicas int
	}
	if got := expect[readiness](t, ask(rest.Readyz(p.store, "memory", nil)), 200, ""); got != (readiness{Ready: true, Store: "memory", Replicas: 1}) {
		t.Fatalf("ready: %+v", got)
	}
	p.store.Close()
	if got := expect[readiness](t, ask(rest.Readyz(p.store, "redis", nil)), 503, ""); got.Ready || got.Store != "redis" || got.Reason == "" {
		t.Fatalf("closed: %+v", got)
	}
	if got := expect[readiness](t, ask(rest.Readyz(failingStore{err: errors.New("secret")}, "memory", nil)), 503, ""); got.Reason != "internal error" {
		t.Fatalf("an unknown failure: %+v", got)
	}
}
