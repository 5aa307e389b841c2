package graph

import (
	"context"
	"io"

	"github.com/99designs/gqlgen/graphql"

	"github.com/keypool/keypool/graph/model"
	"github.com/keypool/keypool/keystore"
)

// generateKeys answers with up to -max-generate keys, and gqlgen's executor marshals
// a list of objects with a goroutine, a field context and a field set for every
// element and every field: for -max-generate keys, far past what one request may
// cost (TestCostlyDocuments; the figures are in BENCHMARKS.md). So generateKeys' value
// is marshalled by a graphql.Marshaler of its own, keyList, straight from the keys, in
// the bytes gqlgen would write: the selection is resolved once by gqlgen's own
// CollectFields (aliases, fragments, @skip and @include), and each value by the
// scalars' own marshalers (objects.go). A selection this does not write exactly (a
// deferred fragment) is left to gqlgen.
//
// Everything else is the executor's: the operation, its extensions, the resolver's
// call inside gqlgen's ResolveField (arguments, errors and their paths); the resolver
// hands the keys over through the context and returns an empty list, whose
// marshaler writeKeyLists, a root field middleware, then replaces.

// keyListOut carries the keys from the resolver to writeKeyLists.
type keyListOut struct {
	keys  []keystore.Key
	taken bool
}

type keyListKey struct{}

// keysOrError adapts a Store method's ([]Key, error) to generateKeys' and importKeys'
// answer: the keys go to the root field's writer when one waits for them in ctx (and
// gqlgen gets an empty list, which writeKeyLists replaces), else to gqlgen.
func keysOrError(ctx context.Context, keys []keystore.Key, err error) ([]*model.Key, error) {
	if err != nil {
		return nil, err
	}
	if out, _ := ctx.Value(keyListKey{}).(*keyListOut); out != nil {
		out.keys, out.taken = keys, true
		return []*model.Key{}, nil
	}
	answer := make([]*model.Key, len(keys))
	for i := range keys {
		answer[i] = model.NewKey(keys[i])
	}
	return answer, nil
}

// writeKeyLists is the root field middleware that writes generateKeys' answer.
func writeKeyLists(ctx context.Context, next graphql.RootResolver) graphql.Marshaler {
	rfc := graphql.GetRootFieldContext(ctx)
	parent := graphql.GetFieldContext(ctx)
	opCtx := graphql.GetOperationContext(ctx)
	if rfc == nil || parent == nil || opCtx == nil || parent.Object != "Mutation" || rfc.Field.Name != "generateKeys" && rfc.Field.Name != "importKeys" {
		return next(ctx)
	}
	fields, ok := planObject(opCtx, rfc.Field.Selections, &keyType)
	if !ok {
		return next(ctx)
	}
	out := &keyListOut{}
	answer := next(context.WithValue(ctx, keyListKey{}, out))
	if !out.taken {
		return answer // an error, with gqlgen's path and null
	}
	return keyList{fields: fields, keys: out.keys}
}

// keyList writes a list of keys as gqlgen writes [Key!]! for the planned selection.
type keyList struct {
	fields []objField
	keys   []keystore.Key
}

// keyListChunk is about how many bytes keyList gathers before it writes them.
const keyListChunk = 4 << 10

func (l keyList) MarshalGQL(w io.Writer) {
	b := make([]byte, 0, keyListChunk+1024) // the last key may pass keyListChunk
	b = append(b, '[')
	for i := range l.keys {
		if i > 0 {
			b = append(b, ',')
		}
		b = appendObject(b, &l.keys[i], l.fields)
		if grower, ok := w.(interface{ Grow(int) }); ok && i == 0 {
			// gqlgen gathers the whole answer in a bytes.Buffer: grown once, from the
			// first key's size, rather than doubled over and over for a long list
			// (which allocates about twice the answer).
			grower.Grow((len(b) + 1) * len(l.keys) * 9 / 8)
		}
		if len(b) >= keyListChunk {
			_, _ = w.Write(b)
			b = b[:0]
		}
	}
	b = append(b, ']')
	_, _ = w.Write(b)
}
