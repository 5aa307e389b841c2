package main

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"testing"

	"github.com/jonboulle/clockwork"

	"github.com/keypool/keypool/keystore"
	"github.com/keypool/keypool/metrics"
)

// BenchmarkHandlerCycle measures one acquire→unblock cycle through the whole handler
// (every middleware, the route, the store), in process and without a network, for
// REST and GraphQL: where a request's CPU goes, for a profile.
//
//	go test -run '^$' -bench 'HandlerCycle' -benchtime 20000x -cpuprofile cpu.out .
func BenchmarkHandlerCycle(b *testing.B) {
	cfg, err := parseConfig(nil, func(string) string { return "" }, io.Discard)
	if err != nil {
		b.Fatal(err)
	}
	store, err := keystore.NewMemory(clockwork.NewRealClock(), cfg.storeOptions())
	if err != nil {
		b.Fatal(err)
	}
	defer store.Close()
	if _, err := store.Generate(context.Background(), "", 1000); err != nil {
		b.Fatal(err)
	}
	h := newHandler(store, cfg, slog.New(slog.DiscardHandler), metrics.New())
	do := func(path, body string) []byte {
		req := httptest.NewRequest(http.MethodPost, path, bytes.NewBufferString(body))
		req.Header.Set("Content-Type", "application/json")
		rec := httptest.NewRecorder()
		h.ServeHTTP(rec, req)
		if rec.Code != http.StatusOK {
			b.Fatalf("%s: %d %s", path, rec.Code, rec.Body)
		}
		return rec.Body.Bytes()
	}
	b.Run("rest", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			var l struct {
				Token string
				Key   struct{ ID string }
			}
			_ = json.Unmarshal(do("/v1/keys/acquire", ""), &l)
			do("/v1/keys/"+l.Key.ID+"/unblock", `{"token":"`+l.Token+`"}`)
		}
	})
	b.Run("graphql", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			var r struct {
				Data struct {
					AcquireKey struct {
						Token string
						Key   struct{ ID string }
					}
				}
			}
			_ = json.Unmarshal(do("/graphql", `{"query":"mutation { acquireKey { token key { id } } }"}`), &r)
			l := r.Data.AcquireKey
			do("/graphql", `{"query":"mutation($id: ID!, $token: ID) { unblockKey(id: $id, token: $token) { id } }","variables":{"id":"`+l.Key.ID+`","token":"`+l.Token+`"}}`)
		}
	})
}
