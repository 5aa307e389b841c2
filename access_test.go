package main

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/coder/websocket"
	"github.com/coder/websocket/wsjson"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"github.com/vektah/gqlparser/v2"
	"github.com/vektah/gqlparser/v2/ast"

	"github.com/keypool/keypool/auth"
	"github.com/keypool/keypool/rest"
)

// The tokens of the access-control tests, one of each role.
var testTokens = map[auth.Role]string{
	auth.Admin:  "admin-token-7f3c",
	auth.Client: "client-token-9a1e",
	auth.Viewer: "viewer-token-24bd",
}

var roleOrder = []auth.Role{auth.None, auth.Viewer, auth.Client, auth.Admin}

// writeAuthFile writes an auth file of testTokens (and extra lines) and returns its path.
func writeAuthFile(t *testing.T, extra ...string) string {
	t.Helper()
	var b strings.Builder
	b.WriteString("# name role sha256 [pools]\n")
	for _, role := range []auth.Role{auth.Admin, auth.Client, auth.Viewer} {
		b.WriteString(role.String() + "-app " + role.String() + " " + auth.Digest(testTokens[role]) + "\n")
	}
	for _, line := range extra {
		b.WriteString(line + "\n")
	}
	path := filepath.Join(t.TempDir(), "tokens")
	require.NoError(t, os.WriteFile(path, []byte(b.String()), 0o600))
	return path
}

// send makes one request with token (none if "") and returns its status, headers and body.
func (s *server) send(t *testing.T, method, path, token string, body string) (int, http.Header, []byte) {
	t.Helper()
	req, err := http.NewRequest(method, s.url+path, strings.NewReader(body))
	require.NoError(t, err)
	if body != "" {
		req.Header.Set("Content-Type", "application/json")
	}
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	res, err := http.DefaultClient.Do(req)
	require.NoError(t, err)
	defer res.Body.Close()
	data, err := io.ReadAll(res.Body)
	require.NoError(t, err)
	return res.StatusCode, res.Header, data
}

// graphqlOps is what the contract has each root field need, and an operation that runs
// it. TestAccessEveryOperation checks that the schema has no root field missing here.
var graphqlOps = map[string]struct {
	least    auth.Role
	document string
}{
	"key":          {auth.Viewer, `{ key(id: "nope") { id } }`},
	"keys":         {auth.Viewer, `{ keys { nodes { id } } }`},
	"stats":        {auth.Viewer, `{ stats { total } }`},
	"pools":        {auth.Viewer, `{ pools { name } }`},
	"history":      {auth.Viewer, `{ history { at } }`},
	"generateKeys": {auth.Admin, `mutation { generateKeys(count: 1, pool: "acl") { id } }`},
	"importKeys":   {auth.Admin, `mutation { importKeys(pool: "acl", keys: [{secret: "s"}]) { id } }`},
	"deleteKey":    {auth.Admin, `mutation { deleteKey(id: "nope") }`},
	"restoreKey":   {auth.Admin, `mutation { restoreKey(id: "nope") { id } }`},
	"acquireKey":   {auth.Client, `mutation { acquireKey(pool: "empty") { token } }`},
	"unblockKey":   {auth.Client, `mutation { unblockKey(id: "nope") { id } }`},
	"renewLease":   {auth.Client, `mutation { renewLease(id: "nope", token: "t") { token } }`},
	"keepAlive":    {auth.Client, `mutation { keepAlive(id: "nope") { id } }`},
	"keyEvents":    {auth.Viewer, `subscription { keyEvents { seq } }`},
}

