package main

import (
	"context"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/jonboulle/clockwork"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/keypool/keypool/auth"
	"github.com/keypool/keypool/graph"
	"github.com/keypool/keypool/keystore"
	"github.com/keypool/keypool/middleware"
)

// TestToken: keypoolctl token makes a token and its line for the auth file; a server
// with that file takes the token from KEYPOOL_TOKEN or -token-file, refuses a request
// without it, and lease does not pass it on to its command.
func TestToken(t *testing.T) {
	made := ctlIn(t, "", "token", "ci", "client")
	require.Equal(t, 0, made.code, made.stderr)
	lines := strings.Split(strings.TrimSuffix(made.stdout, "\n"), "\n")
	require.Len(t, lines, 2, made.stdout)
	token, line := lines[0], lines[1]
	assert.Equal(t, "ci client "+auth.Digest(token), line)
	assert.GreaterOrEqual(t, len(token), 40, "a long random token")
	again := ctlIn(t, "", "token", "ci", "client", "build,deploy")
	assert.True(t, strings.HasSuffix(strings.TrimSpace(again.stdout), " build,deploy"), again.stdout)
	assert.NotContains(t, again.stdout, token, "a new token each time")
	for args, want := range map[[2]string]string{{"ci", "root"}: "admin, client or viewer", {"two words", "client"}: "one word"} {
		r := ctlIn(t, "", "token", args[0], args[1])
		assert.Equal(t, exitUsage, r.code)
		assert.Empty(t, r.stdout)
		assert.Contains(t, r.stderr, want)
	}

	dir := t.TempDir()
	authFile, tokenFile := filepath.Join(dir, "tokens"), filepath.Join(dir, "token")
	require.NoError(t, os.WriteFile(authFile, []byte(line+"\n"), 0o600))
	require.NoError(t, os.WriteFile(tokenFile, []byte(token+"\n"), 0o600))
	guard, err := auth.NewGuard(authFile, nil)
	require.NoError(t, err)
	store, err := keystore.NewMemory(clockwork.NewRealClock(), keystore.Options{})
	require.NoError(t, err)
	defer store.Close()
	_, err = store.Generate(context.Background(), "", 1)
	require.NoError(t, err)
	h := graph.NewServer(auth.Store(store), graph.ServerOptions{Logger: slog.New(slog.DiscardHandler), WebsocketInit: guard.WebsocketInit})
	srv := httptest.NewServer(guard.Handler(func(*http.Request) bool { return false }, middleware.GraphQLError, h))
	defer srv.Close()

	ctlIn(t, srv.URL, "stats").failed(t, exitError, "UNAUTHENTICATED")
	var stats struct{ Total int }
	ctlIn(t, srv.URL, "-token-file", tokenFile, "stats").decode(t, &stats)
	assert.Equal(t, 1, stats.Total)
	ctlIn(t, srv.URL, "-token-file", filepath.Join(dir, "none"), "stats").failed(t, exitUsage, "-token-file")

	cmd := keypoolctl(srv.URL, "lease", "--", "sh", "-c", `echo "token=${KEYPOOL_TOKEN:-none} holder-key=${KEYPOOL_KEY_ID:+yes}"`)
	cmd.Env = append(cmd.Env, "KEYPOOL_TOKEN="+token)
	out, err := cmd.CombinedOutput()
	var exitErr *exec.ExitError
	require.False(t, err != nil && !asExitError(err, &exitErr), "%v", err)
	assert.Equal(t, "token=none holder-key=yes\n", string(out), "the command gets the lease, not keypoolctl's token")
}
