package graph

import (
	"context"
	"fmt"
	"hash/maphash"
	"strings"
	"sync"

	"github.com/99designs/gqlgen/complexity"
	"github.com/99designs/gqlgen/graphql"
	"github.com/99designs/gqlgen/graphql/errcode"
	"github.com/vektah/gqlparser/v2/ast"
	"github.com/vektah/gqlparser/v2/gqlerror"
)

// complexityLimit is gqlgen's fixed complexity limit (extension.FixedComplexityLimit),
// with each operation's complexity computed once rather than on every request: it
// depends only on the document, the operation and the values of its Int and Duration
// variables (generateKeys' count and acquireKey's wait are the arguments a complexity
// reads).
type complexityLimit struct {
	limit int
	es    graphql.ExecutableSchema
	seed  maphash.Seed

	mu    sync.Mutex
	known map[complexityKey]int
}

// complexityKey names an operation: its document by a hash of the text (the text
// itself could be a MiB), its name, and the values of the variables it depends on.
type complexityKey struct {
	doc  uint64
	op   string
	vars string
}

// complexityCacheEntries bounds the operations whose complexity is remembered; the
// map starts afresh when full.
const complexityCacheEntries = 4096

var (
	_ graphql.HandlerExtension        = (*complexityLimit)(nil)
	_ graphql.OperationContextMutator = (*complexityLimit)(nil)
)

func newComplexityLimit(limit int) *complexityLimit {
	return &complexityLimit{limit: limit, seed: maphash.MakeSeed(), known: map[complexityKey]int{}}
}

func (*complexityLimit) ExtensionName() string { return "ComplexityLimit" }

func (c *complexityLimit) Validate(schema graphql.ExecutableSchema) error {
	c.es = schema
	return nil
}

func (c *complexityLimit) MutateOperationContext(ctx context.Context, opCtx *graphql.OperationContext) *gqlerror.Error {
	op := opCtx.Doc.Operations.ForName(opCtx.OperationName)
	key := complexityKey{doc: maphash.String(c.seed, opCtx.RawQuery), op: opCtx.OperationName, vars: complexityVariables(op, opCtx.Variables)}
	c.mu.Lock()
	cost, ok := c.known[key]
	c.mu.Unlock()
	if !ok {
		cost = complexity.Calculate(ctx, c.es, op, opCtx.Variables)
		c.mu.Lock()
		if len(c.known) >= complexityCacheEntries {
			clear(c.known)
		}
		c.known[key] = cost
		c.mu.Unlock()
	}
	if cost > c.limit {
		err := gqlerror.Errorf("operation has complexity %d, which exceeds the limit of %d", cost, c.limit)
		errcode.Set(err, codeComplexity)
		return err
	}
	return nil
}

// complexityVariables writes out the values of op's variables of the types that a
// complexity reads: Int and Duration.
func complexityVariables(op *ast.OperationDefinition, vars map[string]any) string {
	if op == nil {
		return ""
	}
	var b strings.Builder
	for _, v := range op.VariableDefinitions {
		if v.Type != nil && (v.Type.Name() == "Int" || v.Type.Name() == "Duration") {
			fmt.Fprintf(&b, "%s=%v;", v.Variable, vars[v.Variable])
		}
	}
	return b.String()
}
