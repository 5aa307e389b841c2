package graph

import (
	"context"
	"sync"

	"github.com/99designs/gqlgen/graphql"
	"github.com/vektah/gqlparser/v2/ast"
	"github.com/vektah/gqlparser/v2/gqlerror"

	"github.com/keypool/keypool/graph/fanout"
	"github.com/keypool/keypool/keystore"
)

// streamSlotKey finds an operation's *streamSlot in its context.
type streamSlotKey struct{}

// streamSlot is where the keyEvents resolver leaves its subscription and the plan of
// its selection for the transport that dispatched the operation, which delivers the
// events through the fan-out rather than through gqlgen's execution of every event
// for every subscriber. gqlgen still parses, validates, coerces the variables, checks
// the complexity and calls the resolver, so every refusal and every store error is
// answered as for any operation; once delivery is over, the channel the resolver
// gave gqlgen closes, and gqlgen's stream ends as it would (streamErrors sends the
// subscription's end, SLOW_CONSUMER for one).
type streamSlot struct {
	sub  *keystore.Subscription
	plan *fanout.Plan
	end  chan *keystore.Event
}

// withStreamSlot gives an operation's context a slot for its keyEvents stream.
func withStreamSlot(ctx context.Context) (context.Context, *streamSlot) {
	slot := &streamSlot{end: make(chan *keystore.Event)}
	return context.WithValue(ctx, streamSlotKey{}, slot), slot
}

// deliver runs the stream the resolver left in the slot, if it did, and reports
// whether the sink failed (nothing more can be sent). ctx is the operation's.
func (slot *streamSlot) deliver(ctx context.Context, fan *fanout.Fanout, sink fanout.Sink) (sinkFailed bool) {
	if slot.sub == nil {
		return false // the resolver failed: gqlgen's stream carries its error
	}
	err := fan.Deliver(ctx, slot.sub, slot.plan, sink)
	close(slot.end)
	return err != nil
}

// subscribeKeyEvents is the keyEvents resolver: it leaves the subscription and its
// plan in the operation's slot, and hands gqlgen the slot's channel.
func (r *Resolver) subscribeKeyEvents(ctx context.Context, opts keystore.SubscribeOptions) (<-chan *keystore.Event, error) {
	slot, _ := ctx.Value(streamSlotKey{}).(*streamSlot)
	if slot == nil || slot.sub != nil {
		// Plain HTTP refuses subscriptions before they run; one operation has one root
		// subscription field.
		return nil, keystore.Errorf(keystore.EINTERNAL, "keyEvents outside a streaming transport")
	}
	p := r.Plans.ForField(ctx)
	if p == nil {
		return nil, keystore.Errorf(keystore.EINVALID, "keyEvents cannot be deferred")
	}
	sub, err := r.Store.Subscribe(ctx, opts)
	if err != nil {
		p.Release()
		return nil, err
	}
	slot.sub, slot.plan = sub, p
	if end, ok := ctx.Value(streamEndKey{}).(*streamEnd); ok {
		end.set(sub)
	}
	return slot.end, nil
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
// called when gqlgen finds the stream over, once delivery has returned: the
// subscription has ended (Err returns at once), or its context has.
func (s *streamEnd) take() error {
	s.mu.Lock()
	sub := s.sub
	first := !s.reported
	s.reported = true
	s.mu.Unlock()
	if sub == nil || !first {
		return nil
	}
	select {
	case <-sub.Done():
		return sub.Err()
	default:
		return nil // its context ended: the client left, or the server is stopping
	}
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
