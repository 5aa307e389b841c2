package main

import (
	"bytes"
	"context"
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

// The real-client tests (issue 12) drive a server started by startServer with the
// clients users run, from e2e/node/clients.mjs: the graphql-ws client library,
// Apollo Client's HttpLink and GraphQLWsLink, and graphql-http's audit of the
// GraphQL-over-HTTP spec. Their npm packages are pinned by e2e/node/package-lock.json
// and installed with `npm ci` on first use; they skip where node or npm is missing.

// clientsDir holds the Node script and its packages.
var clientsDir = filepath.Join("e2e", "node")

var (
	npmOnce sync.Once
	npmErr  error
	npmOut  []byte
)

// nodeClients returns the node binary, with the script's packages installed.
func nodeClients(t *testing.T) string {
	t.Helper()
	node, err := exec.LookPath("node")
	if err != nil {
		t.Skip("node is not installed (apt-get install nodejs npm; .ci/run installs them): skipping the real-client tests")
	}
	npm, err := exec.LookPath("npm")
	if err != nil {
		t.Skip("npm is not installed (apt-get install npm; .ci/run installs it): skipping the real-client tests")
	}
	npmOnce.Do(func() {
		if _, err := os.Stat(filepath.Join(clientsDir, "node_modules", ".package-lock.json")); err == nil {
			return
		}
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
		defer cancel()
		cmd := exec.CommandContext(ctx, npm, "ci", "--no-audit", "--no-fund")
		cmd.Dir = clientsDir
		npmOut, npmErr = cmd.CombinedOutput()
	})
	require.NoError(t, npmErr, "npm ci in %s:\n%s", clientsDir, npmOut)
	return node
}

// runClients runs one scenario of clients.mjs against s and returns its summary.
func runClients(t *testing.T, s *server, scenario string) map[string]any {
	t.Helper()
	node := nodeClients(t)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, node, filepath.Join(clientsDir, "clients.mjs"), scenario, s.url+"/graphql")
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	err := cmd.Run()
	lines := bytes.Split(bytes.TrimSpace(out.Bytes()), []byte("\n"))
	var summary map[string]any
	_ = json.Unmarshal(lines[len(lines)-1], &summary)
	require.NoError(t, err, "%s:\n%s", scenario, out.String())
	require.Equal(t, scenario, summary["ok"], "%s", out.String())
	t.Logf("%s: %s", scenario, lines[len(lines)-1])
	return summary
}

// TestE2EGraphQLWsClient: the graphql-ws client, lazy, on one socket: operations
// refused before they run (parse, validation, variables, complexity) end with their
// error alone, a live subscription on the same socket keeps delivering, and once the
// last operation ends the client closes its socket.
func TestE2EGraphQLWsClient(t *testing.T) {
	runClients(t, startServer(t), "graphql-ws")
}

// TestE2EApolloClient: Apollo Client 4 with HttpLink for queries and mutations and
// GraphQLWsLink for subscriptions: coded errors over HTTP, a refused subscription
// beside a live one, and the lazy socket closed at the end.
func TestE2EApolloClient(t *testing.T) {
	runClients(t, startServer(t), "apollo")
}

// TestE2EGraphQLHTTPAudit: graphql-http's serverAudits report no MUST and no SHOULD
// failure (MAY notices, if any, are logged).
func TestE2EGraphQLHTTPAudit(t *testing.T) {
	runClients(t, startServer(t), "audit")
}
