package main

import (
	"context"
	"errors"
	"io"
	"net/http"
	"os"
	"path/filepath"
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
	return serve(ctx, addr, mux)
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

func (floorMutation) AcquireKey(context.Context, *string, *time.Duration, *time.Duration, *string) (*model.Lease, error) {
	return model.NewLease(floorKey), nil
}

func (floorMutation) UnblockKey(context.Context, string, *string, *time.Duration, *bool) (*model.Key, error) {
	k := floorKey
	k.Status, k.Lease = keystore.Available, nil
	return model.NewKey(k), nil
}

// The answers that ServeMux's floor replays: a REST acquire's and unblock's, recorded
// from keypool at the start of the run.
const (
	acquireAnswer = "acquire.json"
	unblockAnswer = "unblock.json"
)

// serveMuxFloor is net/http's floor for REST: a ServeMux with the cycle's two routes of
// /v1, which read what keypool's read (the id in the path, the body) and answer the
// bytes keypool answered. What keypool's REST costs beyond it is keypool's.
func serveMuxFloor(ctx context.Context, addr, answers string) error {
	lease, err := os.ReadFile(filepath.Join(answers, acquireAnswer))
	if err != nil {
		return err
	}
	key, err := os.ReadFile(filepath.Join(answers, unblockAnswer))
	if err != nil {
		return err
	}
	json := []string{"application/json"}
	mux := http.NewServeMux()
	mux.HandleFunc("POST /v1/keys/acquire", func(w http.ResponseWriter, r *http.Request) {
		w.Header()["Content-Type"] = json
		_, _ = w.Write(lease)
	})
	mux.HandleFunc("POST /v1/keys/{id}/unblock", func(w http.ResponseWriter, r *http.Request) {
		_, _ = io.Copy(io.Discard, r.Body)
		if r.PathValue("id") == "" {
			http.NotFound(w, r)
			return
		}
		w.Header()["Content-Type"] = json
		_, _ = w.Write(key)
	})
	mux.HandleFunc("/healthz", func(http.ResponseWriter, *http.Request) {})
	return serve(ctx, addr, mux)
}

// serve serves h on addr until ctx ends.
func serve(ctx context.Context, addr string, h http.Handler) error {
	srv := &http.Server{Addr: addr, Handler: h}
	go func() {
		<-ctx.Done()
		_ = srv.Close()
	}()
	if err := srv.ListenAndServe(); !errors.Is(err, http.ErrServerClosed) {
		return err
	}
	return nil
}