// restOps is the same for the OpenAPI document's operations; open ones need no token.
var restOps = map[string]struct {
	least        auth.Role
	open         bool
	method, path string
	body         string
}{
	"listKeys":     {least: auth.Viewer, method: "GET", path: "/v1/keys"},
	"getKey":       {least: auth.Viewer, method: "GET", path: "/v1/keys/nope"},
	"getStats":     {least: auth.Viewer, method: "GET", path: "/v1/stats"},
	"listPools":    {least: auth.Viewer, method: "GET", path: "/v1/pools"},
	"getHistory":   {least: auth.Viewer, method: "GET", path: "/v1/history"},
	"generateKeys": {least: auth.Admin, method: "POST", path: "/v1/keys", body: `{"count":1,"pool":"acl"}`},
	"importKeys":   {least: auth.Admin, method: "POST", path: "/v1/keys/import", body: `{"pool":"acl","keys":[{"secret":"s"}]}`},
	"deleteKey":    {least: auth.Admin, method: "DELETE", path: "/v1/keys/nope"},
	"restoreKey":   {least: auth.Admin, method: "POST", path: "/v1/keys/nope/restore"},
	"acquireKey":   {least: auth.Client, method: "POST", path: "/v1/keys/acquire?pool=empty"},
	"unblockKey":   {least: auth.Client, method: "POST", path: "/v1/keys/nope/unblock", body: `{}`},
	"renewLease":   {least: auth.Client, method: "POST", path: "/v1/keys/nope/renew", body: `{"token":"t"}`},
	"keepAlive":    {least: auth.Client, method: "POST", path: "/v1/keys/nope/keepalive"},
	"getOpenAPI":   {open: true, method: "GET", path: "/v1/openapi.json"},
	"getDocs":      {open: true, method: "GET", path: "/v1/docs"},
	"healthz":      {open: true, method: "GET", path: "/healthz"},
	"readyz":       {open: true, method: "GET", path: "/readyz"},
}

// schemaRootFields reads every root field of schema.graphqls.
func schemaRootFields(t *testing.T) []string {
	t.Helper()
	src, err := os.ReadFile("schema.graphqls")
	require.NoError(t, err)
	schema, gerr := gqlparser.LoadSchema(&ast.Source{Name: "schema.graphqls", Input: string(src)})
	require.NoError(t, gerr)
	var fields []string
	for _, root := range []*ast.Definition{schema.Query, schema.Mutation, schema.Subscription} {
		for _, f := range root.Fields {
			if !strings.HasPrefix(f.Name, "__") {
				fields = append(fields, f.Name)
			}
		}
	}
	return fields
}

// openAPIOperations reads every operationId of rest/openapi.json.
func openAPIOperations(t *testing.T) []string {
	t.Helper()
	src, err := os.ReadFile("rest/openapi.json")
	require.NoError(t, err)
	var doc struct {
		Paths map[string]map[string]json.RawMessage `json:"paths"`
	}
	require.NoError(t, json.Unmarshal(src, &doc))
	var ids []string
	for _, entries := range doc.Paths {
		for method, raw := range entries {
			var op struct {
				OperationID string `json:"operationId"`
			}
			if method == "parameters" || json.Unmarshal(raw, &op) != nil || op.OperationID == "" {
				continue
			}
			ids = append(ids, op.OperationID)
		}
	}
	return ids
}

// TestAccessRulesCoverEveryOperation: every root field of the schema and every route
// of the REST API has a rule in auth's table, the one the contract gives; a new
// operation without one fails here.
func TestAccessRulesCoverEveryOperation(t *testing.T) {
	for _, field := range schemaRootFields(t) {
		want, ok := graphqlOps[field]
		if !assert.True(t, ok, "root field %s: no access case in graphqlOps", field) {
			continue
		}
		got, ok := auth.LeastRole(field)
		assert.True(t, ok, "root field %s has no rule in auth's table", field)
		assert.Equal(t, want.least, got, "root field %s", field)
	}
	ids := openAPIOperations(t)
	for _, id := range ids {
		_, ok := restOps[id]
		assert.True(t, ok, "OpenAPI operation %s: no access case in restOps", id)
	}
	for pattern, op := range rest.Operations {
		assert.Contains(t, ids, op.ID, "route %s is not in the OpenAPI document", pattern)
		if op.Name == "" {
			assert.True(t, restOps[op.ID].open, "route %s needs no token, but the contract has it need one", pattern)
			continue
		}
		got, ok := auth.LeastRole(op.Name)
		assert.True(t, ok, "route %s runs %s, which has no rule", pattern, op.Name)
		assert.Equal(t, restOps[op.ID].least, got, "route %s", pattern)
	}
}

