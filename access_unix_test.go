//go:build unix

package main

import (
	"context"
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

	require.NoError(t, os.WriteFile(path, []byte("broken line\n"), 0o600))
	hangup(t)
	require.Eventually(t, func() bool { return strings.Contains(s.logs.String(), "not reread") }, 10*time.Second, 10*time.Millisecond)
	assert.Contains(t, s.logs.String(), "line 1", "the log says why")
	status, _, _ := s.send(t, "GET", "/v1/stats", viewer, "")
	assert.Equal(t, http.StatusOK, status, "a bad file keeps the tokens in force")

	fresh := "fresh-token-0c0c"
	require.NoError(t, os.WriteFile(path, []byte("fresh viewer "+auth.Digest(fresh)+"\n"), 0o600))
	hangup(t)
	require.Eventually(t, func() bool { return strings.Contains(s.logs.String(), "-auth-file reread") }, 10*time.Second, 10*time.Millisecond)
	status, _, _ = s.send(t, "GET", "/v1/stats", viewer, "")
	assert.Equal(t, http.StatusUnauthorized, status, "a removed token is refused")
	status, _, _ = s.send(t, "GET", "/v1/stats", fresh, "")
	assert.Equal(t, http.StatusOK, status, "a new token is taken")

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
