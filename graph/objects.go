package graph

import (
	"bytes"
	"strconv"

	"github.com/99designs/gqlgen/graphql"
	"github.com/vektah/gqlparser/v2/ast"

	"github.com/keypool/keypool/keystore"
	"github.com/keypool/keypool/wire"
)

// Writers of Key, KeyHistory and Lease selections in the bytes gqlgen writes for
// them, for generateKeys' list of keys (keylist.go).
// The selection is resolved once by gqlgen's own CollectFields (aliases, fragments,
// @skip and @include, merged fields) and each value written as the schema's scalar
// marshalers write it. Every object of such an answer is a view of one key: a Key,
// its history, its lease, and the lease's key, which is the key itself.

// objField is one response entry of an object, and for an object-valued field the
// selection of that object.
type objField struct {
	alias string
	value fieldValue
	sub   []objField
}

type fieldValue uint8

const (
	keyID fieldValue = iota
	keyPool
	keyStatus
	keyCreatedAt
	keyExpiresAt
	keyLease
	keyHistory
	keyTypename
	keyCoolingUntil
	keyName
	historyTimesAcquired
	historyLeasesExpired
	historyLastAcquiredAt
	historyFailures
	historyConsecutiveFailures
	historyTypename
	leaseToken
	leaseFence
	leaseAcquiredAt
	leaseExpiresAt
	leaseKey
	leaseTypename
)

// objType is an object type of the schema as the writers know it.
type objType struct {
	implementors []string
	fields       map[string]fieldValue
	objects      map[fieldValue]*objType // the type of each object-valued field
}

var keyType, historyType, leaseType objType

func init() {
	keyType = objType{
		implementors: []string{"Key"},
		fields: map[string]fieldValue{
			"id": keyID, "pool": keyPool, "status": keyStatus, "createdAt": keyCreatedAt, "expiresAt": keyExpiresAt,
			"lease": keyLease, "history": keyHistory, "__typename": keyTypename,
			"coolingUntil": keyCoolingUntil, "name": keyName,
		},
		objects: map[fieldValue]*objType{keyLease: &leaseType, keyHistory: &historyType},
	}
	historyType = objType{
		implementors: []string{"KeyHistory"},
		fields: map[string]fieldValue{
			"timesAcquired": historyTimesAcquired, "leasesExpired": historyLeasesExpired,
			"lastAcquiredAt": historyLastAcquiredAt, "__typename": historyTypename,
			"failures": historyFailures, "consecutiveFailures": historyConsecutiveFailures,
		},
	}
	leaseType = objType{
		implementors: []string{"Lease"},
		fields: map[string]fieldValue{
			"token": leaseToken, "fence": leaseFence, "acquiredAt": leaseAcquiredAt, "expiresAt": leaseExpiresAt,
			"key": leaseKey, "__typename": leaseTypename,
		},
		objects: map[fieldValue]*objType{leaseKey: &keyType},
	}
}

// planObject resolves a selection of an object of type t to its response entries, in
// order, and counts its fields (gqlgen's complexity of the selection: one a field); or
// reports that it cannot write the selection exactly (a deferred fragment).
func planObject(opCtx *graphql.OperationContext, sel ast.SelectionSet, t *objType) ([]objField, int, bool) {
	collected := graphql.CollectFields(opCtx, sel, t.implementors)
	fields := make([]objField, 0, len(collected))
	count := 0
	for _, f := range collected {
		value, ok := t.fields[f.Name]
		if !ok || f.IsDeferred() {
			return nil, 0, false
		}
		field := objField{alias: f.Alias, value: value}
		count++
		if sub := t.objects[value]; sub != nil {
			var n int
			if field.sub, n, ok = planObject(opCtx, f.Selections, sub); !ok {
				return nil, 0, false
			}
			count += n
		}
		fields = append(fields, field)
	}
	return fields, count, true
}

// appendObject appends the object that fields select, every value a view of k.
func appendObject(b []byte, fields []objField, k *keystore.Key) []byte {
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
		case keyPool:
			b = appendString(b, k.Pool)
		case keyStatus:
			b = appendString(b, string(k.Status))
		case keyCreatedAt:
			b = wire.AppendTime(b, k.CreatedAt)
		case keyExpiresAt:
			b = wire.AppendTime(b, k.ExpiresAt)
		case keyLease:
			if k.Lease == nil {
				b = append(b, "null"...)
			} else {
				b = appendObject(b, f.sub, k)
			}
		case keyHistory, leaseKey:
			b = appendObject(b, f.sub, k)
		case keyTypename:
			b = append(b, `"Key"`...)
		case keyCoolingUntil:
			if k.CoolingUntil == nil {
				b = append(b, "null"...)
			} else {
				b = wire.AppendTime(b, *k.CoolingUntil)
			}
		case keyName:
			if k.Name == "" {
				b = append(b, "null"...)
			} else {
				b = appendString(b, k.Name)
			}
		case historyTimesAcquired:
			b = strconv.AppendInt(b, k.History.TimesAcquired, 10)
		case historyLeasesExpired:
			b = strconv.AppendInt(b, k.History.LeasesExpired, 10)
		case historyLastAcquiredAt:
			if k.History.LastAcquiredAt.IsZero() {
				b = append(b, "null"...)
			} else {
				b = wire.AppendTime(b, k.History.LastAcquiredAt)
			}
		case historyFailures:
			b = strconv.AppendInt(b, k.History.Failures, 10)
		case historyConsecutiveFailures:
			b = strconv.AppendInt(b, k.History.ConsecutiveFailures, 10)
		case historyTypename:
			b = append(b, `"KeyHistory"`...)
		case leaseToken:
			b = appendString(b, k.Lease.Token)
		case leaseFence:
			b = strconv.AppendInt(b, k.Lease.Fence, 10)
		case leaseAcquiredAt:
			b = wire.AppendTime(b, k.Lease.AcquiredAt)
		case leaseExpiresAt:
			b = wire.AppendTime(b, k.Lease.ExpiresAt)
		case leaseTypename:
			b = append(b, `"Lease"`...)
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

// appendMarshaled appends what a gqlgen marshaler writes.
func appendMarshaled(b []byte, m graphql.Marshaler) []byte {
	w := bytes.NewBuffer(b)
	m.MarshalGQL(w)
	return w.Bytes()
}
