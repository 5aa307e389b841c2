package client_test

import (
	"context"
	"net/http"
	"net/http/httptest"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/keypool/keypool/client"
)

// TestWithToken: the token goes with every request, queries and WebSocket handshakes
// alike, also through a caller's own HTTP client, which is left as it was.
func TestWithToken(t *testing.T) {
	var mu sync.Mutex
	var seen []string
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		seen = append(seen, r.Header.Get("Authorization"))
		mu.Unlock()
		w.Header().Set("WWW-Authenticate", "Bearer")
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(http.StatusUnauthorized)
		_, _ = w.Write([]byte(`{"errors":[{"message":"a token is needed","extensions":{"code":"UNAUTHENTICATED"}}]}`))
	}))
	defer srv.Close()

	own := &http.Client{}
	c, err := client.New(srv.URL, client.WithHTTPClient(own), client.WithToken("s3cret"))
	require.NoError(t, err)
	defer c.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	_, err = c.Stats(ctx)
	require.Error(t, err)
	_, err = c.Subscribe(ctx, client.SubscribeOptions{})
	require.Error(t, err)

	mu.Lock()
	defer mu.Unlock()
	require.Len(t, seen, 2)
	for _, got := range seen {
		assert.Equal(t, "Bearer s3cret", got)
	}
	assert.Nil(t, own.Transport, "the caller's client is not changed")
}