// TestAccessEveryOperation runs every operation, GraphQL's and REST's, with no token
// and with each role's, and checks that exactly the roles the contract names get past
// access control, which refuses the others with 401 or 403.
func TestAccessEveryOperation(t *testing.T) {
	s := startServer(t, "-auth-file", writeAuthFile(t))
	for field, op := range graphqlOps {
		if strings.HasPrefix(op.document, "subscription") {
			continue // TestAccessWebsocket and TestAccessSSE
		}
		for _, role := range roleOrder {
			t.Run("graphql/"+field+"/"+role.String(), func(t *testing.T) {
				body, _ := json.Marshal(map[string]any{"query": op.document})
				status, header, data := s.send(t, "POST", "/graphql", testTokens[role], string(body))
				checkAccess(t, role, op.least, status, header, data)
			})
		}
	}
	for id, op := range restOps {
		for _, role := range roleOrder {
			t.Run("rest/"+id+"/"+role.String(), func(t *testing.T) {
				status, header, data := s.send(t, op.method, op.path, testTokens[role], op.body)
				if op.open {
					assert.NotContains(t, []int{401, 403}, status, "%s", data)
					return
				}
				checkAccess(t, role, op.least, status, header, data)
			})
		}
	}
}

// checkAccess checks one answer: 401 without a token, 403 FORBIDDEN below least, and
// past access control (any other answer) at or above it.
func checkAccess(t *testing.T, role, least auth.Role, status int, header http.Header, data []byte) {
	t.Helper()
	switch {
	case role == auth.None:
		assert.Equal(t, http.StatusUnauthorized, status, "%s", data)
		assert.Contains(t, header.Get("WWW-Authenticate"), "Bearer")
		assert.Contains(t, string(data), `"UNAUTHENTICATED"`)
	case role < least:
		assert.Equal(t, http.StatusForbidden, status, "%s", data)
		assert.Contains(t, string(data), `"FORBIDDEN"`)
	default:
		assert.NotContains(t, []int{401, 403}, status, "%s", data)
		assert.NotContains(t, string(data), `"FORBIDDEN"`)
		assert.NotContains(t, string(data), `"UNAUTHENTICATED"`)
	}
}

