package rest_test

import (
	"context"
	"net/url"
	"testing"
	"time"

	"github.com/keypool/keypool/keystore"
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
		At                                 time.Time
		Total, Available, Blocked, Waiting int
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
