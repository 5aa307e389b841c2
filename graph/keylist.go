package graph

import (
	"context"
	"io"
	"strconv"

	"github.com/99designs/gqlgen/graphql"
	"github.com/vektah/gqlparser/v2/ast"

	"github.com/keypool/keypool/graph/fanout"
	"github.com/keypool/keypool/graph/model"
	"github.com/keypool/keypool/keystore"
	"github.com/keypool/keypool/wire"
)

// generateKeys answers with up to -max-generate keys, and gqlgen's executor marshals
// a list of objects with a goroutine, a field context and a field set for every
// element and every field: for -max-generate keys, far past what one request may
// cost (TestCostlyDocuments; the figures are in BENCHMARKS.md). So generateKeys' value
// is marshalled by a graphql.Marshaler of its own, keyList, straight from the keys, in
// the bytes gqlgen would write: the selection is resolved once by gqlgen's own
// CollectFields (aliases, fragments, @skip and @include, merged fields), and each
// value as the scalars' own marshalers write it. A selection this does not write
// exactly (a deferred fragment) is left to gqlgen. Every object of such an answer is
// a view of one key: a Key, its history, its lease, and the lease's key, which is
// the key itself.
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

// objField is one response entry of an object: its response name, its field's
// writer, and for an object-valued field the selection of that object.
type objField struct {
	alias string
	write fieldWriter
	sub   []objField
}

// fieldWriter appends a field's value, a view of k; sub is the selection of an
// object-valued field.
type fieldWriter func(b []byte, k *keystore.Key, sub []objField) []byte

// objType is an object type of the schema as the writers know it: a writer for each
// field, and the type of each object-valued field.
type objType struct {
	name    string
	fields  map[string]fieldWriter
	objects map[string]*objType
}

var keyType, historyType, leaseType objType

func init() {
	keyType = objType{name: "Key", fields: map[string]fieldWriter{
		"id":        func(b []byte, k *keystore.Key, _ []objField) []byte { return fanout.AppendString(b, k.ID) },
		"pool":      func(b []byte, k *keystore.Key, _ []objField) []byte { return fanout.AppendString(b, k.Pool) },
		"status":    func(b []byte, k *keystore.Key, _ []objField) []byte { return fanout.AppendString(b, string(k.Status)) },
		"createdAt": func(b []byte, k *keystore.Key, _ []objField) []byte { return wire.AppendTime(b, k.CreatedAt) },
		"expiresAt": func(b []byte, k *keystore.Key, _ []objField) []byte { return wire.AppendTime(b, k.ExpiresAt) },
		"lease": func(b []byte, k *keystore.Key, sub []objField) []byte {
			if k.Lease == nil {
				return append(b, "null"...)
			}
			return appendObject(b, k, sub)
		},
		"history": appendObject,
		"coolingUntil": func(b []byte, k *keystore.Key, _ []objField) []byte {
			if k.CoolingUntil == nil {
				return append(b, "null"...)
			}
			return wire.AppendTime(b, *k.CoolingUntil)
		},
		"name": func(b []byte, k *keystore.Key, _ []objField) []byte {
			if k.Name == "" {
				return append(b, "null"...)
			}
			return fanout.AppendString(b, k.Name)
		},
	}, objects: map[string]*objType{"lease": &leaseType, "history": &historyType}}
	historyType = objType{name: "KeyHistory", fields: map[string]fieldWriter{
		"timesAcquired": func(b []byte, k *keystore.Key, _ []objField) []byte {
			return strconv.AppendInt(b, k.History.TimesAcquired, 10)
		},
		"leasesExpired": func(b []byte, k *keystore.Key, _ []objField) []byte {
			return strconv.AppendInt(b, k.History.LeasesExpired, 10)
		},
		"lastAcquiredAt": func(b []byte, k *keystore.Key, _ []objField) []byte {
			if k.History.LastAcquiredAt.IsZero() {
				return append(b, "null"...)
			}
			return wire.AppendTime(b, k.History.LastAcquiredAt)
		},
		"failures": func(b []byte, k *keystore.Key, _ []objField) []byte {
			return strconv.AppendInt(b, k.History.Failures, 10)
		},
		"consecutiveFailures": func(b []byte, k *keystore.Key, _ []objField) []byte {
			return strconv.AppendInt(b, k.History.ConsecutiveFailures, 10)
		},
	}}
	leaseType = objType{name: "Lease", fields: map[string]fieldWriter{
		"token":      func(b []byte, k *keystore.Key, _ []objField) []byte { return fanout.AppendString(b, k.Lease.Token) },
		"fence":      func(b []byte, k *keystore.Key, _ []objField) []byte { return strconv.AppendInt(b, k.Lease.Fence, 10) },
		"acquiredAt": func(b []byte, k *keystore.Key, _ []objField) []byte { return wire.AppendTime(b, k.Lease.AcquiredAt) },
		"expiresAt":  func(b []byte, k *keystore.Key, _ []objField) []byte { return wire.AppendTime(b, k.Lease.ExpiresAt) },
		"key":        appendObject,
	}, objects: map[string]*objType{"key": &keyType}}
}

// planObject resolves a selection of an object of type t to its response entries, in
// order; or reports that it cannot write the selection exactly (a deferred fragment).
func planObject(opCtx *graphql.OperationContext, sel ast.SelectionSet, t *objType) ([]objField, bool) {
	collected := graphql.CollectFields(opCtx, sel, []string{t.name})
	fields := make([]objField, 0, len(collected))
	for _, f := range collected {
		write, ok := t.fields[f.Name]
		if f.Name == "__typename" {
			write, ok = appendTypename(t.name), true
		}
		if !ok || f.IsDeferred() {
			return nil, false
		}
		field := objField{alias: f.Alias, write: write}
		if sub := t.objects[f.Name]; sub != nil {
			if field.sub, ok = planObject(opCtx, f.Selections, sub); !ok {
				return nil, false
			}
		}
		fields = append(fields, field)
	}
	return fields, true
}

// appendTypename returns the writer of __typename in an object of type name.
func appendTypename(name string) fieldWriter {
	quoted := strconv.Quote(name)
	return func(b []byte, _ *keystore.Key, _ []objField) []byte { return append(b, quoted...) }
}

// appendObject appends the object that fields select, every value a view of k.
func appendObject(b []byte, k *keystore.Key, fields []objField) []byte {
	b = append(b, '{')
	for i, f := range fields {
		if i > 0 {
			b = append(b, ',')
		}
		b = strconv.AppendQuote(b, f.alias) // a GraphQL name: nothing to escape
		b = f.write(append(b, ':'), k, f.sub)
	}
	return append(b, '}')
}