// TestAccessHiddenPaths: the ways into the executor other than a plain POST are held
// to the same rules: GET queries, persisted queries sent by hash alone, aliased and
// mixed operations (refused whole, nothing done), introspection, /metrics, the pages.
func TestAccessHiddenPaths(t *testing.T) {
	s := startServer(t, "-auth-file", writeAuthFile(t), "-log-level", "debug") // a log line per request
	viewer, client, admin := testTokens[auth.Viewer], testTokens[auth.Client], testTokens[auth.Admin]

	t.Run("GET query", func(t *testing.T) {
		status, header, _ := s.send(t, "GET", "/graphql?query=%7Bstats%7Btotal%7D%7D", "", "")
		assert.Equal(t, http.StatusUnauthorized, status)
		assert.Contains(t, header.Get("WWW-Authenticate"), "Bearer")
		status, _, data := s.send(t, "GET", "/graphql?query=%7Bstats%7Btotal%7D%7D", viewer, "")
		assert.Equal(t, http.StatusOK, status, "%s", data)
		assert.Contains(t, string(data), `"total":0`)
	})

	t.Run("persisted query", func(t *testing.T) {
		query := `mutation { generateKeys(count: 1, pool: "persisted") { id } }`
		hash := sha256Hex(query)
		ext := `"extensions":{"persistedQuery":{"version":1,"sha256Hash":"` + hash + `"}}`
		// The hash alone first: not found, whoever asks; then registered by the admin.
		status, _, data := s.send(t, "POST", "/graphql", "", `{`+ext+`}`)
		assert.Equal(t, http.StatusUnauthorized, status, "%s", data)
		_, _, data = s.send(t, "POST", "/graphql", viewer, `{`+ext+`}`)
		assert.Contains(t, string(data), "PERSISTED_QUERY_NOT_FOUND")
		q, _ := json.Marshal(query)
		status, _, data = s.send(t, "POST", "/graphql", admin, `{"query":`+string(q)+`,`+ext+`}`)
		require.Equal(t, http.StatusOK, status, "%s", data)
		// Now known by its hash, it is still the admin's only.
		status, _, data = s.send(t, "POST", "/graphql", client, `{`+ext+`}`)
		assert.Equal(t, http.StatusForbidden, status, "%s", data)
		assert.Contains(t, string(data), `"FORBIDDEN"`)
		status, _, data = s.send(t, "GET", "/graphql?extensions="+urlQueryEscape(`{"persistedQuery":{"version":1,"sha256Hash":"`+hash+`"}}`), viewer, "")
		assert.Contains(t, []int{http.StatusForbidden, http.StatusMethodNotAllowed}, status, "%s", data)
		assert.Equal(t, `{"total":1}`, statsOf(t, s, admin, "persisted"))
	})

	t.Run("aliased and mixed", func(t *testing.T) {
		for _, doc := range []string{
			`mutation { ok: acquireKey(pool: "mixed") { token } made: generateKeys(count: 2, pool: "mixed") { id } }`,
			`mutation { a: generateKeys(count: 1, pool: "mixed") { id } }`,
			`mutation { ...F } fragment F on Mutation { generateKeys(count: 1, pool: "mixed") { id } }`,
			`mutation { ... on Mutation { x: generateKeys(count: 1, pool: "mixed") { id } } }`,
		} {
			body, _ := json.Marshal(map[string]any{"query": doc})
			status, _, data := s.send(t, "POST", "/graphql", client, string(body))
			assert.Equal(t, http.StatusForbidden, status, "%s: %s", doc, data)
			assert.Contains(t, string(data), `"FORBIDDEN"`, doc)
			assert.NotContains(t, string(data), `"data"`, doc)
		}
		assert.Equal(t, `{"total":0}`, statsOf(t, s, admin, "mixed"), "a refused operation ran none of its fields")
		body, _ := json.Marshal(map[string]any{"query": `{ s: stats { total } __typename }`})
		status, _, data := s.send(t, "POST", "/graphql", viewer, string(body))
		assert.Equal(t, http.StatusOK, status, "%s", data)
	})

	t.Run("introspection", func(t *testing.T) {
		body, _ := json.Marshal(map[string]any{"query": `{ __schema { queryType { name } } __type(name: "Key") { name } }`})
		status, _, _ := s.send(t, "POST", "/graphql", "", string(body))
		assert.Equal(t, http.StatusUnauthorized, status)
		status, _, data := s.send(t, "POST", "/graphql", viewer, string(body))
		assert.Equal(t, http.StatusOK, status, "%s", data)
		assert.Contains(t, string(data), `"queryType":{"name":"Query"}`)
	})

	t.Run("metrics", func(t *testing.T) {
		status, header, _ := s.send(t, "GET", "/metrics", "", "")
		assert.Equal(t, http.StatusUnauthorized, status)
		assert.Contains(t, header.Get("WWW-Authenticate"), "Bearer")
		status, _, data := s.send(t, "GET", "/metrics", viewer, "")
		assert.Equal(t, http.StatusOK, status)
		assert.Regexp(t, `keypool_auth_failures_total [1-9]`, string(data))
	})

	t.Run("unknown token", func(t *testing.T) {
		status, header, data := s.send(t, "GET", "/v1/stats", "not-a-token", "")
		assert.Equal(t, http.StatusUnauthorized, status)
		assert.Contains(t, header.Get("WWW-Authenticate"), "Bearer")
		assert.Contains(t, string(data), `"UNAUTHENTICATED"`)
	})

	t.Run("open routes", func(t *testing.T) {
		for _, path := range []string{"/", "/dashboard", "/healthz", "/readyz", "/v1/openapi.json"} {
			status, _, _ := s.send(t, "GET", path, "", "")
			assert.Equal(t, http.StatusOK, status, path)
		}
		status, _, _ := s.send(t, "GET", "/nowhere", "", "")
		assert.Equal(t, http.StatusUnauthorized, status, "a route that is not open needs a token, even to be told it is not there")
	})

	assert.Contains(t, s.logs.String(), "/v1/stats", "the requests were logged")
	assert.NotContains(t, s.logs.String(), viewer, "no token in the log")
	assert.NotContains(t, s.logs.String(), auth.Digest(viewer), "no token's hash in the log")
}

func statsOf(t *testing.T, s *server, token, pool string) string {
	t.Helper()
	body, _ := json.Marshal(map[string]any{"query": `query($p: String) { stats(pool: $p) { total } }`, "variables": map[string]any{"p": pool}})
	status, _, data := s.send(t, "POST", "/graphql", token, string(body))
	require.Equal(t, http.StatusOK, status, "%s", data)
	var out struct {
		Data struct{ Stats json.RawMessage }
	}
	require.NoError(t, json.Unmarshal(data, &out))
	return string(out.Data.Stats)
}

