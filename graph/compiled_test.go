package graph_test

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"sync"
	"testing"
	"time"

	"github.com/99designs/gqlgen/graphql"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/keypool/keypool/graph"
	"github.com/keypool/keypool/keystore"
)

// cannedStore answers every call with one canned key (or error, or panic) that echoes
// the call's arguments, so that an answer shows what the resolver was given; and it
// records whether each call came through gqlgen's executor (an operation context).
type cannedStore struct {
	keystore.Store // the methods not canned: never called here
	mu             sync.Mutex
	err            error
	panics         bool
	viaGqlgen      []bool
}

var (
	cannedAt      = time.Date(2026, 12, 1, 12, 0, 0, 123456789, time.UTC)
	cannedExpires = time.Date(2026, 12, 1, 13, 0, 0, 0, time.FixedZone("CET", 3600))
)

func (s *cannedStore) answer(ctx context.Context, id, token string) (keystore.Key, error) {
	s.mu.Lock()
	s.viaGqlgen = append(s.viaGqlgen, graphql.HasOperationContext(ctx))
	err, panics := s.err, s.panics
	s.mu.Unlock()
	if panics {
		panic("canned panic")
	}
	if err != nil {
		return keystore.Key{}, err
	}
	return keystore.Key{
		ID: id, Status: keystore.Blocked, CreatedAt: cannedAt, ExpiresAt: cannedExpires,
		Lease:   &keystore.Lease{KeyID: id, Token: token + ` "quoted" \ <&> é`, Fence: 42, AcquiredAt: cannedAt, ExpiresAt: cannedExpires},
		History: keystore.History{TimesAcquired: 7, LeasesExpired: 2, LastAcquiredAt: cannedAt},
	}, nil
}

func (s *cannedStore) Acquire(ctx context.Context, opts keystore.AcquireOptions) (keystore.Key, error) {
	ttl := "default"
	if opts.TTL != nil {
		ttl = opts.TTL.String()
	}
	return s.answer(ctx, "acquired", fmt.Sprintf("ttl=%s wait=%v", ttl, opts.Wait))
}

func (s *cannedStore) Unblock(ctx context.Context, id, token string) (keystore.Key, error) {
	return s.answer(ctx, id, "unblock token="+token)
}

func (s *cannedStore) Renew(ctx context.Context, id, token string, ttl *time.Duration) (keystore.Key, error) {
	return s.answer(ctx, id, fmt.Sprintf("renew token=%s ttl=%v", token, ttl != nil))
}

func (s *cannedStore) KeepAlive(ctx context.Context, id string) (keystore.Key, error) {
	return s.answer(ctx, id, "keepAlive")
}

func (s *cannedStore) Get(ctx context.Context, id string) (keystore.Key, error) {
	return s.answer(ctx, id, "get")
}

func (s *cannedStore) Delete(ctx context.Context, id string) error {
	_, err := s.answer(ctx, id, "delete")
	return err
}

func (s *cannedStore) calls() []bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]bool(nil), s.viaGqlgen...)
}

