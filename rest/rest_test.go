package rest_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/jonboulle/clockwork"

	"github.com/keypool/keypool/keystore"
	"github.com/keypool/keypool/rest"
	"github.com/keypool/keypool/rest/resttest"
)

// pool is a REST handler on a real in-memory store whose clock the test moves.
type pool struct {
	t       *testing.T
	clock   *clockwork.FakeClock
	store   *keystore.Pool
	handler http.Handler
}

func newPool(t *testing.T) *pool {
	t.Helper()
	return newPoolWith(t, keystore.Options{})
}

func newPoolWith(t *testing.T, opts keystore.Options) *pool {
	t.Helper()
	clock := clockwork.NewFakeClockAt(time.Date(2026, 11, 24, 14, 0, 0, 123456789, time.FixedZone("CET", 3600)))
	store, err := keystore.NewMemory(clock, opts)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { store.Close() })
	return &pool{t: t, clock: clock, store: store, handler: resttest.Handler(t, rest.New(store, nil))}
}

func (p *pool) do(method, path, body string) *httptest.ResponseRecorder {
	p.t.Helper()
	var r *http.Request
	if body == "" {
		r = httptest.NewRequest(method, path, nil)
	} else {
		r = httptest.NewRequest(method, path, strings.NewReader(body))
		r.Header.Set("Content-Type", "application/json")
	}
	w := httptest.NewRecorder()
	p.handler.ServeHTTP(w, r)
	return w
}

// expect checks the status (and the JSON error code, for errors) and decodes the body.
func expect[T any](t *testing.T, w *httptest.ResponseRecorder, status int, code string) T {
	t.Helper()
	var v T
	if w.Code != status {
		t.Fatalf("status %d, want %d; body %s", w.Code, status, w.Body)
	}
	if status == http.StatusNoContent {
		if w.Body.Len() != 0 {
			t.Fatalf("204 with a body: %s", w.Body)
		}
		return v
	}
	if ct := w.Header().Get("Content-Type"); ct != "application/json" {
		t.Fatalf("Content-Type %q", ct)
	}
	if code != "" {
		var e errorBody
		if err := json.Unmarshal(w.Body.Bytes(), &e); err != nil {
			t.Fatalf("error body %s: %v", w.Body, err)
		}
		if e.Error.Code != code || e.Error.Message == "" {
			t.Fatalf("error %+v, want code %s and a message", e.Error, code)
		}
	}
	dec := json.NewDecoder(w.Body)
	dec.DisallowUnknownFields()
	if err := dec.Decode(&v); err != nil {
		t.Fatalf("decoding %T: %v", v, err)
	}
	return v
}

type errorBody struct {
	Error struct {
		Code    string `json:"code"`
		Message string `json:"message"`
	} `json:"error"`
}

// The client's view of the REST types, field names as in GraphQL.
type (
	keyJSON struct {
		ID        string     `json:"id"`
		Pool      string     `json:"pool"`
		Status    string     `json:"status"`
		CreatedAt time.Time  `json:"createdAt"`
		ExpiresAt time.Time  `json:"expiresAt"`
		Lease     *leaseJSON `json:"lease"`
		History   struct {
			TimesAcquired       int64      `json:"timesAcquired"`
			LeasesExpired       int64      `json:"leasesExpired"`
			LastAcquiredAt      *time.Time `json:"lastAcquiredAt"`
			Failures            int64      `json:"failures"`
			ConsecutiveFailures int64      `json:"consecutiveFailures"`
		} `json:"history"`
		CoolingUntil *time.Time `json:"coolingUntil"`
		Name         *string    `json:"name"`
	}
	leaseJSON struct {
		Token      string    `json:"token"`
		Fence      int64     `json:"fence"`
		Fence64    string    `json:"fence64"`
		ExpiresAt  time.Time `json:"expiresAt"`
		AcquiredAt time.Time `json:"acquiredAt"`
		Holder     *string   `json:"holder"`
		Secret     *string   `json:"secret"`
		Key        *keyJSON  `json:"key"`
	}
	keysJSON struct {
		Keys []keyJSON `json:"keys"`
	}
	pageJSON struct {
		Keys       []keyJSON `json:"keys"`
		NextCursor *string   `json:"nextCursor"`
	}
	statsJSON struct {
		Total       int `json:"total"`
		Available   int `json:"available"`
		Blocked     int `json:"blocked"`
		Cooling     int `json:"cooling"`
		Quarantined int `json:"quarantined"`
		Waiting     int `json:"waiting"`
	}
	poolsJSON struct {
		Pools []struct {
			Name  string    `json:"name"`
			Stats statsJSON `json:"stats"`
		} `json:"pools"`
	}
)

func (p *pool) generate(n int) []keyJSON {
	p.t.Helper()
	return expect[keysJSON](p.t, p.do("POST", "/v1/keys", fmt.Sprintf(`{"count":%d}`, n)), 201, "").Keys
}

