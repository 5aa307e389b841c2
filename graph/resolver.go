// Package graph is keypool's GraphQL API, a gqlgen adapter: gqlgen's generated
// executor (generated.go) with thin resolvers that translate between GraphQL and the
// keystore, and the extensions every operation passes through on every transport
// (the document limits, the complexity limit, caches bounded in bytes, the one place
// where errors become extensions.code). Its transports are gqlgen's POST and GET with
// what they answer wrongly mended (http.go), a websocket protocol state machine on
// coder/websocket (websocket.go) and GraphQL over SSE (sse.go); keyEvents is
// delivered through the fan-out (package fanout), each event encoded once per
// distinct selection. generateKeys' list of up to -max-generate keys is marshalled by
// a writer of its own (keylist.go), since gqlgen's costs some kilobytes a key.
package graph

import (
	"math"

	"github.com/keypool/keypool/graph/fanout"
	"github.com/keypool/keypool/graph/model"
	"github.com/keypool/keypool/keystore"
)

// Resolver is the root resolver. It holds the store every request goes to, and the
// plans that encode keyEvents for the fan-out.
type Resolver struct {
	Store keystore.Store
	Plans *fanout.Plans
}

// orZero returns *p, or the zero value when p is nil: GraphQL's omitted arguments are
// the keystore's zero options.
func orZero[T any](p *T) T {
	var zero T
	if p == nil {
		return zero
	}
	return *p
}

// pageSize is keys' first: the schema's default when a client sends null, and one
// that an int cannot hold kept out of range, for the store to refuse.
func pageSize(first *int64) int {
	if first == nil {
		return keystore.DefaultListFirst
	}
	return int(max(min(*first, math.MaxInt32), -1))
}

// keyOrError adapts a Store method's (Key, error) to a resolver's (*Key, error).
func keyOrError(key keystore.Key, err error) (*model.Key, error) {
	if err != nil {
		return nil, err
	}
	return model.NewKey(key), nil
}

// pointersOrError adapts a Store method's ([]T, error) to a resolver's ([]*T, error).
func pointersOrError[T any](values []T, err error) ([]*T, error) {
	if err != nil {
		return nil, err
	}
	out := make([]*T, len(values))
	for i := range values {
		out[i] = &values[i]
	}
	return out, nil
}
