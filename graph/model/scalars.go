// Package model holds the GraphQL-side types that the domain does not have: the Time and
// Duration scalars, and Key and Lease, whose lease carries the key it holds.
package model

import (
	"encoding/json"
	"io"
	"strconv"
	"time"

	"github.com/99designs/gqlgen/graphql"
	"github.com/keypool/keypool/keystore"
	"github.com/keypool/keypool/wire"
)

// MarshalTime writes the GraphQL Time scalar: t as RFC 3339 with fractional seconds, in UTC.
func MarshalTime(t time.Time) graphql.Marshaler {
	return graphql.WriterFunc(func(w io.Writer) {
		_, _ = w.Write(wire.AppendTime(make([]byte, 0, 40), t))
	})
}

// UnmarshalTime reads an RFC 3339 string.
func UnmarshalTime(v any) (time.Time, error) {
	s, ok := v.(string)
	if !ok {
		return time.Time{}, keystore.Errorf(keystore.EINVALID, "Time must be an RFC 3339 string, got %T", v)
	}
	return wire.ParseTime("Time", s)
}

// MarshalDuration writes the GraphQL Duration scalar: in Go syntax.
func MarshalDuration(d time.Duration) graphql.Marshaler {
	return graphql.WriterFunc(func(w io.Writer) {
		_, _ = io.WriteString(w, strconv.Quote(d.String()))
	})
}

// UnmarshalDuration parses a Go duration string with time.ParseDuration. Errors carry
// BAD_USER_INPUT.
func UnmarshalDuration(v any) (time.Duration, error) {
	s, ok := v.(string)
	if !ok {
		return 0, keystore.Errorf(keystore.EINVALID, "Duration must be a string in Go syntax such as \"90s\", got %T", v)
	}
	return wire.ParseDuration("Duration", s)
}

// MarshalBigInt writes the GraphQL BigInt scalar: n as a string of decimal digits.
func MarshalBigInt(n int64) graphql.Marshaler {
	return graphql.WriterFunc(func(w io.Writer) {
		_, _ = w.Write(strconv.AppendQuote(nil, strconv.FormatInt(n, 10)))
	})
}

// UnmarshalBigInt reads a BigInt: a string of decimal digits, exactly; a JSON number
// is taken too where it is an integer (a client that sends one gets what it sent).
func UnmarshalBigInt(v any) (int64, error) {
	var s string
	switch v := v.(type) {
	case string:
		s = v
	case json.Number:
		s = v.String()
	case int64:
		return v, nil
	case int:
		return int64(v), nil
	default:
		return 0, keystore.Errorf(keystore.EINVALID, "BigInt must be a string of decimal digits, got %T", v)
	}
	n, err := strconv.ParseInt(s, 10, 64)
	if err != nil {
		return 0, keystore.Errorf(keystore.EINVALID, "BigInt must be a 64-bit integer in decimal digits, got %.32q", s)
	}
	return n, nil
}

// Key is a key as GraphQL shows it: the domain's snapshot, with Key.lease.
type Key struct{ keystore.Key }

// NameOrNull is Key.name: null for a key without one.
func (k *Key) NameOrNull() *string { return nullIfEmpty(k.Name) }

// CurrentLease is Key.lease: the lease that holds the key, nil unless it is BLOCKED.
func (k *Key) CurrentLease() *Lease {
	if k.Lease == nil {
		return nil
	}
	return &Lease{Lease: k.Lease, Key: k}
}

// Lease is a lease with a snapshot of the key it holds, taken in the same atomic step,
// so that Lease.key needs no second read of the store.
type Lease struct {
	*keystore.Lease
	Key *Key
}

// HolderOrNull is Lease.holder: null when the Acquire named none.
func (l *Lease) HolderOrNull() *string { return nullIfEmpty(l.Holder) }

// SecretOrNull is Lease.secret: set in the holder's own answers only (acquireKey,
// renewLease), where the store put it.
func (l *Lease) SecretOrNull() *string { return nullIfEmpty(l.Secret) }

func nullIfEmpty(s string) *string {
	if s == "" {
		return nil
	}
	return &s
}

// KeyConnection is a page of keys as GraphQL shows it.
type KeyConnection struct {
	Nodes    []*Key
	PageInfo *PageInfo
}

// PageInfo is where a page of keys ends.
type PageInfo struct {
	EndCursor   *string
	HasNextPage bool
}

// NewKeyConnection returns page as GraphQL shows it.
func NewKeyConnection(page keystore.Page) *KeyConnection {
	c := &KeyConnection{Nodes: make([]*Key, len(page.Keys)), PageInfo: &PageInfo{EndCursor: nullIfEmpty(page.EndCursor), HasNextPage: page.HasNext}}
	for i := range page.Keys {
		c.Nodes[i] = NewKey(page.Keys[i])
	}
	return c
}

// NewKey returns k as GraphQL shows it.
func NewKey(k keystore.Key) *Key { return &Key{k} }

// NewLease returns the lease held on k, or nil if k is not under a lease.
func NewLease(k keystore.Key) *Lease { return NewKey(k).CurrentLease() }
