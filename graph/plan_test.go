package graph

import (
	"context"
	"encoding/json"
	"testing"
	"time"

	"github.com/99designs/gqlgen/graphql"
	"github.com/99designs/gqlgen/graphql/executor"
	"github.com/stretchr/testify/require"

	"github.com/keypool/keypool/graph/fanout"
	"github.com/keypool/keypool/keystore"
)

// eventsResolver answers keyEvents through gqlgen's own execution of each event: the
// events of its channel, and the plan the fan-out would have used.
type eventsResolver struct {
	*Resolver
	events chan *keystore.Event
	plan   **fanout.Plan
}

func (r eventsResolver) Subscription() SubscriptionResolver { return eventsSubscription(r) }

type eventsSubscription eventsResolver

func (r eventsSubscription) KeyEvents(ctx context.Context, _ *string, _ []keystore.EventType, _ *int64, _ *int64, _ *string, _ []string) (<-chan *keystore.Event, error) {
	*r.plan = r.Plans.ForField(ctx)
	return r.events, nil
}

// TestPlanEncodesAsGqlgen: for every shape of selection, the fan-out's payload of an
// event is byte for byte the response gqlgen executes and marshals for it.
func TestPlanEncodesAsGqlgen(t *testing.T) {
	fan := fanout.New(1, nil)
	events := []keystore.Event{
		{Seq: 1, Stream: "TBAHoTaQrFmnysU_zXrV2w", Type: keystore.EventGenerated, KeyID: "ZRqdpn7ksEzXcOEtGiXofw", At: time.Date(2026, 11, 24, 14, 4, 5, 123456789, time.UTC)},
		{Seq: 2, Type: keystore.EventExpired, KeyID: `a<b>&c"d\e` + "\u2028\x01", At: time.Date(2026, 1, 2, 3, 4, 5, 0, time.FixedZone("x", 3600))},
		{Seq: 1 << 40, Pool: "a.b", Type: keystore.EventAcquired, KeyID: "k", At: time.Date(2026, 1, 2, 3, 4, 5, 100, time.Local), Holder: "ci <job> & \"x\"\u00e9\u2029"},
		{Seq: 3, Pool: "default", Type: keystore.EventAcquired, KeyID: "k", Holder: "\t\x7f"},
	}
	cases := []struct {
		query string
		vars  map[string]any
	}{
		{query: `subscription { keyEvents { seq seq64 type keyId at stream } }`},
		{query: `subscription { keyEvents(pool: "a.b") { pool holder h: holder keyId } }`},
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
			var plan *fanout.Plan
			resolvers := eventsResolver{Resolver: &Resolver{Plans: fan.Plans()}, events: make(chan *keystore.Event, 1), plan: &plan}
			exec := executor.New(NewExecutableSchema(Config{Resolvers: resolvers}))
			ctx := graphql.StartOperationTrace(t.Context())
			opCtx, errs := exec.CreateOperationContext(ctx, &graphql.RawParams{Query: tc.query, Variables: tc.vars})
			require.Empty(t, errs)
			responses, ctx := exec.DispatchOperation(graphql.WithOperationContext(ctx, opCtx), opCtx)
			require.NotNil(t, plan)
			defer plan.Release()
			for _, ev := range events {
				resolvers.events <- &ev
				want, err := json.Marshal(responses(ctx))
				require.NoError(t, err)
				require.Equal(t, string(want), string(plan.Payload(&ev)))
				require.Equal(t, string(want), string(plan.Payload(&ev)), "from the cache")
			}
		})
	}
}

// TestPlansAreShared: subscriptions with the same selection share a plan, and so one
// encoding of each event; a different alias is another plan.
func TestPlansAreShared(t *testing.T) {
	fan := fanout.New(1, nil)
	planOf := func(query string) *fanout.Plan {
		var plan *fanout.Plan
		resolvers := eventsResolver{Resolver: &Resolver{Plans: fan.Plans()}, events: make(chan *keystore.Event), plan: &plan}
		exec := executor.New(NewExecutableSchema(Config{Resolvers: resolvers}))
		ctx := graphql.StartOperationTrace(t.Context())
		opCtx, errs := exec.CreateOperationContext(ctx, &graphql.RawParams{Query: query})
		require.Empty(t, errs)
		exec.DispatchOperation(graphql.WithOperationContext(ctx, opCtx), opCtx)
		require.NotNil(t, plan)
		return plan
	}
	a := planOf(`subscription { keyEvents { seq keyId } }`)
	b := planOf(`subscription { keyEvents { ...F } } fragment F on KeyEvent { seq keyId }`)
	c := planOf(`subscription { keyEvents { seq id: keyId } }`)
	require.Same(t, a, b)
	require.NotSame(t, a, c)
	ev := &keystore.Event{Seq: 7, Type: keystore.EventDeleted, KeyID: "k"}
	require.Same(t, &a.Payload(ev)[0], &b.Payload(ev)[0], "one encoding for both")
	a.Release()
	b.Release()
	c.Release()
	require.NotSame(t, a, planOf(`subscription { keyEvents { seq keyId } }`), "the last release forgot it")
}

// TestPlanCacheKnowsStreams: a plan is shared by subscriptions of every pool, whose
// streams number their events alike; its cache must never answer one pool's event
// with another's encoding of the same seq.
func TestPlanCacheKnowsStreams(t *testing.T) {
	fan := fanout.New(1, nil)
	var plan *fanout.Plan
	resolvers := eventsResolver{Resolver: &Resolver{Plans: fan.Plans()}, events: make(chan *keystore.Event), plan: &plan}
	exec := executor.New(NewExecutableSchema(Config{Resolvers: resolvers}))
	ctx := graphql.StartOperationTrace(t.Context())
	opCtx, errs := exec.CreateOperationContext(ctx, &graphql.RawParams{Query: `subscription { keyEvents { seq keyId pool } }`})
	require.Empty(t, errs)
	exec.DispatchOperation(graphql.WithOperationContext(ctx, opCtx), opCtx)
	require.NotNil(t, plan)
	defer plan.Release()
	a := keystore.Event{Seq: 1, Stream: "streamA", Pool: "a", Type: keystore.EventGenerated, KeyID: "ka"}
	b := keystore.Event{Seq: 1, Stream: "streamB", Pool: "b", Type: keystore.EventGenerated, KeyID: "kb"}
	require.Contains(t, string(plan.Payload(&a)), `"ka"`)
	require.Contains(t, string(plan.Payload(&b)), `"kb"`, "pool b's event answered from pool a's cache")
	require.Contains(t, string(plan.Payload(&a)), `"ka"`)
}
