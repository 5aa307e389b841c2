package graph

import (
	"context"
	"io"
	"strconv"

	"github.com/99designs/gqlgen/graphql"
	"github.com/vektah/gqlparser/v2/ast"

	"github.com/keypool/keypool/keystore"
)

// generateKeys answers with up to -max-generate keys, and gqlgen's executor marshals
// a list of objects with a goroutine, a field context and a field set for every
// element and every field: 10,000 keys cost some 45 ms of CPU and 14 MB on top of
// making them, past what one request may cost (issue 12). So the answer of
// generateKeys is written here, straight from the keys, in the bytes gqlgen would
// write: the selection is resolved once by gqlgen's own CollectFields (aliases,
// fragments, @skip and @include), and each value by the scalars' own marshalers.
// A selection this does not write exactly (a deferred fragment) is left to gqlgen.
//
// The resolver still runs inside gqlgen's ResolveField, so arguments, errors and
// their paths are gqlgen's; it hands the keys over through the context and returns an
// empty list, which writeKeyLists then replaces.

// keyListOut carries the keys from the resolver to writeKeyLists.
type keyListOut struct {
	keys  []keystore.Key
	taken bool
}

type keyListKey struct{}

// takeKeyList hands keys to the root field's writer when one waits for them in ctx,
// and reports whether it did. Keys with a lease are never handed over (generated keys
// have none; the writer writes lease as null).
func takeKeyList(ctx context.Context, keys []keystore.Key) bool {
	out, _ := ctx.Value(keyListKey{}).(*keyListOut)
	if out == nil {
		return false
	}
	for i := range keys {
		if keys[i].Lease != nil {
			return false
		}
	}
	out.keys, out.taken = keys, true
	return true
}

// writeKeyLists is the root field middleware that writes generateKeys' answer.
func writeKeyLists(ctx context.Context, next graphql.RootResolver) graphql.Marshaler {
	rfc := graphql.GetRootFieldContext(ctx)
	parent := graphql.GetFieldContext(ctx)
	opCtx := graphql.GetOperationContext(ctx)
	if rfc == nil || parent == nil || opCtx == nil || parent.Object != "Mutation" || rfc.Field.Name != "generateKeys" {
		return next(ctx)
	}
	fields, ok := planKey(opCtx, rfc.Field.Selections)
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

// keyField is one response entry of a Key or of its KeyHistory.
type keyField struct {
	alias   string
	value   keyValue
	history []keyField // the selection of history
}

type keyValue uint8

const (
	keyID keyValue = iota
	keyStatus
	keyCreatedAt
	keyExpiresAt
	keyLease
	keyHistory
	keyTypename
	historyTimesAcquired
	historyLeasesExpired
	historyLastAcquiredAt
	historyTypename
)

var (
	keyValues = map[string]keyValue{
		"id": keyID, "status": keyStatus, "createdAt": keyCreatedAt, "expiresAt": keyExpiresAt,
		"lease": keyLease, "history": keyHistory, "__typename": keyTypename,
	}
	historyValues = map[string]keyValue{
		"timesAcquired": historyTimesAcquired, "leasesExpired": historyLeasesExpired,
		"lastAcquiredAt": historyLastAcquiredAt, "__typename": historyTypename,
	}
	keyTypes     = []string{"Key"}
	historyTypes = []string{"KeyHistory"}
)

// planKey resolves a Key selection to its response entries, in order, or reports that
// it cannot write it exactly.
func planKey(opCtx *graphql.OperationContext, sel ast.SelectionSet) ([]keyField, bool) {
	return planFields(opCtx, sel, keyTypes, keyValues)
}

func planFields(opCtx *graphql.OperationContext, sel ast.SelectionSet, types []string, values map[string]keyValue) ([]keyField, bool) {
	collected := graphql.CollectFields(opCtx, sel, types)
	fields := make([]keyField, 0, len(collected))
	for _, f := range collected {
		value, ok := values[f.Name]
		if !ok || f.IsDeferred() {
			return nil, false
		}
		field := keyField{alias: f.Alias, value: value}
		if value == keyHistory {
			if field.history, ok = planFields(opCtx, f.Selections, historyTypes, historyValues); !ok {
				return nil, false
			}
		}
		fields = append(fields, field)
	}
	return fields, true
}

// keyList writes a list of keys as gqlgen writes [Key!]! for the planned selection.
type keyList struct {
	fields []keyField
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
		b = appendKeyFields(b, l.fields, &l.keys[i])
		if len(b) >= keyListChunk {
			_, _ = w.Write(b)
			b = b[:0]
		}
	}
	b = append(b, ']')
	_, _ = w.Write(b)
}

func appendKeyFields(b []byte, fields []keyField, k *keystore.Key) []byte {
	b = append(b, '{')
	for i, f := range fields {
		if i > 0 {
			b = append(b, ',')
		}
		b = strconv.AppendQuote(b, f.alias) // a GraphQL name: nothing to escape
		b = append(b, ':')
		switch f.value {
		case keyID:
			b = appendString(b, k.ID)
		case keyStatus:
			b = appendString(b, string(k.Status))
		case keyCreatedAt:
			b = keystore.AppendTime(b, k.CreatedAt)
		case keyExpiresAt:
			b = keystore.AppendTime(b, k.ExpiresAt)
		case keyLease:
			b = append(b, "null"...) // takeKeyList hands over no key with a lease
		case keyHistory:
			b = appendKeyFields(b, f.history, k)
		case keyTypename:
			b = append(b, `"Key"`...)
		case historyTimesAcquired:
			b = strconv.AppendInt(b, k.History.TimesAcquired, 10)
		case historyLeasesExpired:
			b = strconv.AppendInt(b, k.History.LeasesExpired, 10)
		case historyLastAcquiredAt:
			if k.History.LastAcquiredAt.IsZero() {
				b = append(b, "null"...)
			} else {
				b = keystore.AppendTime(b, k.History.LastAcquiredAt)
			}
		case historyTypename:
			b = append(b, `"KeyHistory"`...)
		}
	}
	return append(b, '}')
}

// appendString appends s as gqlgen's string and ID marshalers write it: printable
// ASCII other than a quote or a backslash as it is, anything else through them.
func appendString(b []byte, s string) []byte {
	for i := 0; i < len(s); i++ {
		if c := s[i]; c < 0x20 || c > 0x7e || c == '"' || c == '\\' {
			return appendMarshaled(b, graphql.MarshalString(s))
		}
	}
	b = append(b, '"')
	b = append(b, s...)
	return append(b, '"')
}
