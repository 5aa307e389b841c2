package graph

import (
	"context"

	"github.com/99designs/gqlgen/graphql"
	"github.com/99designs/gqlgen/graphql/executor"
	"github.com/vektah/gqlparser/v2/ast"
	"github.com/vektah/gqlparser/v2/gqlerror"

	"github.com/keypool/keypool/wire"
)

// costGate bounds how many requests do their costly part at once (decoding a large
// body; checking, parsing and validating a new document) to one fewer than the Go
// scheduler's processors, at least one: however many clients send the worst
// documents, requests with cached documents (every real client's second request on)
// keep a core. Waiters go in first come, first served; one whose client leaves stops
// waiting.
type costGate chan struct{}

func (g costGate) enter(ctx context.Context) error {
	select {
	case g <- struct{}{}:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

func (g costGate) leave() { <-g }

// costlyBodyBytes is the body size from which decoding a request goes through the
// gate (BENCHMARKS.md, "Costly documents").
const costlyBodyBytes = 64 << 10

// gatedExecutor is gqlgen's executor with CreateOperationContext, where a new
// document is checked, parsed and validated, behind the gate.
type gatedExecutor struct {
	*executor.Executor
	gate costGate
	docs *boundedCache[*ast.QueryDocument]
}

func (e gatedExecutor) CreateOperationContext(ctx context.Context, params *graphql.RawParams) (*graphql.OperationContext, gqlerror.List) {
	if params.Query == "" || e.docs.Contains(params.Query) {
		return e.Executor.CreateOperationContext(ctx, params) // cached, or a persisted query's hash
	}
	if err := e.gate.enter(ctx); err != nil {
		return &graphql.OperationContext{}, gqlerror.List{coded(wire.CodeBadRequest, "the request was cancelled")}
	}
	defer e.gate.leave()
	return e.Executor.CreateOperationContext(ctx, params)
}
