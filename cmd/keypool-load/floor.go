package main

import (
	"context"
	"errors"
	"net/http"
	"time"

	"github.com/99designs/gqlgen/graphql/handler"
	"github.com/99designs/gqlgen/graphql/handler/lru"
	"github.com/99designs/gqlgen/graphql/handler/transport"
	"github.com/vektah/gqlparser/v2/ast"

	"github.com/keypool/keypool/graph"
	"github.com/keypool/keypool/graph/model"
	"github.com/keypool/keypool/keystore"
)

// serveFloor is gqlgen's own floor: keypool's schema served by handler.New with POST
// and an LRU query cache, its acquireKey and unblockKey answered with constants. What
// keypool's GraphQL costs beyond it is keypool's.
func serveFloor(ctx context.Context, addr string) error {
	gql := handler.New(graph.NewExecutableSchema(graph.Config{Resolvers: floorResolver{}}))
	gql.AddTransport(transport.POST{})
	gql.SetQueryCache(lru.New[*ast.QueryDocument](1000))
	mux := http.NewServeMux()
	mux.Handle("/graphql", gql)
	mux.HandleFunc("/healthz", func(http.ResponseWriter, *http.Request) {})
	srv := &http.Server{Addr: addr, Handler: mux}
	go func() {
		<-ctx.Done()
		_ = srv.Close()
	}()
	if err := srv.ListenAndServe(); !errors.Is(err, http.ErrServerClosed) {
		return err
	}
	return nil
}

// floorKey is the key every floor answer names.
var floorKey = keystore.Key{
	ID: "floorFloorFloorFloor00", Status: keystore.Blocked,
	Lease: &keystore.Lease{KeyID: "floorFloorFloorFloor00", Token: "floorTokenFloorToken00", Fence: 1},
}

// floorResolver answers the two operations of the cycle; the rest of the schema is
// never asked for.
type floorResolver struct{ graph.ResolverRoot }

func (floorResolver) Mutation() graph.MutationResolver { return floorMutation{} }

type floorMutation struct{ graph.MutationResolver }

func (floorMutation) AcquireKey(context.Context, *time.Duration, *time.Duration) (*model.Lease, error) {
	return model.NewLease(floorKey), nil
}

func (floorMutation) UnblockKey(context.Context, string, *string) (*keystore.Key, error) {
	k := floorKey
	k.Status, k.Lease = keystore.Available, nil
	return &k, nil
}
