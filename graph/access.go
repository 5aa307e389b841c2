package graph

import (
	"context"

	"github.com/99designs/gqlgen/graphql"
	"github.com/vektah/gqlparser/v2/gqlerror"

	"github.com/keypool/keypool/auth"
	"github.com/keypool/keypool/keystore"
)

// accessCheck is access control's gate in the executor, which every transport's
// operations pass (POST, GET, persisted, SSE, websocket): every root field of the
// operation, aliases and fragments resolved, is checked by auth.Allow before any runs,
// so an operation with one refused field runs none of them.
type accessCheck struct{}

var (
	_ graphql.HandlerExtension        = accessCheck{}
	_ graphql.OperationContextMutator = accessCheck{}
)

func (accessCheck) ExtensionName() string                   { return "AccessControl" }
func (accessCheck) Validate(graphql.ExecutableSchema) error { return nil }
func (accessCheck) MutateOperationContext(ctx context.Context, oc *graphql.OperationContext) *gqlerror.Error {
	// Any root type may be named: validation refused fragments on another root type
	// than the operation's.
	roots := []string{"Query", "Mutation", "Subscription"}
	for _, f := range graphql.CollectFields(oc, oc.Operation.SelectionSet, roots) {
		if err := auth.Allow(ctx, f.Name); err != nil {
			return coded(keystore.ErrorCode(err), "%s", keystore.ErrorMessage(err))
		}
	}
	return nil
}
