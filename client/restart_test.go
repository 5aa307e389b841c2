package client_test

import (
	"log/slog"
	"net/http"
	"net/http/httptest"
	"sync"
	"sync/atomic"
	"testing"

	"github.com/jonboulle/clockwork"
	"github.com/stretchr/testify/require"

	"github.com/keypool/keypool/client"
	"github.com/keypool/keypool/graph"
	"github.com/keypool/keypool/keystore"
)

// TestSubscribeAcrossRestart: an in-memory server restarts between events (its seqs
// start again at 1, in a new stream); the subscription, resuming after seq 5 of the
// old stream, is told the stream changed and delivers the new stream from its first
// event: no event of either server is dropped, and OnRestart hears of it once.
func TestSubscribeAcrossRestart(t *testing.T) {
	clock := clockwork.NewFakeClock()
	var current atomic.Pointer[http.Handler]
	start := func() keystore.Store {
		store, err := keystore.NewMemory(clock, keystore.Options{})
		require.NoError(t, err)
		t.Cleanup(func() { _ = store.Close() })
		h := graph.NewServer(store, graph.ServerOptions{Logger: slog.New(slog.DiscardHandler)})
		current.Store(&h)
		return store
	}
	first := start()
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		(*current.Load()).ServeHTTP(w, r)
	}))
	t.Cleanup(srv.Close)
	c, err := client.New(srv.URL)
	require.NoError(t, err)
	t.Cleanup(c.Close)

	var mu sync.Mutex
	var restarts []string
	ctx := testContext(t)
	s, err := c.Subscribe(ctx, client.SubscribeOptions{After: after(0), OnRestart: func(stream string) {
		mu.Lock()
		defer mu.Unlock()
		restarts = append(restarts, stream)
	}})
	require.NoError(t, err)
	defer s.Close()

	_, err = first.Generate(ctx, "", 5)
	require.NoError(t, err)
	var old string
	for seq := int64(1); seq <= 5; seq++ {
		ev := nextEvent(t, s)
		require.Equal(t, seq, ev.Seq)
		old = ev.Stream
	}

	second := start()                 // the restart: a new pool behind the same address
	require.NoError(t, first.Close()) // the old one's streams end
	_, err = second.Generate(ctx, "", 3)
	require.NoError(t, err)
	for seq := int64(1); seq <= 3; seq++ {
		ev := nextEvent(t, s)
		require.Equal(t, seq, ev.Seq, "an event of the new server was dropped")
		require.NotEqual(t, old, ev.Stream)
	}
	mu.Lock()
	defer mu.Unlock()
	require.Len(t, restarts, 1)
	require.NotEqual(t, old, restarts[0])
}
