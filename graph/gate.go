package graph

import (
	"context"

	"github.com/99designs/gqlgen/graphql"
	"github.com/99designs/gqlgen/graphql/executor"
	"github.com/vektah/gqlparser/v2/ast"
	"github.com/vektah/gqlparser/v2/gqlerror"
	"golang.org/x/sync/semaphore"

	"github.com/keypool/keypool/wire"
)

// costlyBodyBytes is the body size from which decoding a request goes through the
// gate (BENCHMARKS.md, "Costly documents").
const costlyBodyBytes = 64 << 10

// gatedExecutor is gqlgen's executor with CreateOperationContext, where a new
// document is checked, parsed and validated, behind the gate. The gate bounds how many
// requests do their costly part at once (that, or decoding a large body) to one fewer
// than the Go scheduler's processors, at least one: however many clients send the
// worst documents, requests with cached documents (every real client's second request
// on) keep a core. Waiters go in first come, first served; one whose client leaves
// stops waiting.
type gatedExecutor struct {
	*executor.Executor
	gate *semaphore.Weighted
	docs *boundedCache[*ast.QueryDocument]
}

func (e gatedExecutor) CreateOperationContext(ctx context.Context, params *graphql.RawParams) (*graphql.OperationContext, gqlerror.List) {
	if params.Query == "" || e.docs.Contains(params.Query) {
		return e.Executor.CreateOperationContext(ctx, params) // cached, or a persisted query's hash
	}
	if err := e.gate.Acquire(ctx, 1); err != nil {
		return &graphql.OperationContext{}, gqlerror.List{coded(wire.CodeBadRequest, "the request was cancelled")}
	}
	defer e.gate.Release(1)
	return e.Executor.CreateOperationContext(ctx, params)
}
