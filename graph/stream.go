package graph

import (
	"context"
	"sync"

	"github.com/99designs/gqlgen/graphql"
	"github.com/vektah/gqlparser/v2/ast"
	"github.com/vektah/gqlparser/v2/gqlerror"

	"github.com/keypool/keypool/keystore"
)

// eventStream hands gqlgen the store subscription's own channel: no goroutine of
// ours stands between the hub and the client. The subscription is recorded in the
// operation's streamEnd, so that when the channel closes, streamErrors can send the
// reason (SLOW_CONSUMER) as the stream's last response.
func eventStream(ctx context.Context, sub *keystore.Subscription) <-chan *keystore.Event {
	if end, ok := ctx.Value(streamEndKey{}).(*streamEnd); ok {
		end.set(sub)
	}
	return sub.C
}

// fanoutSlotKey finds an operation's *fanoutSlot in its context.
type fanoutSlotKey struct{}

// fanoutSlot is where the keyEvents resolver leaves a Polled subscription and the
// plan of its selection for the transport that dispatched the operation, which then
// delivers it through the fan-out rather than through gqlgen's execution of every
// event for every subscriber. gqlgen still parses, validates, coerces the variables,
// checks the complexity and calls the resolver, so that every refusal and every
// store error is answered exactly as for any operation; and once the delivery is
// over, the transport lets gqlgen's stream end as it would (streamErrors sends the
// subscription's end, SLOW_CONSUMER). Without a slot (another transport), or for a
// selection no plan encodes, gqlgen executes the stream itself.
type fanoutSlot struct {
	fanout *fanout
	sub    *keystore.Subscription
	plan   *plan
}

// withFanoutSlot gives an operation's context a slot for f.
func withFanoutSlot(ctx context.Context, f *fanout) (context.Context, *fanoutSlot) {
	slot := &fanoutSlot{fanout: f}
	return context.WithValue(ctx, fanoutSlotKey{}, slot), slot
}

// subscribeKeyEvents is the keyEvents resolver: a Polled subscription left in the
// operation's fanoutSlot, if it has one, else a fed one handed to gqlgen.
func subscribeKeyEvents(ctx context.Context, store keystore.Store, types []keystore.EventType, after *int64) (<-chan *keystore.Event, error) {
	slot, _ := ctx.Value(fanoutSlotKey{}).(*fanoutSlot)
	var p *plan
	if slot != nil && slot.sub == nil {
		p = slot.fanout.plans.forField(ctx)
	}
	sub, err := store.Subscribe(ctx, keystore.SubscribeOptions{Types: types, After: after, Polled: p != nil})
	if err != nil {
		if p != nil {
			p.release()
		}
		return nil, err
	}
	if p != nil {
		if sub.Polled() {
			slot.sub, slot.plan = sub, p
		} else {
			p.release() // a store that feeds its subscriptions regardless
		}
	}
	return eventStream(ctx, sub), nil
}

// streamEndKey finds an operation's *streamEnd in its context.
type streamEndKey struct{}

// streamEnd holds the store subscription behind an operation's stream.
type streamEnd struct {
	mu       sync.Mutex
	sub      *keystore.Subscription
	reported bool
}

func (s *streamEnd) set(sub *keystore.Subscription) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.sub = sub
}

// take returns, once, the error that ended the stream; later calls return nil. It is
// called when gqlgen finds the stream over, so the subscription has ended or is
// ending with its context, and Err returns at once.
func (s *streamEnd) take() error {
	s.mu.Lock()
	sub := s.sub
	first := !s.reported
	s.reported = true
	s.mu.Unlock()
	if sub == nil || !first {
		return nil
	}
	return sub.Err()
}

// streamErrors lets a subscription end with an error on every transport. gqlgen
// ends a stream silently when the resolver's channel closes; this extension gives
// each operation a streamEnd, and when the stream ends with an error recorded there
// it sends one last response carrying that error (through the error presenter, so
// it has its extensions.code, e.g. SLOW_CONSUMER) before ending the stream.
type streamErrors struct{}

var (
	_ graphql.HandlerExtension     = streamErrors{}
	_ graphql.OperationInterceptor = streamErrors{}
	_ graphql.ResponseInterceptor  = streamErrors{}
)

func (streamErrors) ExtensionName() string                          { return "StreamErrors" }
func (streamErrors) Validate(schema graphql.ExecutableSchema) error { return nil }

func (streamErrors) InterceptOperation(ctx context.Context, next graphql.OperationHandler) graphql.ResponseHandler {
	if op := graphql.GetOperationContext(ctx); op.Operation == nil || op.Operation.Operation != ast.Subscription {
		return next(ctx)
	}
	return next(context.WithValue(ctx, streamEndKey{}, &streamEnd{}))
}

func (streamErrors) InterceptResponse(ctx context.Context, next graphql.ResponseHandler) *graphql.Response {
	resp := next(ctx)
	if resp != nil {
		return resp
	}
	end, ok := ctx.Value(streamEndKey{}).(*streamEnd)
	if !ok {
		return nil
	}
	err := end.take()
	if err == nil {
		return nil
	}
	graphql.AddError(ctx, err)
	return &graphql.Response{Errors: gqlerror.List(graphql.GetErrors(ctx))}
}