// TestCompiledOperationsAnswerAsGqlgen: a document gqlgen has accepted once is then
// answered by its compiled form (compiled.go), which must answer every request
// exactly as gqlgen does: the same status, headers and bytes, errors, paths,
// locations and nulls included. Each case is sent with an extension (which keeps it
// on gqlgen's path), then twice without: gqlgen answers the first and compiles it, the
// compiled form the second, unless the case says gqlgen must (it falls back before
// any resolver runs).
func TestCompiledOperationsAnswerAsGqlgen(t *testing.T) {
	notFound := keystore.Errorf(keystore.ENOTFOUND, "no key is available")
	notBlocked := keystore.Errorf(keystore.ENOTBLOCKED, "key k1 is not blocked")
	cases := []struct {
		name     string
		query    string
		vars     map[string]any
		err      error
		panics   bool
		compiled bool // the second request is answered compiled
	}{
		{name: "acquire, every field", compiled: true, query: `mutation { acquireKey { token fence acquiredAt expiresAt __typename
			key { id status createdAt expiresAt __typename lease { token fence key { id } }
				history { timesAcquired leasesExpired lastAcquiredAt __typename } } } }`},
		{name: "acquire, aliases and fragments", compiled: true, query: `mutation Take { a: acquireKey(ttl: "30s") { ...L t: token } }
			fragment L on Lease { t: token key { ... on Key { id k: id } ... { status } } }`},
		{name: "acquire, variables", compiled: true, vars: map[string]any{"ttl": "90s", "wait": "1s"},
			query: `mutation($ttl: Duration, $wait: Duration) { acquireKey(ttl: $ttl, wait: $wait) { token } }`},
		{name: "acquire, a null and an absent variable", compiled: true, vars: map[string]any{"ttl": nil},
			query: `mutation($ttl: Duration, $wait: Duration) { acquireKey(ttl: $ttl, wait: $wait) { token } }`},
		{name: "acquire, a default", compiled: true, vars: map[string]any{},
			query: `mutation($ttl: Duration = "20s") { acquireKey(ttl: $ttl) { token } }`},
		{name: "acquire, NOT_FOUND", compiled: true, err: notFound, query: `mutation { got: acquireKey { token } }`},
		{name: "acquire, an internal error", compiled: true, err: errors.New("disk on fire"), query: `mutation { acquireKey { token } }`},
		{name: "acquire, a panic", compiled: true, panics: true, query: `mutation { acquireKey { token } }`},
		{name: "unblock", compiled: true, vars: map[string]any{"id": "k1", "token": "t1"},
			query: `mutation($id: ID!, $token: ID) { unblockKey(id: $id, token: $token) { id status lease { token } } }`},
		{name: "unblock, literals", compiled: true, query: `mutation { unblockKey(id: "k\"2", token: null) { id } }`},
		{name: "unblock, NOT_BLOCKED", compiled: true, err: notBlocked, vars: map[string]any{"id": "k1"},
			query: `mutation($id: ID!) { unblockKey(id: $id) { id } }`},
		{name: "renew", compiled: true, vars: map[string]any{"id": "k1", "token": "t1"},
			query: `mutation($id: ID!, $token: ID!) { renewLease(id: $id, token: $token, ttl: "10s") { fence expiresAt key { id } } }`},
		{name: "keepAlive", compiled: true, vars: map[string]any{"id": "k1"},
			query: `mutation($id: ID!) { keepAlive(id: $id) { id expiresAt } }`},
		{name: "delete", compiled: true, vars: map[string]any{"id": "k1"}, query: `mutation($id: ID!) { deleteKey(id: $id) }`},
		{name: "delete, an error", compiled: true, err: notFound, vars: map[string]any{"id": "k1"},
			query: `mutation($id: ID!) { deleted: deleteKey(id: $id) }`},
		{name: "key", compiled: true, vars: map[string]any{"id": "k1"}, query: `query($id: ID!) { key(id: $id) { id history { timesAcquired } } }`},
		{name: "key, unknown", compiled: true, err: notFound, vars: map[string]any{"id": "k1"},
			query: `query($id: ID!) { key(id: $id) { id } }`},

		{name: "an ID variable given as a number", vars: map[string]any{"id": 5},
			query: `mutation($id: ID!) { keepAlive(id: $id) { id } }`},
		{name: "a duration gqlgen refuses", vars: map[string]any{"ttl": "soon"},
			query: `mutation($ttl: Duration) { acquireKey(ttl: $ttl) { token } }`},
		{name: "a required variable missing", vars: map[string]any{},
			query: `mutation($id: ID!) { keepAlive(id: $id) { id } }`},
		{name: "a directive", vars: map[string]any{"yes": true},
			query: `mutation($yes: Boolean!) { acquireKey { token @include(if: $yes) } }`},
		{name: "two fields", query: `mutation { a: acquireKey { token } b: acquireKey { token } }`},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			store := &cannedStore{err: c.err, panics: c.panics}
			h := graph.NewServer(store, graph.ServerOptions{Logger: testLogger(t)})
			post := func(extensions map[string]any) *httptest.ResponseRecorder {
				body, err := json.Marshal(map[string]any{"query": c.query, "variables": c.vars, "extensions": extensions})
				require.NoError(t, err)
				req := httptest.NewRequest(http.MethodPost, "/graphql", bytes.NewReader(body))
				req.Header.Set("Content-Type", "application/json")
				rec := httptest.NewRecorder()
				h.ServeHTTP(rec, req)
				return rec
			}
			want := post(map[string]any{"gqlgen": true})
			require.Less(t, want.Code, 500)
			t.Logf("%s", want.Body)
			for i := range 2 {
				got := post(nil)
				assert.Equal(t, want.Code, got.Code, "request %d", i)
				assert.Equal(t, want.Header(), got.Header(), "request %d", i)
				assert.Equal(t, want.Body.String(), got.Body.String(), "request %d", i)
			}
			calls := store.calls()
			if len(calls) == 0 {
				return // refused before any resolver ran, each time
			}
			require.Zero(t, len(calls)%3, "each request makes as many calls")
			per := len(calls) / 3
			for i, viaGqlgen := range calls {
				if i < 2*per {
					assert.True(t, viaGqlgen, "the first two requests through gqlgen")
				} else {
					assert.Equal(t, c.compiled, !viaGqlgen, "the third compiled")
				}
			}
		})
	}
}