func (p *pool) acquire() leaseJSON {
	p.t.Helper()
	return expect[leaseJSON](p.t, p.do("POST", "/v1/keys/acquire", ""), 200, "")
}

func (p *pool) stats() statsJSON {
	p.t.Helper()
	return expect[statsJSON](p.t, p.do("GET", "/v1/stats", ""), 200, "")
}

func TestGenerate(t *testing.T) {
	p := newPool(t)
	keys := expect[keysJSON](t, p.do("POST", "/v1/keys", ""), 201, "").Keys
	if len(keys) != 1 {
		t.Fatalf("no body: %d keys, want 1", len(keys))
	}
	if keys = expect[keysJSON](t, p.do("POST", "/v1/keys", `{}`), 201, "").Keys; len(keys) != 1 {
		t.Fatalf("{}: %d keys, want 1", len(keys))
	}
	keys = p.generate(3)
	if len(keys) != 3 {
		t.Fatalf("%d keys, want 3", len(keys))
	}
	now := p.clock.Now()
	for _, k := range keys {
		if len(k.ID) < 20 || k.Status != "AVAILABLE" || k.Lease != nil || !k.CreatedAt.Equal(now) ||
			!k.ExpiresAt.Equal(now.Add(keystore.DefaultKeepAliveTTL)) || k.History.TimesAcquired != 0 || k.History.LastAcquiredAt != nil {
			t.Fatalf("new key %+v", k)
		}
	}
	if s := p.stats(); s != (statsJSON{Total: 5, Available: 5}) {
		t.Fatalf("stats %+v", s)
	}
}

// TestWireFormat pins the exact JSON: field names, null lease and lastAcquiredAt, times
// in UTC with fractional seconds, and the lease inside the key without a "key" field.
func TestWireFormat(t *testing.T) {
	p := newPool(t)
	w := p.do("POST", "/v1/keys", "")
	var raw struct{ Keys []map[string]any }
	json.Unmarshal(w.Body.Bytes(), &raw)
	k := raw.Keys[0]
	want := fmt.Sprintf(`{"keys":[{"id":%q,"pool":"default","status":"AVAILABLE","createdAt":"2026-11-24T13:00:00.123456789Z","expiresAt":"2026-11-24T13:05:00.123456789Z","lease":null,"coolingUntil":null,"name":null,"history":{"timesAcquired":0,"leasesExpired":0,"lastAcquiredAt":null,"failures":0,"consecutiveFailures":0}}]}`, k["id"])
	if got := w.Body.String(); got != want {
		t.Fatalf("generate body\n got %s\nwant %s", got, want)
	}
	w = p.do("POST", "/v1/keys/acquire", "")
	var lease struct {
		Token string
		Fence int64
	}
	json.Unmarshal(w.Body.Bytes(), &lease)
	leaseFields := fmt.Sprintf(`"token":%q,"fence":%d,"fence64":"%d","acquiredAt":"2026-11-24T13:00:00.123456789Z","expiresAt":"2026-11-24T13:01:00.123456789Z","holder":null,"secret":%q`, lease.Token, lease.Fence, lease.Fence, k["id"])
	want = fmt.Sprintf(`{%s,"key":{"id":%q,"pool":"default","status":"BLOCKED","createdAt":"2026-11-24T13:00:00.123456789Z","expiresAt":"2026-11-24T13:05:00.123456789Z","lease":{%s},"coolingUntil":null,"name":null,"history":{"timesAcquired":1,"leasesExpired":0,"lastAcquiredAt":"2026-11-24T13:00:00.123456789Z","failures":0,"consecutiveFailures":0}}}`, leaseFields, k["id"], leaseFields)
	if got := w.Body.String(); got != want {
		t.Fatalf("acquire body\n got %s\nwant %s", got, want)
	}
}

func TestAcquire(t *testing.T) {
	p := newPool(t)
	expect[errorBody](t, p.do("POST", "/v1/keys/acquire", ""), 404, "NOT_FOUND")

	keys := p.generate(2)
	l1, l2 := p.acquire(), p.acquire()
	if l1.Key == nil || l1.Key.Status != "BLOCKED" || l1.Key.Lease == nil || l1.Key.Lease.Token != l1.Token ||
		l1.Key.Lease.Key != nil || !l1.ExpiresAt.Equal(p.clock.Now().Add(keystore.DefaultLeaseTTL)) || !l1.AcquiredAt.Equal(p.clock.Now()) {
		t.Fatalf("lease %+v key %+v", l1, l1.Key)
	}
	if l2.Fence <= l1.Fence || l1.Key.ID == l2.Key.ID {
		t.Fatalf("fences %d then %d on keys %s, %s", l1.Fence, l2.Fence, l1.Key.ID, l2.Key.ID)
	}
	for _, k := range keys {
		if k.ID != l1.Key.ID && k.ID != l2.Key.ID {
			t.Fatalf("acquired keys %s, %s are not the generated ones", l1.Key.ID, l2.Key.ID)
		}
	}
	expect[errorBody](t, p.do("POST", "/v1/keys/acquire", ""), 404, "NOT_FOUND")
	if s := p.stats(); s != (statsJSON{Total: 2, Blocked: 2}) {
		t.Fatalf("stats %+v", s)
	}
}

