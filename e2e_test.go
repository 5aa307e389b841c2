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

// The real-client tests (issues 12 and 22) drive a server started by startServer with
// the clients users run, from e2e/node/clients.mjs: the graphql-ws client library,
// Apollo Client's HttpLink and GraphQLWsLink, graphql-http's audit of the
// GraphQL-over-HTTP spec, urql, graphql-request, subscriptions-transport-ws (the legacy
// graphql-ws subprotocol) and graphql-sse. Their npm packages are pinned by
// e2e/node/package-lock.json and installed with `npm ci` on first use, or again when
// the lock file names packages that node_modules does not hold; they skip where node
// or npm is missing.

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
		if installed(clientsDir) {
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

// installed reports whether dir's node_modules holds what its package-lock.json pins:
// npm's record of the tree it installed (node_modules/.package-lock.json) names every
// package of the lock file at its version. A tree installed from an older lock file
// does not, and is installed anew.
func installed(dir string) bool {
	type lock struct {
		Packages map[string]struct {
			Version string `json:"version"`
		} `json:"packages"`
	}
	read := func(path string) (lock, bool) {
		var l lock
		b, err := os.ReadFile(path)
		return l, err == nil && json.Unmarshal(b, &l) == nil
	}
	want, ok := read(filepath.Join(dir, "package-lock.json"))
	if !ok {
		return false
	}
	have, ok := read(filepath.Join(dir, "node_modules", ".package-lock.json"))
	if !ok {
		return false
	}
	for path, p := range want.Packages {
		if path == "" {
			continue // the project itself
		}
		if h, ok := have.Packages[path]; !ok || h.Version != p.Version {
			return false
		}
	}
	return true
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

// TestE2EUrql: @urql/core with its fetchExchange (queries over GET, mutations over
// POST, coded errors) and subscriptionExchange forwarding subscriptions to a graphql-ws
// client: GENERATED events with seqs 1, 2, 3, and the lazy socket closed at the end.
func TestE2EUrql(t *testing.T) {
	runClients(t, startServer(t), "urql")
}

// TestE2EGraphQLRequest: graphql-request's GraphQLClient: queries over GET, mutations
// with variables, and errors as ClientError carrying extensions.code (NOT_FOUND on an
// empty pool with data.acquireKey null, LEASE_MISMATCH, NOT_BLOCKED, BAD_USER_INPUT,
// and a validation error's 400).
func TestE2EGraphQLRequest(t *testing.T) {
	runClients(t, startServer(t), "graphql-request")
}

// TestE2ESubscriptionsTransportWs: subscriptions-transport-ws's SubscriptionClient on
// the legacy graphql-ws subprotocol: events in seq order, operations refused before
// they run answered by one error and nothing after it while the live subscription on
// the same socket keeps delivering, a query's data then complete, stop honoured, and
// connection_terminate closing the socket.
func TestE2ESubscriptionsTransportWs(t *testing.T) {
	runClients(t, startServer(t), "subscriptions-transport-ws")
}

// TestE2EGraphQLSSE: graphql-sse's client in distinct connections mode: a live
// subscription's events in seq order, a mutation and a query each a stream of next
// then complete, errors with their codes, and a disposed subscription completed
// cleanly and let go by the server.
func TestE2EGraphQLSSE(t *testing.T) {
	runClients(t, startServer(t), "graphql-sse")
}