// TestAccessWebsocket: a websocket's token comes in connection_init; without one, or
// with an unknown one, the socket is closed 4403; a viewer's mutation is refused with
// FORBIDDEN, and the socket goes on.
func TestAccessWebsocket(t *testing.T) {
	s := startServer(t, "-auth-file", writeAuthFile(t))
	dial := func(t *testing.T, protocol string, payload any) *websocket.Conn {
		conn, _, err := dialWebsocket(context.Background(), "ws"+strings.TrimPrefix(s.url, "http")+"/graphql",
			websocket.DialOptions{Subprotocols: []string{protocol}})
		require.NoError(t, err)
		t.Cleanup(func() { conn.CloseNow() })
		init := map[string]any{"type": "connection_init"}
		if payload != nil {
			init["payload"] = payload
		}
		require.NoError(t, wsjson.Write(context.Background(), conn, init))
		return conn
	}
	closedWith := func(t *testing.T, conn *websocket.Conn) websocket.StatusCode {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		for {
			var msg wsMessage
			if err := wsjson.Read(ctx, conn, &msg); err != nil {
				return websocket.CloseStatus(err)
			}
		}
	}
	for _, protocol := range []string{"graphql-transport-ws", "graphql-ws"} {
		t.Run(protocol+"/no token", func(t *testing.T) {
			assert.Equal(t, websocket.StatusCode(4403), closedWith(t, dial(t, protocol, nil)))
		})
		t.Run(protocol+"/unknown token", func(t *testing.T) {
			conn := dial(t, protocol, map[string]any{"Authorization": "Bearer nope"})
			assert.Equal(t, websocket.StatusCode(4403), closedWith(t, conn))
		})
	}
	t.Run("viewer", func(t *testing.T) {
		conn := dial(t, "graphql-transport-ws", map[string]any{"Authorization": "Bearer " + testTokens[auth.Viewer]})
		require.Equal(t, "connection_ack", readWS(t, conn).Type)
		require.NoError(t, wsjson.Write(context.Background(), conn, map[string]any{"id": "m", "type": "subscribe",
			"payload": map[string]any{"query": `mutation { generateKeys(count: 1, pool: "ws") { id } }`}}))
		msg := readWS(t, conn)
		assert.Equal(t, "error", msg.Type)
		assert.Contains(t, string(msg.Payload), `"FORBIDDEN"`)
		require.NoError(t, wsjson.Write(context.Background(), conn, map[string]any{"id": "s", "type": "subscribe",
			"payload": map[string]any{"query": `subscription { keyEvents(pool: "ws", after: 0) { type } }`}}))
		assert.Equal(t, `{"total":0}`, statsOf(t, s, testTokens[auth.Admin], "ws"))
		s.send(t, "POST", "/v1/keys", testTokens[auth.Admin], `{"pool":"ws"}`)
		msg = readWS(t, conn)
		assert.Equal(t, "next", msg.Type, "%s", msg.Payload)
		assert.Contains(t, string(msg.Payload), "GENERATED")
	})
}

// TestAccessSSE: a subscription over SSE needs a token, and a viewer's is served.
func TestAccessSSE(t *testing.T) {
	s := startServer(t, "-auth-file", writeAuthFile(t))
	open := func(token string) *http.Response {
		body, _ := json.Marshal(map[string]any{"query": `subscription { keyEvents(pool: "sse", after: 0) { type } }`})
		req, err := http.NewRequest("POST", s.url+"/graphql", bytes.NewReader(body))
		require.NoError(t, err)
		req.Header.Set("Content-Type", "application/json")
		req.Header.Set("Accept", "text/event-stream")
		if token != "" {
			req.Header.Set("Authorization", "Bearer "+token)
		}
		res, err := http.DefaultClient.Do(req)
		require.NoError(t, err)
		t.Cleanup(func() { res.Body.Close() })
		return res
	}
	assert.Equal(t, http.StatusUnauthorized, open("").StatusCode)
	res := open(testTokens[auth.Viewer])
	require.Equal(t, http.StatusOK, res.StatusCode)
	s.send(t, "POST", "/v1/keys", testTokens[auth.Admin], `{"pool":"sse"}`)
	buf := make([]byte, 0, 4096)
	for !bytes.Contains(buf, []byte("GENERATED")) {
		chunk := make([]byte, 1024)
		n, err := res.Body.Read(chunk)
		require.NoError(t, err, "%s", buf)
		buf = append(buf, chunk[:n]...)
	}
}