func TestAcquireTTL(t *testing.T) {
	p := newPool(t)
	p.generate(1)
	l := expect[leaseJSON](t, p.do("POST", "/v1/keys/acquire?ttl=90s", ""), 200, "")
	if !l.ExpiresAt.Equal(p.clock.Now().Add(90 * time.Second)) {
		t.Fatalf("ttl=90s gave expiresAt %v", l.ExpiresAt)
	}
	p.clock.Advance(89 * time.Second)
	if k := expect[keyJSON](t, p.do("GET", "/v1/keys/"+l.Key.ID, ""), 200, ""); k.Status != "BLOCKED" {
		t.Fatalf("after 89s of 90: %s", k.Status)
	}
	p.clock.Advance(time.Second)
	k := expect[keyJSON](t, p.do("GET", "/v1/keys/"+l.Key.ID, ""), 200, "")
	if k.Status != "AVAILABLE" || k.Lease != nil || k.History.LeasesExpired != 1 || k.History.TimesAcquired != 1 {
		t.Fatalf("after 90s: %+v", k)
	}
}

func TestAcquireWait(t *testing.T) {
	p := newPool(t)
	id := p.generate(1)[0].ID
	held := p.acquire()

	served := make(chan *httptest.ResponseRecorder)
	go func() { served <- p.do("POST", "/v1/keys/acquire?wait=5s", "") }()
	ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
	defer cancel()
	if err := p.clock.BlockUntilContext(ctx, 2); err != nil { // the store's expirer and the waiter's timer
		t.Fatal(err)
	}
	expect[keyJSON](t, p.do("POST", "/v1/keys/"+id+"/unblock", `{"token":"`+held.Token+`"}`), 200, "")
	l := expect[leaseJSON](t, <-served, 200, "")
	if l.Key.ID != id || l.Fence <= held.Fence {
		t.Fatalf("waiter got %+v", l)
	}

	go func() { served <- p.do("POST", "/v1/keys/acquire?wait=5s&ttl=2s", "") }()
	if err := p.clock.BlockUntilContext(ctx, 2); err != nil {
		t.Fatal(err)
	}
	p.clock.Advance(5 * time.Second)
	expect[errorBody](t, <-served, 404, "NOT_FOUND")
}

// TestAcquireTooManyWaiters: with MaxWaiters acquires waiting, one more that would
// wait is answered at once, on a clock that does not move, with 429 TOO_MANY_WAITERS
// in the error shape (the document's, as every exchange here is checked), and changes
// nothing; one that does not wait still gets 404.
func TestAcquireTooManyWaiters(t *testing.T) {
	const bound = 2
	p := newPoolWith(t, keystore.Options{MaxWaiters: bound})
	p.generate(1)
	p.acquire() // the expirer now waits on the clock for the lease and the keep-alive
	waiting := make(chan *httptest.ResponseRecorder, bound)
	for range bound {
		go func() { waiting <- p.do("POST", "/v1/keys/acquire?wait=5s", "") }()
	}
	ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
	defer cancel()
	if err := p.clock.BlockUntilContext(ctx, 1+bound); err != nil { // the expirer and the waiters' timers
		t.Fatal(err)
	}
	refused := make(chan *httptest.ResponseRecorder, 1)
	go func() { refused <- p.do("POST", "/v1/keys/acquire?wait=5s", "") }()
	select {
	case w := <-refused:
		expect[errorBody](t, w, http.StatusTooManyRequests, "TOO_MANY_WAITERS")
	case <-ctx.Done():
		t.Fatal("the acquire past the bound waited")
	}
	expect[errorBody](t, p.do("POST", "/v1/keys/acquire", ""), 404, "NOT_FOUND")
	if s := p.stats(); s != (statsJSON{Total: 1, Blocked: 1, Waiting: bound}) {
		t.Fatalf("stats %+v", s)
	}
	p.clock.Advance(5 * time.Second)
	for range bound {
		expect[errorBody](t, <-waiting, 404, "NOT_FOUND")
	}
}

