package graph

import (
	"context"

	"github.com/99designs/gqlgen/graphql"
	"github.com/vektah/gqlparser/v2/gqlerror"

	"github.com/keypool/keypool/graph/fanout"
	"github.com/keypool/keypool/keystore"
)

type streamSlotKey struct{}

// streamSlot is where the keyEvents resolver leaves its subscription and the plan of
// its selection for the transport, which delivers the events through the fan-out
// rather than through gqlgen's execution of every event for every subscriber. gqlgen
// still runs every check and calls the resolver, so every refusal and store error is
// answered as for any operation; after delivery, the channel the resolver gave gqlgen
// closes, and gqlgen's stream ends as it would.
type streamSlot struct {
	sub  *keystore.Subscription
	plan *fanout.Plan
	end  chan *keystore.Event
}

// execute runs an operation for a streaming transport (websocket, SSE): keyEvents'
// events go to sink through the fan-out, every other response to send. It reports
// whether the client took everything (false: nothing more can be sent).
func execute(ctx context.Context, exec graphql.GraphExecutor, opCtx *graphql.OperationContext,
	fan *fanout.Fanout, sink fanout.Sink, send func(*graphql.Response) bool) bool {
	slot := &streamSlot{end: make(chan *keystore.Event)}
	responses, ctx := exec.DispatchOperation(context.WithValue(ctx, streamSlotKey{}, slot), opCtx)
	if slot.sub != nil { // else the resolver failed: gqlgen's stream carries its error
		err := fan.Deliver(ctx, slot.sub, slot.plan, sink)
		close(slot.end)
		if err != nil {
			return false
		}
		// gqlgen would end the stream silently: a subscription that ended with an
		// error (SLOW_CONSUMER, say) sends it, through the error presenter, as one last
		// response; unless the operation's context ended (the client left, or the
		// server is stopping), as gqlgen then sends nothing more.
		select {
		case <-slot.sub.Done():
			if err := slot.sub.Err(); err != nil && ctx.Err() == nil && !send(exec.DispatchError(ctx, gqlerror.List{gqlerror.Wrap(err)})) {
				return false
			}
		default:
		}
	}
	for resp := responses(ctx); resp != nil; resp = responses(ctx) {
		if !send(resp) {
			return false
		}
	}
	return true
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
	return slot.end, nil
}