// TestAccessOffWarning: without an auth file, a server listening beyond loopback says
// so once at start; on loopback, or with an auth file, it does not.
func TestAccessOffWarning(t *testing.T) {
	loopback := startServer(t)
	assert.NotContains(t, loopback.logs.String(), "access control is off")
	wide := startServer(t, "-addr", ":0")
	assert.Equal(t, 1, strings.Count(wide.logs.String(), "access control is off"))
	guarded := startServer(t, "-addr", ":0", "-auth-file", writeAuthFile(t))
	assert.NotContains(t, guarded.logs.String(), "access control is off")
}

func sha256Hex(s string) string { return auth.Digest(s) }

func urlQueryEscape(s string) string {
	return strings.NewReplacer("{", "%7B", "}", "%7D", `"`, "%22", ":", "%3A", ",", "%2C").Replace(s)
}

// TestAccessHolders: with access control on, a lease's holder is the token's name, its
// token is shown to its holder and admins only, and only an admin may unblock or renew
// another name's lease; a token scoped to pools acts on those pools only.
func TestAccessHolders(t *testing.T) {
	other, scoped := "other-token-5e5e", "scoped-token-b0b0"
	s := startServer(t, "-auth-file", writeAuthFile(t,
		"other-app client "+auth.Digest(other), "scoped-app client "+auth.Digest(scoped)+" build,ci"))
	admin, client, viewer := testTokens[auth.Admin], testTokens[auth.Client], testTokens[auth.Viewer]
	gql := func(t *testing.T, token, query string, vars map[string]any) (int, string) {
		t.Helper()
		body, _ := json.Marshal(map[string]any{"query": query, "variables": vars})
		status, _, data := s.send(t, "POST", "/graphql", token, string(body))
		return status, string(data)
	}
	status, data := gql(t, admin, `mutation { a: generateKeys(count: 1) { id } b: generateKeys(count: 2, pool: "build") { id } }`, nil)
	require.Equal(t, http.StatusOK, status, data)

	t.Run("holder", func(t *testing.T) {
		_, data := gql(t, client, `mutation { acquireKey(holder: "someone-else") { token } }`, nil)
		assert.Contains(t, data, "BAD_USER_INPUT")
		_, data = gql(t, client, `mutation { acquireKey(holder: "client-app") { holder } }`, nil)
		assert.Contains(t, data, `"holder":"client-app"`, "naming itself is fine")
		_, data = gql(t, client, `mutation { unblockKey(id: "x") { id } }`, nil) // nothing to free: NOT_FOUND
		assert.Contains(t, data, "NOT_FOUND")
	})

	t.Run("leases of another name", func(t *testing.T) {
		code, _, body := s.send(t, "POST", "/v1/keys/acquire?pool=build", client, "")
		require.Equal(t, http.StatusOK, code, "%s", body)
		var lease struct {
			Token  string `json:"token"`
			Holder string `json:"holder"`
			Key    struct {
				ID string `json:"id"`
			} `json:"key"`
		}
		require.NoError(t, json.Unmarshal(body, &lease), "%s", body)
		require.Equal(t, "client-app", lease.Holder, "%s", body)
		require.NotEmpty(t, lease.Token)
		id, token := lease.Key.ID, lease.Token

		leaseToken := func(who string) string {
			_, data := gql(t, who, `query($id: ID!) { key(id: $id) { lease { token } } }`, map[string]any{"id": id})
			var out struct {
				Data struct {
					Key struct{ Lease struct{ Token string } }
				}
			}
			require.NoError(t, json.Unmarshal([]byte(data), &out), data)
			return out.Data.Key.Lease.Token
		}
		assert.Equal(t, token, leaseToken(client), "its holder sees the token")
		assert.Equal(t, token, leaseToken(admin), "an admin sees the token")
		assert.Empty(t, leaseToken(viewer), "a viewer does not")
		assert.Empty(t, leaseToken(other), "another client does not")
		code, _, body = s.send(t, "GET", "/v1/keys?pool=build", viewer, "")
		require.Equal(t, http.StatusOK, code)
		assert.NotContains(t, string(body), token, "nor in a list")

		code, _, body = s.send(t, "POST", "/v1/keys/"+id+"/renew", other, `{"token":"`+token+`"}`)
		assert.Equal(t, http.StatusForbidden, code, "%s", body)
		code, _, body = s.send(t, "POST", "/v1/keys/"+id+"/unblock", other, `{}`)
		assert.Equal(t, http.StatusForbidden, code, "%s", body)
		code, _, body = s.send(t, "POST", "/v1/keys/"+id+"/renew", client, `{"token":"`+token+`"}`)
		assert.Equal(t, http.StatusOK, code, "%s", body)
		code, _, body = s.send(t, "POST", "/v1/keys/"+id+"/unblock", admin, `{}`)
		assert.Equal(t, http.StatusOK, code, "an admin may: %s", body)
	})

	t.Run("scoped to pools", func(t *testing.T) {
		_, data := gql(t, scoped, `mutation { acquireKey { token } }`, nil)
		assert.Contains(t, data, `"FORBIDDEN"`, "the default pool is not the token's")
		_, data = gql(t, scoped, `mutation { acquireKey(pool: "build") { holder } }`, nil)
		assert.Contains(t, data, `"holder":"scoped-app"`)
		_, data = gql(t, scoped, `{ stats { total } }`, nil)
		assert.Contains(t, data, `"FORBIDDEN"`, "every pool at once is not the token's")
		_, data = gql(t, scoped, `{ stats(pool: "build") { total } }`, nil)
		assert.Contains(t, data, `"total":2`)
		_, data = gql(t, scoped, `{ pools { name } }`, nil)
		assert.Contains(t, data, `"build"`)
		assert.NotContains(t, data, `"default"`, "only its pools are listed")
		code, _, body := s.send(t, "GET", "/v1/keys?pool=default", scoped, "")
		assert.Equal(t, http.StatusForbidden, code, "%s", body)
		code, _, body = s.send(t, "GET", "/v1/keys", admin, "")
		require.Equal(t, http.StatusOK, code)
		var page struct {
			Keys []struct{ ID, Pool string } `json:"keys"`
		}
		require.NoError(t, json.Unmarshal(body, &page), "%s", body)
		for _, k := range page.Keys {
			code, _, _ := s.send(t, "GET", "/v1/keys/"+k.ID, scoped, "")
			if k.Pool == "build" {
				assert.Equal(t, http.StatusOK, code)
			} else {
				assert.Equal(t, http.StatusForbidden, code)
			}
		}
	})
}