func TestUnblock(t *testing.T) {
	p := newPool(t)
	expect[errorBody](t, p.do("POST", "/v1/keys/nope/unblock", ""), 404, "NOT_FOUND")
	expect[errorBody](t, p.do("POST", "/v1/keys/AAAAAAAAAAAAAAAAAAAAAA/unblock", ""), 404, "NOT_FOUND")
	id := p.generate(1)[0].ID
	expect[errorBody](t, p.do("POST", "/v1/keys/"+id+"/unblock", ""), 409, "NOT_BLOCKED")

	l := p.acquire()
	other := newPool(t) // a well-formed token of another pool's lease
	other.generate(1)
	expect[errorBody](t, p.do("POST", "/v1/keys/"+id+"/unblock", `{"token":"`+other.acquire().Token+`"}`), 409, "LEASE_MISMATCH")
	expect[errorBody](t, p.do("POST", "/v1/keys/"+id+"/unblock", `{"token":"garbage"}`), 409, "LEASE_MISMATCH")
	if s := p.stats(); s.Blocked != 1 {
		t.Fatalf("a refused unblock changed the pool: %+v", s)
	}
	k := expect[keyJSON](t, p.do("POST", "/v1/keys/"+id+"/unblock", `{"token":"`+l.Token+`"}`), 200, "")
	if k.Status != "AVAILABLE" || k.Lease != nil || k.History.TimesAcquired != 1 {
		t.Fatalf("unblocked key %+v", k)
	}

	p.acquire()
	if k := expect[keyJSON](t, p.do("POST", "/v1/keys/"+id+"/unblock", ""), 200, ""); k.Status != "AVAILABLE" {
		t.Fatalf("unblock without a token: %+v", k)
	}
	p.acquire()
	if k := expect[keyJSON](t, p.do("POST", "/v1/keys/"+id+"/unblock", `{}`), 200, ""); k.Status != "AVAILABLE" {
		t.Fatalf("unblock with {}: %+v", k)
	}
}

func TestKeepAlive(t *testing.T) {
	p := newPool(t)
	expect[errorBody](t, p.do("POST", "/v1/keys/nope/keepalive", ""), 404, "NOT_FOUND")
	id := p.generate(1)[0].ID
	p.clock.Advance(4 * time.Minute)
	l := p.acquire()
	k := expect[keyJSON](t, p.do("POST", "/v1/keys/"+id+"/keepalive", ""), 200, "")
	if !k.ExpiresAt.Equal(p.clock.Now().Add(5*time.Minute)) || k.Status != "BLOCKED" || k.Lease.Token != l.Token {
		t.Fatalf("kept alive: %+v", k)
	}
	p.clock.Advance(5*time.Minute - time.Nanosecond)
	expect[keyJSON](t, p.do("GET", "/v1/keys/"+id, ""), 200, "")
	p.clock.Advance(time.Nanosecond)
	expect[errorBody](t, p.do("GET", "/v1/keys/"+id, ""), 404, "NOT_FOUND")
	expect[errorBody](t, p.do("POST", "/v1/keys/"+id+"/keepalive", ""), 404, "NOT_FOUND")
}

func TestDeleteAndGet(t *testing.T) {
	p := newPool(t)
	expect[errorBody](t, p.do("GET", "/v1/keys/nope", ""), 404, "NOT_FOUND")
	expect[errorBody](t, p.do("DELETE", "/v1/keys/nope", ""), 404, "NOT_FOUND")
	keys := p.generate(2)
	if k := expect[keyJSON](t, p.do("GET", "/v1/keys/"+keys[0].ID, ""), 200, ""); k.ID != keys[0].ID {
		t.Fatalf("get %s gave %s", keys[0].ID, k.ID)
	}
	expect[any](t, p.do("DELETE", "/v1/keys/"+keys[0].ID, ""), 204, "")
	expect[errorBody](t, p.do("GET", "/v1/keys/"+keys[0].ID, ""), 404, "NOT_FOUND")
	expect[errorBody](t, p.do("DELETE", "/v1/keys/"+keys[0].ID, ""), 404, "NOT_FOUND")
	expect[errorBody](t, p.do("POST", "/v1/keys/"+keys[0].ID+"/unblock", ""), 404, "NOT_FOUND")
	if s := p.stats(); s != (statsJSON{Total: 1, Available: 1}) {
		t.Fatalf("stats %+v", s)
	}
	// "acquire" is not an id: GET and DELETE answer 404 for it.
	expect[errorBody](t, p.do("GET", "/v1/keys/acquire", ""), 404, "NOT_FOUND")
	expect[errorBody](t, p.do("DELETE", "/v1/keys/acquire", ""), 404, "NOT_FOUND")
}

func TestRenew(t *testing.T) {
	p := newPool(t)
	id := p.generate(1)[0].ID
	expect[errorBody](t, p.do("POST", "/v1/keys/"+id+"/renew", `{"token":"x"}`), 409, "NOT_BLOCKED")
	l := p.acquire()
	body := func(ttl string) string { return `{"token":"` + l.Token + `","ttl":"` + ttl + `"}` }
	p.clock.Advance(50 * time.Second)
	r := expect[leaseJSON](t, p.do("POST", "/v1/keys/"+id+"/renew", body("90s")), 200, "")
	if r.Token != l.Token || r.Fence != l.Fence || !r.AcquiredAt.Equal(l.AcquiredAt) || !r.ExpiresAt.Equal(p.clock.Now().Add(90*time.Second)) || r.Key.ID != id {
		t.Fatalf("renewed %+v from %+v", r, l)
	}
	r = expect[leaseJSON](t, p.do("POST", "/v1/keys/"+id+"/renew", `{"token":"`+l.Token+`"}`), 200, "")
	if !r.ExpiresAt.Equal(p.clock.Now().Add(keystore.DefaultLeaseTTL)) {
		t.Fatalf("renew without ttl: expiresAt %v", r.ExpiresAt)
	}
	for _, bad := range []string{``, `{}`, `{"ttl":"90s"}`, body("soon"), body("-5s"), body("1ms"), body("2h")} {
		w := p.do("POST", "/v1/keys/"+id+"/renew", bad)
		expect[errorBody](t, w, 400, "BAD_USER_INPUT")
	}
	expect[errorBody](t, p.do("POST", "/v1/keys/"+id+"/renew", `{"token":"garbage"}`), 409, "LEASE_MISMATCH")
	expect[errorBody](t, p.do("POST", "/v1/keys/nope/renew", body("90s")), 404, "NOT_FOUND")
	if k := expect[keyJSON](t, p.do("GET", "/v1/keys/"+id, ""), 200, ""); !k.Lease.ExpiresAt.Equal(r.ExpiresAt) {
		t.Fatalf("a refused renew moved the lease: %v, want %v", k.Lease.ExpiresAt, r.ExpiresAt)
	}
}

