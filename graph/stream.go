package graph

import (
	"context"
	"sync"

	"github.com/99designs/gqlgen/graphql"
	"github.com/vektah/gqlparser/v2/ast"
	"github.com/vektah/gqlparser/v2/gqlerror"

	"github.com/keypool/keypool/keystore"
)

// forwardEvents copies a store subscription to the channel gqlgen reads. Every send
// also waits on ctx, so a client that leaves never strands the goroutine; the channel
// is closed exactly once, after the reason the stream ended (if it is an error) has
// been recorded for streamErrors to send.
func forwardEvents(ctx context.Context, sub *keystore.Subscription) <-chan *keystore.Event {
	out := make(chan *keystore.Event)
	go func() {
		defer close(out)
		for ev := range sub.C {
			select {
			case out <- &ev:
			case <-ctx.Done():
				return
			}
		}
		if err := sub.Err(); err != nil {
			if end, ok := ctx.Value(streamEndKey{}).(*streamEnd); ok {
				end.set(err)
			}
		}
	}()
	return out
}

// streamEndKey finds an operation's *streamEnd in its context.
type streamEndKey struct{}

// streamEnd holds the error that ended a subscription's stream.
type streamEnd struct {
	mu       sync.Mutex
	err      error
	reported bool
}

func (s *streamEnd) set(err error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.err = err
}

// take returns the error once; later calls return nil.
func (s *streamEnd) take() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.reported {
		return nil
	}
	s.reported = true
	return s.err
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
