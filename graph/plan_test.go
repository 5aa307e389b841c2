package graph

import (
	"context"
	"encoding/json"
	"fmt"
	"testing"
	"time"

	"github.com/99designs/gqlgen/graphql"
	"github.com/99designs/gqlgen/graphql/executor"
	"github.com/stretchr/testify/require"

	"github.com/keypool/keypool/keystore"
)

// hubStore subscribes to a hub the test publishes to.
type hubStore struct {
	keystore.Store
	hub *keystore.Hub
}

func (s hubStore) Subscribe(ctx context.Context, opts keystore.SubscribeOptions) (*keystore.Subscription, error) {
	return s.hub.Subscribe(ctx, opts)
}

// TestPlanEncodesAsGqlgen: for every shape of selection, the fan-out's payload of an
// event is byte for byte the response gqlgen executes and marshals for it.
func TestPlanEncodesAsGqlgen(t *testing.T) {
	hub := keystore.NewHub(64, nil)
	defer hub.Close()
	exec := executor.New(NewExecutableSchema(Config{Resolvers: &Resolver{Store: hubStore{hub: hub}}}))
	f := newFanout(1, nil)
	events := []keystore.Event{
		{Type: keystore.EventGenerated, KeyID: "ZRqdpn7ksEzXcOEtGiXofw", At: time.Date(2026, 11, 24, 14, 4, 5, 123456789, time.UTC)},
		{Type: keystore.EventExpired, KeyID: `a<b>&c"d\e` + "\u2028\x01", At: time.Date(2026, 1, 2, 3, 4, 5, 0, time.FixedZone("x", 3600))},
		{Type: keystore.EventAcquired, KeyID: "k", At: time.Date(2026, 1, 2, 3, 4, 5, 100, time.Local)},
	}
	cases := []struct {
		query string
		vars  map[string]any
	}{
		{query: `subscription { keyEvents { seq type keyId at } }`},
		{query: `subscription { keyEvents { at keyId } }`},
		{query: `subscription { e: keyEvents { s: seq, type, t: type, __typename } }`},
		{query: `subscription { keyEvents { seq seq ...F ... on KeyEvent { at } } } fragment F on KeyEvent { keyId type }`},
		{query: `subscription($a: Boolean!, $b: Boolean!) { keyEvents { seq @skip(if: $a) keyId @include(if: $b) type ... @include(if: $a) { at } } }`,
			vars: map[string]any{"a": true, "b": false}},
		{query: `subscription($a: Boolean!, $b: Boolean!) { keyEvents { seq @skip(if: $a) keyId @include(if: $b) type ... @include(if: $a) { at } } }`,
			vars: map[string]any{"a": false, "b": true}},
		{query: `subscription Named { keyEvents(types: [GENERATED, EXPIRED, ACQUIRED]) { __typename } }`},
	}
	for _, tc := range cases {
		t.Run(tc.query, func(t *testing.T) {
			ctx := graphql.StartOperationTrace(t.Context())
			start := func(withSlot bool) (graphql.ResponseHandler, context.Context, *fanoutSlot) {
				opCtx, errs := exec.CreateOperationContext(ctx, &graphql.RawParams{Query: tc.query, Variables: tc.vars})
				require.Empty(t, errs)
				octx := graphql.WithOperationContext(ctx, opCtx)
				var slot *fanoutSlot
				if withSlot {
					octx, slot = withFanoutSlot(octx, f)
				}
				responses, rctx := exec.DispatchOperation(octx, opCtx)
				return responses, rctx, slot
			}
			gqlgen, gctx, _ := start(false)
			_, _, slot := start(true)
			require.NotNil(t, slot.sub, "the resolver left a polled subscription")
			require.True(t, slot.sub.Polled())
			defer slot.plan.release()
			buf := make([]*keystore.Event, 1)
			for _, ev := range events {
				hub.Publish(ev)
				want, err := json.Marshal(gqlgen(gctx))
				require.NoError(t, err)
				n, _ := slot.sub.Read(buf)
				require.Equal(t, 1, n)
				require.Equal(t, string(want), string(slot.plan.payload(buf[0])))
				require.Equal(t, string(want), string(slot.plan.payload(buf[0])), "from the cache")
			}
		})
	}
}

// TestPlansAreShared: subscriptions with the same selection share a plan (and its
// cache); a different alias is another plan; the last release forgets a plan.
func TestPlansAreShared(t *testing.T) {
	hub := keystore.NewHub(64, nil)
	defer hub.Close()
	exec := executor.New(NewExecutableSchema(Config{Resolvers: &Resolver{Store: hubStore{hub: hub}}}))
	f := newFanout(1, nil)
	planOf := func(query string) *plan {
		ctx := graphql.StartOperationTrace(t.Context())
		opCtx, errs := exec.CreateOperationContext(ctx, &graphql.RawParams{Query: query})
		require.Empty(t, errs)
		octx, slot := withFanoutSlot(graphql.WithOperationContext(ctx, opCtx), f)
		exec.DispatchOperation(octx, opCtx)
		require.NotNil(t, slot.plan)
		return slot.plan
	}
	a := planOf(`subscription { keyEvents { seq keyId } }`)
	b := planOf(`subscription { keyEvents { ...F } } fragment F on KeyEvent { seq keyId }`)
	c := planOf(`subscription { keyEvents { seq id: keyId } }`)
	require.Same(t, a, b)
	require.NotSame(t, a, c)
	require.NotNil(t, a.cache)
	ev := &keystore.Event{Seq: 7, Type: keystore.EventDeleted, KeyID: "k"}
	require.Equal(t, &a.payload(ev)[0], &b.payload(ev)[0], "one encoding for both")
	a.release()
	b.release()
	c.release()
	f.plans.mu.Lock()
	defer f.plans.mu.Unlock()
	require.Empty(t, f.plans.plans)
	require.Zero(t, f.plans.cached)
}

// TestPlansAreBoundedInBytes: a plan's cache and turns shrink with its payloads, so
// that a selection of many long aliases can neither take more than planCacheBytes
// with its cache nor queue a huge write in one turn.
func TestPlansAreBoundedInBytes(t *testing.T) {
	f := newFanout(1, nil)
	small := newPlan("a", "keyEvents", []planField{{"seq", fieldSeq}, {"type", fieldType}, {"keyId", fieldKeyID}, {"at", fieldAt}}, f.plans)
	require.Greater(t, small.turn, 1000, "a turn carries many events")
	require.LessOrEqual(t, small.turn*small.largest, maxTurnBytes)
	require.GreaterOrEqual(t, len(small.cache), 1<<14, "a ring's worth, or near it, for the usual selection")
	require.True(t, len(small.cache)*(small.largest+48) <= planCacheBytes, "its cache holds %d", len(small.cache))
	var fields []planField
	for i := range 200 { // the complexity limit's worth of 256-byte aliases
		fields = append(fields, planField{alias: fmt.Sprintf("%0256d", i), value: fieldKeyID})
	}
	huge := newPlan("b", "keyEvents", fields, f.plans)
	require.Greater(t, huge.largest, 50_000)
	require.True(t, len(huge.cache)*(huge.largest+48) <= planCacheBytes, "its cache holds %d", len(huge.cache))
	require.Equal(t, maxTurnBytes/huge.largest, huge.turn)
	require.LessOrEqual(t, huge.turn*huge.largest, maxTurnBytes)
}