// TestBadInput sends every kind of bad request and checks each is refused with its
// status and code, and that the pool is exactly as it was.
func TestBadInput(t *testing.T) {
	p := newPool(t)
	p.generate(2)
	l := p.acquire()
	before := p.stats()
	held := expect[keyJSON](t, p.do("GET", "/v1/keys/"+l.Key.ID, ""), 200, "")

	huge := `{"count":1` + strings.Repeat(" ", rest.MaxBodyBytes) + `}`
	for _, c := range []struct {
		method, path, body string
		status             int
		code               string
	}{
		{"POST", "/v1/keys", `{"count":0}`, 400, "BAD_USER_INPUT"},
		{"POST", "/v1/keys", `{"count":-1}`, 400, "BAD_USER_INPUT"},
		{"POST", "/v1/keys", `{"count":10001}`, 400, "BAD_USER_INPUT"},
		{"POST", "/v1/keys", `{"count":99999999999999999999}`, 400, "BAD_USER_INPUT"},
		{"POST", "/v1/keys", `{"count":1.5}`, 400, "BAD_USER_INPUT"},
		{"POST", "/v1/keys", `{"count":"3"}`, 400, "BAD_USER_INPUT"},
		{"POST", "/v1/keys", `{"count":true}`, 400, "BAD_USER_INPUT"},
		{"POST", "/v1/keys", `{"cnt":3}`, 400, "BAD_USER_INPUT"},
		{"POST", "/v1/keys", `[3]`, 400, "BAD_USER_INPUT"},
		{"POST", "/v1/keys", `3`, 400, "BAD_USER_INPUT"},
		{"POST", "/v1/keys", `{"count":3`, 400, "BAD_USER_INPUT"},
		{"POST", "/v1/keys", `{"count":3}{"count":3}`, 400, "BAD_USER_INPUT"},
		{"POST", "/v1/keys", `{"count":3} x`, 400, "BAD_USER_INPUT"},
		{"POST", "/v1/keys", `count=3`, 400, "BAD_USER_INPUT"},
		{"POST", "/v1/keys", huge, 413, "REQUEST_TOO_LARGE"},
		{"POST", "/v1/keys/acquire?ttl=soon", "", 400, "BAD_USER_INPUT"},
		{"POST", "/v1/keys/acquire?ttl=-1s", "", 400, "BAD_USER_INPUT"},
		{"POST", "/v1/keys/acquire?ttl=1ms", "", 400, "BAD_USER_INPUT"},
		{"POST", "/v1/keys/acquire?ttl=2h", "", 400, "BAD_USER_INPUT"},
		{"POST", "/v1/keys/acquire?wait=31s", "", 400, "BAD_USER_INPUT"},
		{"POST", "/v1/keys/acquire?wait=-1s", "", 400, "BAD_USER_INPUT"},
		{"POST", "/v1/keys/acquire?wait=1s&wait=2s", "", 400, "BAD_USER_INPUT"},
		{"POST", "/v1/keys/acquire?tll=90s", "", 400, "BAD_USER_INPUT"},
		{"POST", "/v1/keys/acquire?ttl=%zz", "", 400, "BAD_USER_INPUT"},
		{"POST", "/v1/keys/" + l.Key.ID + "/unblock", `{"token":5}`, 400, "BAD_USER_INPUT"},
		{"POST", "/v1/keys/" + l.Key.ID + "/unblock", `{"token":"` + l.Token + `","force":true}`, 400, "BAD_USER_INPUT"},
		{"POST", "/v1/keys/" + l.Key.ID + "/unblock", `{"token":"` + l.Token + `"`, 400, "BAD_USER_INPUT"},
		{"POST", "/v1/keys/" + l.Key.ID + "/unblock", `{"token":"` + l.Token + `"}` + strings.Repeat(" ", rest.MaxBodyBytes), 413, "REQUEST_TOO_LARGE"},
		{"POST", "/v1/keys/" + l.Key.ID + "/renew", `{"token":"` + l.Token + `","ttl":90}`, 400, "BAD_USER_INPUT"},
		{"PUT", "/v1/keys", `{"count":3}`, 405, "METHOD_NOT_ALLOWED"},
		{"PUT", "/v1/keys", "", 405, "METHOD_NOT_ALLOWED"},
		{"GET", "/v1/keys?limit=0", "", 400, "BAD_USER_INPUT"},
		{"GET", "/v1/keys?limit=x", "", 400, "BAD_USER_INPUT"},
		{"GET", "/v1/keys?cursor=x", "", 400, "BAD_USER_INPUT"},
		{"GET", "/v1/keys?status=GONE", "", 400, "BAD_USER_INPUT"},
		{"GET", "/v1/keys?pool=a%20b", "", 400, "BAD_USER_INPUT"},
		{"GET", "/v1/keys?sort=id", "", 400, "BAD_USER_INPUT"},
		{"GET", "/v1/stats?pool=-", "", 400, "BAD_USER_INPUT"},
		{"GET", "/v1/pools?x=1", "", 400, "BAD_USER_INPUT"},
		{"POST", "/v1/keys/acquire?holder=a%0Ab", "", 400, "BAD_USER_INPUT"},
		{"POST", "/v1/keys", `{"pool":"no spaces"}`, 400, "BAD_USER_INPUT"},
		{"PATCH", "/v1/keys/" + l.Key.ID, "", 405, "METHOD_NOT_ALLOWED"},
		{"GET", "/v1/keys/" + l.Key.ID + "/unblock", "", 405, "METHOD_NOT_ALLOWED"},
		{"DELETE", "/v1/keys/" + l.Key.ID + "/keepalive", "", 405, "METHOD_NOT_ALLOWED"},
		{"GET", "/v1/keys/" + l.Key.ID + "/renew", "", 405, "METHOD_NOT_ALLOWED"},
		{"PUT", "/v1/keys/acquire", "", 405, "METHOD_NOT_ALLOWED"},
		{"POST", "/v1/stats", "", 405, "METHOD_NOT_ALLOWED"},
		{"GET", "/v1/nope", "", 404, "NOT_FOUND"},
		{"GET", "/v1/keys/", "", 404, "NOT_FOUND"},
		{"POST", "/v1/keys/" + l.Key.ID + "/explode", "", 404, "NOT_FOUND"},
	} {
		t.Run(c.method+" "+c.path+" "+c.body[:min(len(c.body), 40)], func(t *testing.T) {
			w := p.do(c.method, c.path, c.body)
			expect[errorBody](t, w, c.status, c.code)
			if c.status == 405 && w.Header().Get("Allow") == "" {
				t.Fatal("405 without Allow")
			}
		})
	}
	if after := p.stats(); after != before {
		t.Fatalf("bad requests changed the pool: %+v, was %+v", after, before)
	}
	if k := expect[keyJSON](t, p.do("GET", "/v1/keys/"+l.Key.ID, ""), 200, ""); k.Status != "BLOCKED" || k.Lease.Token != held.Lease.Token ||
		!k.Lease.ExpiresAt.Equal(held.Lease.ExpiresAt) || k.History.TimesAcquired != 1 || !k.ExpiresAt.Equal(held.ExpiresAt) {
		t.Fatalf("bad requests changed the held key: %+v, was %+v", k, held)
	}
}

