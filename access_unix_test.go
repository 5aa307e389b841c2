//go:build unix

package main

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"net/http"
	"os"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/coder/websocket"
	"github.com/coder/websocket/wsjson"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/keypool/keypool/auth"
)

// TestAccessReload: SIGHUP's reread (Guard.Reload here) takes new tokens, drops removed
// ones and closes their streams; a bad file keeps the tokens in force.
func TestAccessReload(t *testing.T) {
	path := writeAuthFile(t)
	s := startServer(t, "-auth-file", path)
	viewer := testTokens[auth.Viewer]

	conn, _, err := dialWebsocket(context.Background(), "ws"+strings.TrimPrefix(s.url, "http")+"/graphql",
		websocket.DialOptions{Subprotocols: []string{"graphql-transport-ws"}})
	require.NoError(t, err)
	defer conn.CloseNow()
	require.NoError(t, wsjson.Write(context.Background(), conn, map[string]any{"type": "connection_init",
		"payload": map[string]any{"Authorization": "Bearer " + viewer}}))
	require.Equal(t, "connection_ack", readWS(t, conn).Type)

	sseBody, _ := json.Marshal(map[string]any{"query": `subscription { keyEvents { type } }`})
	req, err := http.NewRequest("POST", s.url+"/graphql", bytes.NewReader(sseBody))
	require.NoError(t, err)
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("Accept", "text/event-stream")
	req.Header.Set("Authorization", "Bearer "+viewer)
	sse, err := http.DefaultClient.Do(req)
	require.NoError(t, err)
	defer sse.Body.Close()
	require.Equal(t, http.StatusOK, sse.StatusCode)
	sseEnded := make(chan error, 1)
	go func() {
		_, err := io.Copy(io.Discard, sse.Body)
		sseEnded <- err
	}()

	require.NoError(t, os.WriteFile(path, []byte("broken line\n"), 0o600))
	hangup(t)
	require.Eventually(t, func() bool { return strings.Contains(s.logs.String(), "not reread") }, 10*time.Second, 10*time.Millisecond)
	assert.Contains(t, s.logs.String(), "line 1", "the log says why")
	status, _, _ := s.send(t, "GET", "/v1/stats", viewer, "")
	assert.Equal(t, http.StatusOK, status, "a bad file keeps the tokens in force")
	select {
	case <-sseEnded:
		t.Error("a bad file ended a kept token's stream")
	default:
	}

	fresh := "fresh-token-0c0c"
	require.NoError(t, os.WriteFile(path, []byte("fresh viewer "+auth.Digest(fresh)+"\n"), 0o600))
	hangup(t)
	require.Eventually(t, func() bool { return strings.Contains(s.logs.String(), "-auth-file reread") }, 10*time.Second, 10*time.Millisecond)
	status, _, _ = s.send(t, "GET", "/v1/stats", viewer, "")
	assert.Equal(t, http.StatusUnauthorized, status, "a removed token is refused")
	status, _, _ = s.send(t, "GET", "/v1/stats", fresh, "")
	assert.Equal(t, http.StatusOK, status, "a new token is taken")

	select {
	case err := <-sseEnded:
		assert.NoError(t, err, "the SSE stream of the removed token ended cleanly")
	case <-time.After(10 * time.Second):
		t.Error("the SSE stream of the removed token goes on")
	}

	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	for {
		var msg wsMessage
		if err := wsjson.Read(ctx, conn, &msg); err != nil {
			assert.Equal(t, websocket.StatusCode(4403), websocket.CloseStatus(err), "%v", err)
			break
		}
	}
}

// hangup sends this process SIGHUP, as an operator does to the server (whose run
// listens for it while the test's server runs).
func hangup(t *testing.T) {
	t.Helper()
	require.NoError(t, syscall.Kill(os.Getpid(), syscall.SIGHUP))
}