// TestAccessFileAtStart: -auth-file (or KEYPOOL_AUTH_FILE) that does not read stops the
// server at start with an error naming the flag and the line, never a hash.
func TestAccessFileAtStart(t *testing.T) {
	cfg, err := parseConfig(nil, func(k string) string { return map[string]string{"KEYPOOL_AUTH_FILE": "/etc/tokens"}[k] }, io.Discard)
	require.NoError(t, err)
	assert.Equal(t, "/etc/tokens", cfg.AuthFile)

	bad := filepath.Join(t.TempDir(), "tokens")
	hash := auth.Digest("x")
	require.NoError(t, os.WriteFile(bad, []byte("ops admin "+hash+"\nci boss "+hash+"\n"), 0o600))
	for _, path := range []string{bad, filepath.Join(t.TempDir(), "missing")} {
		err := run(context.Background(), []string{"keypool", "-addr", "127.0.0.1:0", "-auth-file", path},
			func(string) string { return "" }, io.Discard, io.Discard, nil)
		require.Error(t, err)
		assert.Contains(t, err.Error(), "-auth-file")
		assert.NotContains(t, err.Error(), hash)
	}
	err = run(context.Background(), []string{"keypool", "-addr", "127.0.0.1:0", "-auth-file", bad},
		func(string) string { return "" }, io.Discard, io.Discard, nil)
	assert.Contains(t, err.Error(), "line 2 (ci)")
}