// TestNonCanonicalPaths: a path under /v1 with an empty, . or .. segment, or one that
// cleans up to a path under /v1, and /v1 itself, answer 404 NOT_FOUND in JSON (and the
// document says so: every exchange here is checked), not net/http's redirect in
// text/html, whatever the method; and the pool is untouched, even where the cleaned
// path names a route that would change it.
func TestNonCanonicalPaths(t *testing.T) {
	p := newPool(t)
	id := p.generate(1)[0].ID
	before := p.stats()
	for _, c := range []struct{ method, target string }{
		{"GET", "/v1//stats"},
		{"GET", "/v1/keys//" + id},
		{"POST", "/v1/keys//keepalive"},
		{"POST", "/v1/keys/" + id + "//unblock"},
		{"DELETE", "/v1/keys/" + id + "/."},
		{"POST", "/v1/keys/" + id + "/../acquire"},
		{"GET", "/v1/./stats"},
		{"GET", "/v1/stats/"},
		{"GET", "/v1"},
		{"POST", "/v1"},
		{"GET", "//v1/stats"},
		{"GET", "/graphql/../v1/stats"},
		{"PUT", "/v1/keys//x/renew"},
	} {
		t.Run(c.method+" "+c.target, func(t *testing.T) {
			w := p.do(c.method, c.target, "")
			e := expect[errorBody](t, w, http.StatusNotFound, "NOT_FOUND")
			if !strings.HasPrefix(e.Error.Message, "no such route") {
				t.Fatalf("message %q", e.Error.Message)
			}
			if loc := w.Header().Get("Location"); loc != "" {
				t.Fatalf("Location %q", loc)
			}
		})
	}
	if after := p.stats(); after != before {
		t.Fatalf("stats %+v, were %+v", after, before)
	}
	// The canonical path of the key is still served.
	expect[keyJSON](t, p.do("GET", "/v1/keys/"+id, ""), 200, "")
}

func TestMethodNotAllowedAllow(t *testing.T) {
	p := newPool(t)
	for path, allow := range map[string]string{
		"/v1/keys":             "GET, HEAD, POST",
		"/v1/pools":            "GET, HEAD",
		"/v1/keys/x":           "GET, HEAD, DELETE",
		"/v1/keys/x/unblock":   "POST",
		"/v1/keys/acquire":     "GET, HEAD, POST, DELETE",
		"/v1/stats":            "GET, HEAD",
		"/v1/keys/x/renew":     "POST",
		"/v1/keys/x/keepalive": "POST",
	} {
		if got := p.do("PUT", path, "").Header().Get("Allow"); got != allow {
			t.Errorf("PUT %s: Allow %q, want %q", path, got, allow)
		}
	}
}

// failingStore answers every call with err.
type failingStore struct {
	keystore.Store
	err error
}

func (s failingStore) Get(context.Context, string) (keystore.Key, error) {
	return keystore.Key{}, s.err
}
func (s failingStore) Stats(context.Context, string) (keystore.Stats, error) {
	return keystore.Stats{}, s.err
}
func (s failingStore) Ready(context.Context) error { return s.err }

func TestStoreFailures(t *testing.T) {
	secret := errors.New("dial tcp 10.0.0.7:6379: secret internals")
	for _, c := range []struct {
		err     error
		status  int
		code    string
		message string
	}{
		{secret, 500, "INTERNAL_SERVER_ERROR", "internal error"},
		{&keystore.Error{Code: keystore.EINTERNAL, Message: "heap corrupt at 0x1234", Err: secret}, 500, "INTERNAL_SERVER_ERROR", "internal error"},
		{&keystore.Error{Code: keystore.ESLOWCONSUMER, Message: "odd"}, 500, "INTERNAL_SERVER_ERROR", "internal error"},
		{&keystore.Error{Code: keystore.EUNAVAILABLE, Message: "the store cannot be reached", Err: secret}, 503, "UNAVAILABLE", "the store cannot be reached"},
	} {
		h := resttest.Handler(t, rest.New(failingStore{err: c.err}, nil))
		for _, path := range []string{"/v1/keys/abc", "/v1/stats"} {
			w := httptest.NewRecorder()
			h.ServeHTTP(w, httptest.NewRequest("GET", path, nil))
			e := expect[errorBody](t, w, c.status, c.code)
			if e.Error.Message != c.message || strings.Contains(w.Body.String(), "secret") {
				t.Fatalf("%s with %v: %s", path, c.err, w.Body)
			}
		}
	}
}

func TestHealth(t *testing.T) {
	p := newPool(t)
	for _, c := range []struct {
		path string
		h    http.Handler
		want int
	}{{"/healthz", rest.Healthz(), 200}, {"/readyz", rest.Readyz(p.store, "memory", nil), 200}} {
		w := httptest.NewRecorder()
		resttest.Handler(t, c.h).ServeHTTP(w, httptest.NewRequest("GET", c.path, nil))
		if w.Code != c.want || w.Body.String() != "ok\n" {
			t.Fatalf("%d %q", w.Code, w.Body)
		}
	}
	p.store.Close()
	w := httptest.NewRecorder()
	resttest.Handler(t, rest.Readyz(p.store, "memory", nil)).ServeHTTP(w, httptest.NewRequest("GET", "/readyz", nil))
	expect[errorBody](t, w, 503, "UNAVAILABLE")
	w = httptest.NewRecorder()
	resttest.Handler(t, rest.Readyz(failingStore{err: errors.New("secret")}, "memory", nil)).ServeHTTP(w, httptest.NewRequest("GET", "/readyz", nil))
	if e := expect[errorBody](t, w, 503, "INTERNAL_SERVER_ERROR"); e.Error.Message != "internal error" {
		t.Fatalf("%+v", e)
	}
	w = httptest.NewRecorder()
	resttest.Handler(t, rest.Healthz()).ServeHTTP(w, httptest.NewRequest("GET", "/healthz", nil))
	if w.Code != 200 {
		t.Fatalf("healthz after the store closed: %d", w.Code)
	}
}

// TestPoolsHoldersAndListing: the REST twins of pools, holders and listing.
func TestPoolsHoldersAndListing(t *testing.T) {
	p := newPool(t)
	made := expect[keysJSON](t, p.do("POST", "/v1/keys", `{"count":3,"pool":"a"}`), 201, "").Keys
	if len(made) != 3 || made[0].Pool != "a" {
		t.Fatalf("made %+v", made)
	}
	p.generate(1)
	l := expect[leaseJSON](t, p.do("POST", "/v1/keys/acquire?pool=a&holder=ci%20job", ""), 200, "")
	if l.Holder == nil || *l.Holder != "ci job" || l.Key.Pool != "a" || l.Key.Lease.Holder == nil {
		t.Fatalf("lease %+v", l)
	}
	if s := expect[statsJSON](t, p.do("GET", "/v1/stats?pool=a", ""), 200, ""); s != (statsJSON{Total: 3, Available: 2, Blocked: 1}) {
		t.Fatalf("stats of a %+v", s)
	}
	if s := p.stats(); s.Total != 4 {
		t.Fatalf("stats %+v", s)
	}
	pools := expect[poolsJSON](t, p.do("GET", "/v1/pools", ""), 200, "").Pools
	if len(pools) != 2 || pools[0].Name != "a" || pools[1].Name != "default" || pools[1].Stats.Total != 1 {
		t.Fatalf("pools %+v", pools)
	}
	seen := map[string]bool{}
	cursor := ""
	for range 10 {
		page := expect[pageJSON](t, p.do("GET", "/v1/keys?pool=a&limit=2&cursor="+cursor, ""), 200, "")
		for _, k := range page.Keys {
			seen[k.ID] = true
		}
		if page.NextCursor == nil {
			break
		}
		cursor = *page.NextCursor
	}
	if len(seen) != 3 {
		t.Fatalf("walked %d keys of pool a, want 3", len(seen))
	}
	blocked := expect[pageJSON](t, p.do("GET", "/v1/keys?status=BLOCKED", ""), 200, "")
	if len(blocked.Keys) != 1 || blocked.Keys[0].ID != l.Key.ID || blocked.NextCursor != nil {
		t.Fatalf("blocked %+v", blocked)
	}
}

// TestHeldBackAndImported: unblock with a cool-down and a failure, restore, import with
// a duplicate (409 with its index), and the secret in the acquire answer only.
func TestHeldBackAndImported(t *testing.T) {
	p := newPoolWith(t, keystore.Options{QuarantineAfter: 2})
	const secret = "sk-live-rest-0123456789"
	keys := expect[keysJSON](t, p.do("POST", "/v1/keys/import", `{"pool":"vendor","keys":[{"secret":"`+secret+`","name":"team A"}]}`), 201, "").Keys
	if len(keys) != 1 || keys[0].Name == nil || *keys[0].Name != "team A" || keys[0].Pool != "vendor" || !keys[0].ExpiresAt.Equal(keystore.Never) {
		t.Fatalf("imported %+v", keys)
	}
	w := p.do("POST", "/v1/keys/import", `{"pool":"vendor","keys":[{"secret":"other"},{"secret":"`+secret+`"}]}`)
	var dup struct {
		Error struct {
			Code    string `json:"code"`
			Message string `json:"message"`
			Index   *int   `json:"index"`
		} `json:"error"`
	}
	if err := json.Unmarshal(w.Body.Bytes(), &dup); err != nil || w.Code != 409 || dup.Error.Code != "ALREADY_EXISTS" || dup.Error.Index == nil || *dup.Error.Index != 1 {
		t.Fatalf("duplicate: %d %s", w.Code, w.Body)
	}
	if strings.Contains(w.Body.String(), secret) {
		t.Fatalf("the error repeats the secret: %s", w.Body)
	}

	lease := expect[leaseJSON](t, p.do("POST", "/v1/keys/acquire?pool=vendor", ""), 200, "")
	if lease.Secret == nil || *lease.Secret != secret {
		t.Fatalf("acquire answered secret %v", lease.Secret)
	}
	if got := p.do("GET", "/v1/keys/"+lease.Key.ID, ""); strings.Contains(got.Body.String(), secret) {
		t.Fatalf("GET shows the secret: %s", got.Body)
	}
	k := expect[keyJSON](t, p.do("POST", "/v1/keys/"+lease.Key.ID+"/unblock", `{"token":"`+lease.Token+`","cooldown":"30s","failed":true}`), 200, "")
	if k.Status != "COOLING" || k.CoolingUntil == nil || k.History.Failures != 1 || k.History.ConsecutiveFailures != 1 {
		t.Fatalf("after a cool-down: %+v", k)
	}
	expect[errorBody](t, p.do("POST", "/v1/keys/acquire?pool=vendor", ""), 404, "NOT_FOUND")
	s := expect[statsJSON](t, p.do("GET", "/v1/stats?pool=vendor", ""), 200, "")
	if s.Cooling != 1 || s.Total != 1 {
		t.Fatalf("stats %+v", s)
	}
	k = expect[keyJSON](t, p.do("POST", "/v1/keys/"+k.ID+"/restore", ""), 200, "")
	if k.Status != "AVAILABLE" || k.History.ConsecutiveFailures != 0 {
		t.Fatalf("restored: %+v", k)
	}
	expect[errorBody](t, p.do("POST", "/v1/keys/"+k.ID+"/restore", ""), 409, "NOT_HELD_BACK")
	expect[errorBody](t, p.do("POST", "/v1/keys/"+k.ID+"/unblock", `{"cooldown":"0s"}`), 400, "BAD_USER_INPUT")
}
