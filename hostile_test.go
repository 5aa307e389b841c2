package main

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/coder/websocket"
	"github.com/coder/websocket/wsjson"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/keypool/keypool/rest/resttest"
)

// The hostile-input suite (issue 5): what a careless or malicious client may send, to
// the running server. Every case must be refused with a 4xx or a coded GraphQL error
// (or, on a websocket, a clean close): never a 5xx, a hang or a crash. After every
// case the pool is exactly as before and a fresh client is still served.

// hostileTimeout bounds every request of the suite: a hang is a failure.
const hostileTimeout = 15 * time.Second

// refusalCodes are the extensions.code / REST error codes a refusal may carry: the
// contract's, METHOD_NOT_ALLOWED, the edge's FORBIDDEN and UNSUPPORTED_MEDIA_TYPE, and
// /graphql's refusals of what is not a GraphQL request (README's Errors table). Never
// INTERNAL_SERVER_ERROR.
var refusalCodes = map[string]bool{
	"NOT_FOUND": true, "NOT_BLOCKED": true, "LEASE_MISMATCH": true, "BAD_USER_INPUT": true,
	"GRAPHQL_PARSE_FAILED": true, "GRAPHQL_VALIDATION_FAILED": true, "COMPLEXITY_LIMIT_EXCEEDED": true,
	"PERSISTED_QUERY_NOT_FOUND": true, "METHOD_NOT_ALLOWED": true, "UNSUPPORTED_MEDIA_TYPE": true,
	"BAD_REQUEST": true, "REQUEST_TOO_LARGE": true, "FORBIDDEN": true, "OPERATION_LIMIT_EXCEEDED": true,
}

// hostile is a running server whose pool holds three leased keys, one of them known.
type hostile struct {
	*server
	client     *http.Client
	known      string // a BLOCKED key whose state must never change
	knownToken string
}

func startHostile(t *testing.T) *hostile {
	t.Helper()
	// Leases outlive the suite, so that the pool changes only by what the cases do.
	s := startServer(t, "-lease-ttl", "1h", "-max-lease-ttl", "2h")
	h := &hostile{
		server: s,
		client: &http.Client{
			Timeout:       hostileTimeout,
			Transport:     resttest.Transport(&http.Transport{}), // REST answers must match the OpenAPI document
			CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
		},
	}
	t.Cleanup(h.client.CloseIdleConnections)
	s.mustPost(t, `mutation { generateKeys(count: 3) { id } }`, nil, nil)
	for i := range 3 {
		var lease struct {
			AcquireKey struct {
				Token string
				Key   struct{ ID string }
			}
		}
		s.mustPost(t, `mutation { acquireKey { token key { id } } }`, nil, &lease)
		if i == 0 {
			h.known, h.knownToken = lease.AcquireKey.Key.ID, lease.AcquireKey.Token
		}
	}
	return h
}

// snapshot is what must not change: the pool's stats and the known key, as REST shows
// them (history included).
type snapshot struct{ stats, known string }

func (h *hostile) snapshot(t *testing.T) snapshot {
	t.Helper()
	status, stats := h.fetch(t, mustRequest(t, "GET", h.url+"/v1/stats", nil))
	require.Equal(t, http.StatusOK, status)
	status, known := h.fetch(t, mustRequest(t, "GET", h.url+"/v1/keys/"+h.known, nil))
	require.Equal(t, http.StatusOK, status)
	return snapshot{string(stats), string(known)}
}

// fetch sends req with the suite's timeout and returns the status and body.
func (h *hostile) fetch(t *testing.T, req *http.Request) (int, []byte) {
	t.Helper()
	res, err := h.client.Do(req)
	require.NoError(t, err, "%s %.80s: no answer", req.Method, req.URL)
	defer res.Body.Close()
	body, err := io.ReadAll(res.Body)
	require.NoError(t, err)
	return res.StatusCode, body
}

// checkAfter asserts that the pool is as it was and that a fresh client is served: a
// new key is generated and, being the only AVAILABLE one, acquired, then deleted.
func (h *hostile) checkAfter(t *testing.T, before snapshot) {
	t.Helper()
	require.Equal(t, before, h.snapshot(t), "the pool changed")
	var gen struct{ GenerateKeys []struct{ ID string } }
	h.mustPost(t, `mutation { generateKeys(count: 1) { id } }`, nil, &gen)
	require.Len(t, gen.GenerateKeys, 1)
	var lease struct {
		AcquireKey struct{ Key struct{ ID string } }
	}
	h.mustPost(t, `mutation { acquireKey { key { id } } }`, nil, &lease)
	require.Equal(t, gen.GenerateKeys[0].ID, lease.AcquireKey.Key.ID)
	h.mustPost(t, `mutation($id: ID!) { deleteKey(id: $id) }`, map[string]any{"id": gen.GenerateKeys[0].ID}, nil)
	require.Equal(t, before, h.snapshot(t))
}

func mustRequest(t *testing.T, method, target string, body io.Reader) *http.Request {
	t.Helper()
	req, err := http.NewRequest(method, target, body)
	require.NoError(t, err)
	return req
}

// assertRefused checks an answer to hostile input: a 4xx (whose JSON errors, if any,
// carry refusal codes), or a GraphQL response whose every error carries a refusal code.
func assertRefused(t *testing.T, status int, body []byte) {
	t.Helper()
	require.Less(t, status, 500, "never a 5xx: %.300s", body)
	var gql struct {
		Errors []struct {
			Message    string
			Extensions map[string]any
		}
	}
	var rest struct {
		Error *struct{ Code, Message string }
	}
	isJSON := json.Unmarshal(body, &gql) == nil
	_ = json.Unmarshal(body, &rest)
	if status >= 400 {
		if rest.Error != nil {
			assert.True(t, refusalCodes[rest.Error.Code], "REST error code %q: %s", rest.Error.Code, body)
		}
		for _, e := range gql.Errors {
			if code, ok := e.Extensions["code"]; ok {
				assert.True(t, refusalCodes[fmt.Sprint(code)], "code %v: %s", code, body)
			}
		}
		return
	}
	require.True(t, isJSON, "status %d without a JSON body: %.300s", status, body)
	require.NotEmpty(t, gql.Errors, "status %d, hostile input was accepted: %.300s", status, body)
	for _, e := range gql.Errors {
		assert.True(t, refusalCodes[fmt.Sprint(e.Extensions["code"])], "error without a refusal code: %s", body)
	}
}

// httpCase is one hostile HTTP request. status, if set, is the exact answer expected.
type httpCase struct {
	name   string
	req    func(t *testing.T, h *hostile) *http.Request
	status int
	// answers: the request is legal and cheap, and may be answered with data (bounded).
	answers bool
}

func gqlPost(contentType string, body []byte) func(*testing.T, *hostile) *http.Request {
	return func(t *testing.T, h *hostile) *http.Request {
		req := mustRequest(t, "POST", h.url+"/graphql", bytes.NewReader(body))
		if contentType != "" {
			req.Header.Set("Content-Type", contentType)
		}
		return req
	}
}

func gqlJSON(query string, vars any) func(*testing.T, *hostile) *http.Request {
	body, err := json.Marshal(map[string]any{"query": query, "variables": vars})
	if err != nil {
		panic(err)
	}
	return gqlPost("application/json", body)
}

// gqlRawVars posts query with a variables object written by hand (raw bytes allowed).
func gqlRawVars(query string, vars string) func(*testing.T, *hostile) *http.Request {
	q, _ := json.Marshal(query)
	return gqlPost("application/json", []byte(`{"query":`+string(q)+`,"variables":`+vars+`}`))
}

func gqlGet(rawQuery string) func(*testing.T, *hostile) *http.Request {
	return func(t *testing.T, h *hostile) *http.Request {
		return mustRequest(t, "GET", h.url+"/graphql?"+rawQuery, nil)
	}
}

func restReq(method, path, contentType string, body []byte) func(*testing.T, *hostile) *http.Request {
	return func(t *testing.T, h *hostile) *http.Request {
		req := mustRequest(t, method, h.url+strings.ReplaceAll(path, "KNOWN", h.known), bytes.NewReader(body))
		if contentType != "" {
			req.Header.Set("Content-Type", contentType)
		}
		return req
	}
}

// chunked turns a request's body into one of unknown length, sent chunked.
func chunked(mk func(*testing.T, *hostile) *http.Request) func(*testing.T, *hostile) *http.Request {
	return func(t *testing.T, h *hostile) *http.Request {
		req := mk(t, h)
		req.Body = io.NopCloser(io.MultiReader(req.Body))
		req.ContentLength = -1
		req.GetBody = nil
		return req
	}
}

// huge is an 8 MiB body that starts as valid JSON for the route.
func huge(prefix string) []byte {
	b := append([]byte(prefix), bytes.Repeat([]byte("x"), 8<<20)...)
	return append(b, `"}`...)
}

func aliasFlood(n int, field string) string {
	var b strings.Builder
	b.WriteString("{")
	for i := range n {
		b.WriteString(" a" + strconv.Itoa(i) + ": " + field)
	}
	b.WriteString(" }")
	return b.String()
}

// deepOfType nests ofType depth times under a field of a type.
func deepIntrospection(depth int, step string) string {
	inner := "name"
	for range depth {
		inner = fmt.Sprintf(step, inner)
	}
	return inner
}

var (
	longID    = strings.Repeat("k", 10<<10)
	notUTF8ID = "\xff\xfe\xc3\x28\x00k"
)

func hostileHTTPCases() []httpCase {
	const keepAlive = `mutation($id: ID!) { keepAlive(id: $id) { id } }`
	const unblock = `mutation($id: ID!, $token: ID) { unblockKey(id: $id, token: $token) { id } }`
	const generate = `mutation($n: Int!) { generateKeys(count: $n) { id } }`
	cases := []httpCase{
		// Malformed and truncated JSON.
		{name: "json/truncated", req: gqlPost("application/json", []byte(`{"query": "mutation { generateKeys(count: 1) { id } }"`)), status: 400},
		{name: "json/cut in a string", req: gqlPost("application/json", []byte(`{"query": "mutation { generateKe`)), status: 400},
		{name: "json/empty", req: gqlPost("application/json", nil)},
		{name: "json/null", req: gqlPost("application/json", []byte(`null`))},
		{name: "json/array", req: gqlPost("application/json", []byte(`[{"query":"mutation { generateKeys { id } }"}]`))},
		{name: "json/number", req: gqlPost("application/json", []byte(`12345`))},
		{name: "json/query not a string", req: gqlPost("application/json", []byte(`{"query": {"a": 1}}`))},
		{name: "json/variables not an object", req: gqlPost("application/json", []byte(`{"query": "mutation { generateKeys { id } }", "variables": "x"}`))},
		{name: "json/trailing garbage", req: gqlPost("application/json", []byte(`{"query": "mutation { generateKeys(count: 1) { id } }"} garbage`)), status: 400},
		{name: "json/two documents", req: gqlPost("application/json", []byte(`{"query": "mutation { generateKeys(count: 1) { id } }"}{"query": "{ stats { total } }"}`)), status: 400},
		{name: "json/not UTF-8", req: gqlPost("application/json", []byte("{\"query\": \"mutation { keepAlive(id: \\\"\xff\xfe\\\") { id } }\"}"))},
		{name: "json/NUL bytes", req: gqlPost("application/json", []byte("{\"query\": \"\x00\x00\x00\"}"))},
		{name: "json/deeply nested", req: gqlPost("application/json", []byte(`{"query": "{ stats { total } }", "variables": `+strings.Repeat(`{"a":`, 100000)+`1`+strings.Repeat(`}`, 100000)+`}`)), status: 0},

		// Wrong content types: a valid mutation that must not run.
		{name: "content-type/text plain", req: gqlPost("text/plain", []byte(`{"query": "mutation { generateKeys(count: 1) { id } }"}`))},
		{name: "content-type/none", req: gqlPost("", []byte(`{"query": "mutation { generateKeys(count: 1) { id } }"}`))},
		{name: "content-type/form", req: gqlPost("application/x-www-form-urlencoded", []byte(`query=mutation+%7B+generateKeys(count%3A+1)+%7B+id+%7D+%7D`))},
		{name: "content-type/multipart garbage", req: gqlPost("multipart/form-data; boundary=xyz", []byte("--xyz\r\nContent-Disposition: form-data; name=\"operations\"\r\n\r\n{\"query\": \"mutation { generateKeys { id } }\"}\r\n--xy"))},
		{name: "content-type/multipart no boundary", req: gqlPost("multipart/form-data", []byte("garbage"))},
		{name: "content-type/graphql", req: gqlPost("application/graphql", []byte(`mutation { generateKeys(count: 1) { id } }`))},
		{name: "content-type/bad media type", req: gqlPost("application/json; ===", []byte(`{"query": "mutation { generateKeys(count: 1) { id } }"}`))},

		// Huge bodies.
		{name: "huge/graphql with length", req: gqlPost("application/json", huge(`{"query": "mutation { generateKeys(count: 1) { id } }", "pad": "`)), status: 413},
		{name: "huge/graphql chunked", req: chunked(gqlPost("application/json", huge(`{"query": "mutation { generateKeys(count: 1) { id } }", "pad": "`))), status: 413},
		{name: "huge/rest generate", req: restReq("POST", "/v1/keys", "application/json", huge(`{"count": 1, "pad": "`)), status: 413},
		{name: "huge/rest generate chunked", req: chunked(restReq("POST", "/v1/keys", "application/json", huge(`{"count": 1, "pad": "`))), status: 413},
		{name: "huge/rest unblock", req: restReq("POST", "/v1/keys/KNOWN/unblock", "application/json", huge(`{"token": "`)), status: 413},
		{name: "huge/rest keepalive", req: restReq("POST", "/v1/keys/KNOWN/keepalive", "application/json", huge(`{"pad": "`)), status: 413},
		{name: "huge/rest keepalive chunked", req: chunked(restReq("POST", "/v1/keys/KNOWN/keepalive", "application/json", huge(`{"pad": "`))), status: 413},
		{name: "huge/rest acquire", req: restReq("POST", "/v1/keys/acquire", "application/json", huge(`{"pad": "`)), status: 413},
		{name: "huge/rest delete chunked", req: chunked(restReq("DELETE", "/v1/keys/KNOWN", "application/json", huge(`{"pad": "`))), status: 413},

		// Alias floods and deep introspection.
		{name: "flood/aliased mutations", req: gqlJSON(aliasFlood(1000, "generateKeys(count: 10000) { id }"), nil)},
		{name: "flood/aliased stats", req: gqlJSON(aliasFlood(5000, "stats { total }"), nil)},
		{name: "flood/aliased __typename", req: gqlJSON(aliasFlood(20000, "__typename"), nil)},
		{name: "flood/aliased __schema", req: gqlJSON(aliasFlood(2000, "__schema { types { name fields { name } } }"), nil)},
		{name: "flood/__schema in fragments", req: gqlJSON(`{ ...A ...A } fragment A on Query { ...B ...B } fragment B on Query { x: __schema { types { name } } y: __schema { types { name } } }`, nil)},
		{name: "introspection/fields of types 50 deep", req: gqlJSON(`{ __schema { types { `+deepIntrospection(50, "name fields { type { name ofType { %s } } }")+` } } }`, nil)},
		// Legal, and linear: ofType runs out after a few levels. (50 levels nest deeper
		// than MaxDocumentDepth, and are refused like any document that deep.)
		{name: "introspection/ofType 25 deep", req: gqlJSON(`{ __type(name: "Key") { fields { type { `+deepIntrospection(25, "ofType { %s }")+` } } } }`, nil), answers: true},
		{name: "introspection/ofType 50 deep", req: gqlJSON(`{ __type(name: "Key") { fields { type { `+deepIntrospection(50, "ofType { %s }")+` } } } }`, nil)},
		{name: "introspection/fields 50 deep via __type", req: gqlJSON(`{ __type(name: "Key") { `+deepIntrospection(50, "name fields { type { ofType { %s } } }")+` } }`, nil)},
		{name: "fragments/cycle", req: gqlJSON(`query { ...A } fragment A on Query { stats { total } ...B } fragment B on Query { ...A }`, nil)},
		{name: "fragments/self", req: gqlJSON(`query { ...A } fragment A on Query { ...A }`, nil)},
		{name: "fragments/unknown", req: gqlJSON(`query { ...Nope }`, nil)},
		{name: "document/deep selection", req: gqlJSON(strings.Repeat("{ a ", 10000)+strings.Repeat("}", 10000), nil)},
		{name: "document/many operations", req: gqlJSON(`mutation A { generateKeys { id } } mutation B { generateKeys { id } }`, nil)},
		{name: "document/garbage", req: gqlJSON("\x00\x01{{{((([[[", nil)},

		// Invalid variables.
		{name: "vars/string for Int", req: gqlJSON(generate, map[string]any{"n": "three"})},
		{name: "vars/float for Int", req: gqlJSON(generate, map[string]any{"n": 1.5})},
		{name: "vars/huge Int", req: gqlRawVars(generate, `{"n": 99999999999999999999999}`)},
		{name: "vars/null for Int!", req: gqlJSON(generate, map[string]any{"n": nil})},
		{name: "vars/object for Int", req: gqlJSON(generate, map[string]any{"n": map[string]any{"a": 1}})},
		{name: "vars/missing required", req: gqlJSON(generate, map[string]any{})},
		{name: "vars/none at all", req: gqlJSON(keepAlive, nil)},
		{name: "vars/extra", req: gqlJSON(keepAlive, map[string]any{"id": "no-such-key", "extra": 1, "n": []int{1, 2}})},
		{name: "vars/list for ID", req: gqlJSON(keepAlive, map[string]any{"id": []string{"a", "b"}})},
		{name: "vars/bad enum", req: gqlJSON(`subscription($t: [KeyEventType!]) { keyEvents(types: $t) { seq } }`, map[string]any{"t": []string{"NOPE"}})},
		{name: "vars/undeclared variable", req: gqlJSON(`mutation { keepAlive(id: $id) { id } }`, map[string]any{"id": "x"})},

		// Hostile ids through GraphQL variables.
		{name: "id/empty keepAlive", req: gqlJSON(keepAlive, map[string]any{"id": ""}), status: 200},
		{name: "id/10KB keepAlive", req: gqlJSON(keepAlive, map[string]any{"id": longID}), status: 200},
		{name: "id/not UTF-8 keepAlive", req: gqlRawVars(keepAlive, "{\"id\": \""+notUTF8ID[:5]+"\"}")},
		{name: "id/escaped NUL keepAlive", req: gqlRawVars(keepAlive, `{"id": "\u0000\ud800k"}`), status: 200},
		{name: "id/10KB deleteKey", req: gqlJSON(`mutation($id: ID!) { deleteKey(id: $id) }`, map[string]any{"id": longID}), status: 200},
		{name: "id/not UTF-8 deleteKey", req: gqlRawVars(`mutation($id: ID!) { deleteKey(id: $id) }`, "{\"id\": \"\xff\xfe\"}")},
		{name: "id/empty unblock", req: gqlJSON(unblock, map[string]any{"id": ""}), status: 200},
		{name: "token/10KB on the known key", req: func(t *testing.T, h *hostile) *http.Request {
			return gqlJSON(unblock, map[string]any{"id": h.known, "token": longID})(t, h)
		}, status: 200},
		{name: "token/not UTF-8 on the known key", req: func(t *testing.T, h *hostile) *http.Request {
			return gqlRawVars(unblock, `{"id": "`+h.known+"\", \"token\": \"\xff\xfe\"}")(t, h)
		}},
		{name: "token/the right one with junk appended", req: func(t *testing.T, h *hostile) *http.Request {
			return gqlJSON(unblock, map[string]any{"id": h.known, "token": h.knownToken + "\x00"})(t, h)
		}, status: 200},
		{name: "token/the key id as token", req: func(t *testing.T, h *hostile) *http.Request {
			return gqlJSON(unblock, map[string]any{"id": h.known, "token": h.known})(t, h)
		}, status: 200},

		// GET.
		{name: "get/mutation", req: gqlGet("query=" + url.QueryEscape(`mutation { generateKeys(count: 1) { id } }`))},
		{name: "get/no query", req: gqlGet("")},
		{name: "get/percent-encoded bytes", req: gqlGet(`query=%7B%20key(id%3A%20%22%FF%FE%00%22)%20%7B%20id%20%7D%20%7D`)},
		{name: "get/bad variables", req: gqlGet("query=" + url.QueryEscape(`query($id: ID!) { key(id: $id) { id } }`) + "&variables=%7B%22id")},
		{name: "get/non-UTF-8 variable", req: gqlGet("query=" + url.QueryEscape(`mutation($id: ID!) { keepAlive(id: $id) { id } }`) + "&variables=%7B%22id%22%3A%22%FF%FE%22%7D")},
		{name: "get/10KB id", req: gqlGet("query=" + url.QueryEscape(`mutation($id: ID!) { keepAlive(id: $id) { id } }`) + "&variables=" + url.QueryEscape(`{"id":"`+longID+`"}`))},
		{name: "get/bad extensions", req: gqlGet("query=%7Bstats%7Btotal%7D%7D&extensions=%7Bnope")},
		{name: "get/unknown persisted query", req: gqlGet(`extensions=` + url.QueryEscape(`{"persistedQuery":{"version":1,"sha256Hash":"`+strings.Repeat("0", 64)+`"}}`))},
		{name: "get/bad query string", req: gqlGet("query=%zz%7Bstats%7D")},
		{name: "post/persisted query hash mismatch", req: gqlPost("application/json", []byte(`{"query": "mutation { generateKeys(count: 1) { id } }", "extensions": {"persistedQuery": {"version": 1, "sha256Hash": "abc"}}}`))},
		{name: "method/PUT graphql", req: func(t *testing.T, h *hostile) *http.Request {
			req := gqlJSON(`mutation { generateKeys(count: 1) { id } }`, nil)(t, h)
			req.Method = "PUT"
			return req
		}},
		{name: "upgrade/header without a handshake", req: func(t *testing.T, h *hostile) *http.Request {
			req := mustRequest(t, "GET", h.url+"/graphql", nil)
			req.Header.Set("Upgrade", "websocket")
			return req
		}},

		// REST: hostile ids in path segments, percent-encoded.
		{name: "rest/not UTF-8 keepalive", req: restReq("POST", "/v1/keys/%FF%FE%C3%28/keepalive", "", nil), status: 404},
		{name: "rest/NUL id keepalive", req: restReq("POST", "/v1/keys/%00/keepalive", "", nil), status: 404},
		{name: "rest/slash in id delete", req: restReq("DELETE", "/v1/keys/a%2Fb", "", nil), status: 404},
		{name: "rest/10KB id keepalive", req: restReq("POST", "/v1/keys/"+longID+"/keepalive", "", nil), status: 404},
		{name: "rest/10KB id delete", req: restReq("DELETE", "/v1/keys/"+longID, "", nil), status: 404},
		{name: "rest/not UTF-8 get", req: restReq("GET", "/v1/keys/%FF", "", nil), status: 404},
		{name: "rest/not UTF-8 unblock", req: restReq("POST", "/v1/keys/%80%81/unblock", "", nil), status: 404},
		// Paths that are not canonical: 404 in JSON, never net/http's redirect (which
		// would take the method and body to another route).
		{name: "rest/empty id keepalive", req: restReq("POST", "/v1/keys//keepalive", "", nil), status: 404},
		{name: "rest/empty id get", req: restReq("GET", "/v1/keys//KNOWN", "", nil), status: 404},
		{name: "rest/double slash stats", req: restReq("GET", "/v1//stats", "", nil), status: 404},
		{name: "rest/dot segments to acquire", req: restReq("POST", "/v1/keys/KNOWN/../acquire", "", nil), status: 404},
		{name: "rest/dot segment unblock", req: restReq("POST", "/v1/keys/KNOWN/./unblock", "", nil), status: 404},
		{name: "rest/the subtree itself", req: restReq("GET", "/v1", "", nil), status: 404},
		{name: "rest/empty id delete", req: restReq("DELETE", "/v1/keys/", "", nil), status: 404},
		{name: "rest/dot segments", req: restReq("DELETE", "/v1/keys/KNOWN/..", "", nil), status: 404},
		{name: "rest/encoded dot segments", req: restReq("DELETE", "/v1/keys/KNOWN%2F..", "", nil), status: 404},

		// REST bodies.
		{name: "rest/truncated generate", req: restReq("POST", "/v1/keys", "application/json", []byte(`{"count": 5`)), status: 400},
		{name: "rest/generate string count", req: restReq("POST", "/v1/keys", "application/json", []byte(`{"count": "5"}`)), status: 400},
		{name: "rest/generate count overflow", req: restReq("POST", "/v1/keys", "application/json", []byte(`{"count": 99999999999999999999}`)), status: 400},
		{name: "rest/generate count zero", req: restReq("POST", "/v1/keys", "application/json", []byte(`{"count": 0}`)), status: 400},
		{name: "rest/generate unknown field", req: restReq("POST", "/v1/keys", "application/json", []byte(`{"count": 1, "evil": true}`)), status: 400},
		{name: "rest/generate trailing garbage", req: restReq("POST", "/v1/keys", "application/json", []byte(`{"count": 1} {"count": 2}`)), status: 400},
		{name: "rest/generate form", req: restReq("POST", "/v1/keys", "application/x-www-form-urlencoded", []byte(`count=5`)), status: 415},
		{name: "rest/generate multipart garbage", req: restReq("POST", "/v1/keys", "multipart/form-data; boundary=b", []byte("--b\r\n\r\ncount=1\r\n--")), status: 415},
		{name: "rest/generate not UTF-8", req: restReq("POST", "/v1/keys", "text/plain", []byte("{\"count\": 1, \"\xff\": 1}")), status: 415},
		{name: "rest/unblock wrong token", req: restReq("POST", "/v1/keys/KNOWN/unblock", "application/json", []byte("{\"token\": \"\xff\xfe\"}")), status: 409},
		{name: "rest/unblock token wrong type", req: restReq("POST", "/v1/keys/KNOWN/unblock", "application/json", []byte(`{"token": 1}`)), status: 400},
		{name: "rest/unblock escaped unknown field", req: restReq("POST", "/v1/keys/KNOWN/unblock", "application/json", []byte(`{"to\u006Be": ""}`)), status: 400},
		{name: "rest/unblock truncated", req: restReq("POST", "/v1/keys/KNOWN/unblock", "application/json", []byte(`{"token": "`)), status: 400},
		{name: "rest/renew without token", req: restReq("POST", "/v1/keys/KNOWN/renew", "application/json", []byte(`{}`)), status: 400},
		{name: "rest/renew bad ttl", req: restReq("POST", "/v1/keys/KNOWN/renew", "application/json", []byte(`{"token": "x", "ttl": "\u00ff"}`)), status: 400},
		{name: "rest/acquire bad ttl", req: restReq("POST", "/v1/keys/acquire?ttl=%FF", "", nil), status: 400},
		{name: "rest/acquire repeated wait", req: restReq("POST", "/v1/keys/acquire?wait=1s&wait=2s", "", nil), status: 400},
		{name: "rest/acquire bad query string", req: restReq("POST", "/v1/keys/acquire?ttl=%zz", "", nil), status: 400},
		{name: "rest/wrong method", req: restReq("PATCH", "/v1/keys/KNOWN", "", nil), status: 405},
	}
	return cases
}

// TestHostileHTTP sends every hostile HTTP case to one running server.
func TestHostileHTTP(t *testing.T) {
	h := startHostile(t)
	for _, tc := range hostileHTTPCases() {
		ok := t.Run(tc.name, func(t *testing.T) {
			before := h.snapshot(t)
			status, body := h.fetch(t, tc.req(t, h))
			switch {
			case tc.answers && status == http.StatusOK:
				assert.Less(t, len(body), 64<<10, "a bounded answer")
				assert.NotContains(t, string(body), `"errors"`)
			case tc.status != 0:
				require.Equal(t, tc.status, status, "body %.300s", body)
				assertRefused(t, status, body)
			default:
				assertRefused(t, status, body)
			}
			h.checkAfter(t, before)
		})
		if !ok { // the pool may have changed: a fresh server for the next case
			h = startHostile(t)
		}
	}
}

// TestHostileRawHTTP sends what an HTTP client library would not: bodies shorter than
// their Content-Length, a body with no length at all, garbage request lines, paths
// with bad percent-escapes. Every answer is JSON, even those net/http's server makes
// before any handler runs.
func TestHostileRawHTTP(t *testing.T) {
	h := startHostile(t)
	host := strings.TrimPrefix(h.url, "http://")
	query := `{"query":"mutation { generateKeys(count: 1) { id } }"}`
	cases := []struct {
		name string
		raw  string
		// halfClose closes the write side after raw, so the server sees the body end.
		halfClose bool
		// status and code, if set, are the answer expected.
		status int
		code   string
	}{
		{name: "truncated body, graphql", raw: "POST /graphql HTTP/1.1\r\nHost: " + host + "\r\nConnection: close\r\nContent-Type: application/json\r\nContent-Length: 1000\r\n\r\n" + query[:20], halfClose: true},
		{name: "truncated body, rest", raw: "POST /v1/keys HTTP/1.1\r\nHost: " + host + "\r\nContent-Length: 1000\r\n\r\n{\"count\":", halfClose: true},
		{name: "truncated chunk", raw: "POST /graphql HTTP/1.1\r\nHost: " + host + "\r\nConnection: close\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n100\r\n" + query, halfClose: true},
		{name: "bad chunk size", raw: "POST /graphql HTTP/1.1\r\nHost: " + host + "\r\nConnection: close\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n" + query + "\r\n0\r\n\r\n"},
		{name: "body without a length", raw: "POST /graphql HTTP/1.1\r\nHost: " + host + "\r\nConnection: close\r\nContent-Type: application/json\r\n\r\n" + query},
		{name: "length and chunked", raw: "POST /graphql HTTP/1.1\r\nHost: " + host + "\r\nConnection: close\r\nContent-Type: application/json\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n" + query, halfClose: true},
		{name: "negative length", raw: "POST /graphql HTTP/1.1\r\nHost: " + host + "\r\nConnection: close\r\nContent-Type: application/json\r\nContent-Length: -1\r\n\r\n" + query},
		{name: "huge length", raw: "POST /v1/keys HTTP/1.1\r\nHost: " + host + "\r\nContent-Length: 99999999999999\r\n\r\n{}", halfClose: true},
		{name: "garbage request line", raw: "\x00\xff GARBAGE\r\n\r\n"},
		{name: "not UTF-8 path", raw: "DELETE /v1/keys/\xff\xfe HTTP/1.1\r\nHost: " + host + "\r\nConnection: close\r\n\r\n"},
		{name: "huge header", raw: "GET /v1/stats HTTP/1.1\r\nHost: " + host + "\r\nX-A: " + strings.Repeat("a", 2<<20) + "\r\n\r\n", status: 431, code: "REQUEST_TOO_LARGE"},
		// net/http refuses these before any handler runs; the answer is JSON all the same.
		{name: "bad escape in a path", raw: "GET /v1/keys/%Qx HTTP/1.1\r\nHost: " + host + "\r\n\r\n", status: 400, code: "BAD_USER_INPUT"},
		{name: "bad escape before a route", raw: "POST /v1/keys/%zz/unblock HTTP/1.1\r\nHost: " + host + "\r\nContent-Length: 0\r\n\r\n", status: 400, code: "BAD_USER_INPUT"},
		{name: "truncated escape", raw: "DELETE /v1/keys/KNOWN% HTTP/1.1\r\nHost: " + host + "\r\n\r\n", status: 400, code: "BAD_USER_INPUT"},
		{name: "bad escape after a good request", raw: "GET /v1/stats HTTP/1.1\r\nHost: " + host + "\r\n\r\nGET /v1/keys/%Q HTTP/1.1\r\nHost: " + host + "\r\n\r\n", status: 400, code: "BAD_USER_INPUT"},
		{name: "malformed header", raw: "GET /v1/stats HTTP/1.1\r\nHost: " + host + "\r\nno colon here\r\n\r\n", status: 400, code: "BAD_USER_INPUT"},
		{name: "no host", raw: "GET /v1/stats HTTP/1.1\r\n\r\n", status: 400, code: "BAD_USER_INPUT"},
		{name: "unknown transfer coding", raw: "POST /v1/keys HTTP/1.1\r\nHost: " + host + "\r\nTransfer-Encoding: gzip\r\n\r\n", status: 501, code: "BAD_USER_INPUT"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			before := h.snapshot(t)
			conn, err := net.DialTimeout("tcp", host, hostileTimeout)
			require.NoError(t, err)
			defer conn.Close()
			require.NoError(t, conn.SetDeadline(time.Now().Add(hostileTimeout)))
			_, _ = conn.Write([]byte(strings.ReplaceAll(tc.raw, "KNOWN", h.known))) // the server may hang up before reading it all
			if tc.halfClose {
				require.NoError(t, conn.(*net.TCPConn).CloseWrite())
			}
			answer, err := io.ReadAll(conn)
			require.False(t, isTimeout(err), "the server neither answered nor hung up")
			if tc.status != 0 {
				require.NotEmpty(t, answer, "no answer")
			}
			if len(answer) > 0 { // an answer, or none (the server hung up): JSON, never a 5xx but 501
				answers := bufio.NewReader(bytes.NewReader(answer))
				res, err := http.ReadResponse(answers, nil)
				require.NoError(t, err, "%.300q", answer)
				if strings.HasPrefix(tc.name, "bad escape after") { // the first answer is the good request's
					require.Equal(t, http.StatusOK, res.StatusCode)
					_, _ = io.Copy(io.Discard, res.Body)
					res, err = http.ReadResponse(answers, nil)
					require.NoError(t, err, "%.300q", answer)
				}
				body, err := io.ReadAll(res.Body)
				require.NoError(t, err)
				require.True(t, strings.HasPrefix(res.Header.Get("Content-Type"), "application/json"),
					"Content-Type %q: %.300s", res.Header.Get("Content-Type"), body)
				if tc.status != 0 {
					require.Equal(t, tc.status, res.StatusCode, "%.300s", body)
					var e struct {
						Error struct{ Code, Message string }
					}
					require.NoError(t, json.Unmarshal(body, &e), "%.300s", body)
					require.Equal(t, tc.code, e.Error.Code, "%s", body)
					require.NotEmpty(t, e.Error.Message)
				} else {
					require.True(t, json.Valid(body), "%.300s", body)
					assertRefused(t, res.StatusCode, body)
				}
			}
			h.checkAfter(t, before)
		})
	}
}

// wsURL is the server's /graphql as a websocket URL.
func (h *hostile) wsURL() string { return "ws" + strings.TrimPrefix(h.url, "http") + "/graphql" }

// dialWS opens a websocket speaking protocols (none if empty).
func (h *hostile) dialWS(t *testing.T, protocols ...string) (*websocket.Conn, *http.Response, error) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), hostileTimeout)
	defer cancel()
	conn, res, err := dialWebsocket(ctx, h.wsURL(), websocket.DialOptions{Subprotocols: protocols})
	if conn != nil {
		t.Cleanup(func() { conn.CloseNow() })
	}
	return conn, res, err
}

// cleanCloseCodes are the codes with which the server may close a socket on garbage.
var cleanCloseCodes = map[websocket.StatusCode]bool{
	websocket.StatusNormalClosure: true, websocket.StatusProtocolError: true, websocket.StatusUnsupportedData: true,
	websocket.StatusInvalidFramePayloadData: true, websocket.StatusPolicyViolation: true, websocket.StatusMessageTooBig: true,
	4400: true, 4401: true, 4403: true, 4408: true, 4409: true, 4429: true,
}

// expectClose reads until the server closes the socket and asserts that it did so
// with a close frame, cleanly, in time. Messages before the close are returned.
func expectClose(t *testing.T, conn *websocket.Conn) (websocket.StatusCode, []string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), hostileTimeout)
	defer cancel()
	var got []string
	for {
		_, msg, err := conn.Read(ctx)
		if err == nil {
			got = append(got, string(msg))
			continue
		}
		return closedBy(t, err, got), got
	}
}

// closedBy asserts that err, which ended the reading of a socket, is the server's
// close frame, in time, with a clean code, and that no message before it (got) is an
// internal error. It returns the code.
func closedBy(t *testing.T, err error, got []string) websocket.StatusCode {
	t.Helper()
	require.False(t, isTimeout(err), "the server kept the socket open; got %q", got)
	var ce websocket.CloseError
	require.True(t, errors.As(err, &ce), "closed without a close frame: %v; got %q", err, got)
	assert.True(t, cleanCloseCodes[ce.Code], "close code %d (%s); got %q", ce.Code, ce.Reason, got)
	for _, m := range got {
		assert.NotContains(t, m, "INTERNAL_SERVER_ERROR")
	}
	return ce.Code
}

// closeWith closes the socket as a client does, with a close frame of code, and
// asserts of the server's answer what expectClose does; it returns the answer's code
// and the messages before it. The library's Close sends the frame and waits (5 s at
// most) for the server's, discarding the data messages it reads meanwhile: they are
// read instead by a reader started first, which is waiting for them unless Close's
// own wait began before it.
func closeWith(t *testing.T, conn *websocket.Conn, code websocket.StatusCode) (websocket.StatusCode, []string) {
	t.Helper()
	var got []string
	read := make(chan struct{})
	go func() {
		defer close(read)
		for {
			_, msg, err := conn.Read(context.Background())
			if err != nil {
				return // the server's close frame, or Close's end
			}
			got = append(got, string(msg))
		}
	}()
	err := conn.Close(code, "")
	<-read
	if err == nil {
		// The server answered with a close frame of the same code: Close says nothing
		// more. Its timeouts bound the wait.
		err = websocket.CloseError{Code: code}
	}
	return closedBy(t, err, got), got
}

func writeText(t *testing.T, conn *websocket.Conn, msgs ...string) {
	t.Helper()
	for _, m := range msgs {
		// The server may close while we write: that is its answer, read by expectClose.
		if err := conn.Write(context.Background(), websocket.MessageText, []byte(m)); err != nil {
			return
		}
	}
}

func initAck(t *testing.T, conn *websocket.Conn) {
	t.Helper()
	require.NoError(t, wsjson.Write(context.Background(), conn, map[string]any{"type": "connection_init"}))
	ctx, cancel := context.WithTimeout(context.Background(), hostileTimeout)
	defer cancel()
	var msg wsMessage
	require.NoError(t, wsjson.Read(ctx, conn, &msg))
	require.Equal(t, "connection_ack", msg.Type)
}

const transportWS = "graphql-transport-ws"

// goroutinesSettle waits until the process runs at most baseline goroutines (plus a
// little slack for the runtime's own), and says how many are left if it does not.
func goroutinesSettle(t *testing.T, baseline int) {
	t.Helper()
	ok := assert.Eventually(t, func() bool { return runtime.NumGoroutine() <= baseline+2 }, 15*time.Second, 20*time.Millisecond)
	if !ok {
		buf := make([]byte, 1<<20)
		t.Logf("%d goroutines, baseline %d:\n%s", runtime.NumGoroutine(), baseline, buf[:runtime.Stack(buf, true)])
	}
}

// TestHostileWebSocket sends garbage over websockets.
func TestHostileWebSocket(t *testing.T) {
	h := startHostile(t)
	subscribe := `{"id":"1","type":"subscribe","payload":{"query":"subscription { keyEvents { seq } }"}}`
	cases := []struct {
		name string
		run  func(t *testing.T)
	}{
		{"non-JSON first frame", func(t *testing.T) {
			conn, _, err := h.dialWS(t, transportWS)
			require.NoError(t, err)
			writeText(t, conn, "hello {{{")
			expectClose(t, conn)
		}},
		{"non-JSON after init", func(t *testing.T) {
			conn, _, err := h.dialWS(t, transportWS)
			require.NoError(t, err)
			initAck(t, conn)
			writeText(t, conn, "\xff\xfe not json")
			expectClose(t, conn)
		}},
		{"binary frame", func(t *testing.T) {
			conn, _, err := h.dialWS(t, transportWS)
			require.NoError(t, err)
			initAck(t, conn)
			_ = conn.Write(context.Background(), websocket.MessageBinary, []byte{0, 1, 2, 0xff, 0xfe})
			expectClose(t, conn)
		}},
		{"binary frame that is JSON, before init", func(t *testing.T) {
			conn, _, err := h.dialWS(t, transportWS)
			require.NoError(t, err)
			_ = conn.Write(context.Background(), websocket.MessageBinary, []byte(subscribe))
			expectClose(t, conn)
		}},
		{"unknown message type", func(t *testing.T) {
			conn, _, err := h.dialWS(t, transportWS)
			require.NoError(t, err)
			initAck(t, conn)
			writeText(t, conn, `{"type":"gimme_keys","id":"1"}`)
			expectClose(t, conn)
		}},
		{"type not a string", func(t *testing.T) {
			conn, _, err := h.dialWS(t, transportWS)
			require.NoError(t, err)
			writeText(t, conn, `{"type":{"a":1}}`)
			expectClose(t, conn)
		}},
		{"subscribe before connection_init", func(t *testing.T) {
			conn, _, err := h.dialWS(t, transportWS)
			require.NoError(t, err)
			writeText(t, conn, subscribe)
			expectClose(t, conn)
		}},
		{"mutation before connection_init", func(t *testing.T) {
			conn, _, err := h.dialWS(t, transportWS)
			require.NoError(t, err)
			writeText(t, conn, `{"id":"1","type":"subscribe","payload":{"query":"mutation { generateKeys(count: 1) { id } }"}}`)
			expectClose(t, conn)
		}},
		{"connection_init flood on one socket", func(t *testing.T) {
			conn, _, err := h.dialWS(t, transportWS)
			require.NoError(t, err)
			initAck(t, conn)
			for range 1000 {
				if conn.Write(context.Background(), websocket.MessageText, []byte(`{"type":"connection_init"}`)) != nil {
					break
				}
			}
			expectClose(t, conn)
		}},
		{"connection_init with a bad payload", func(t *testing.T) {
			conn, _, err := h.dialWS(t, transportWS)
			require.NoError(t, err)
			// gqlgen gives up on this socket without closing it; guard closes it.
			writeText(t, conn, `{"type":"connection_init","payload":"not an object"}`)
			expectClose(t, conn)
		}},
		{"subscribe with garbage payloads", func(t *testing.T) {
			conn, _, err := h.dialWS(t, transportWS)
			require.NoError(t, err)
			initAck(t, conn)
			writeText(t, conn,
				`{"id":"1","type":"subscribe","payload":"nope"}`,
				`{"id":"2","type":"subscribe","payload":{"query":"subscription { nope }"}}`,
				`{"id":"3","type":"subscribe","payload":{"query":"mutation { generateKeys(count: 0) { id } }"}}`,
				`{"id":"4","type":"subscribe","payload":{"query":"subscription($t: [KeyEventType!]) { keyEvents(types: $t) { seq } }","variables":{"t":[1]}}}`,
				`{"id":"5","type":"subscribe","payload":{"query":"mutation($id: ID!) { keepAlive(id: $id) { id } }","variables":{"id":"`+"\xff"+`"}}}`,
			)
			// Each ends with one error (refused before it runs) or a coded result and
			// complete, and nothing is sent for an operation after its end
			// (graphql-transport-ws: no complete after an error); the socket stays up.
			ctx, cancel := context.WithTimeout(context.Background(), hostileTimeout)
			defer cancel()
			ended := map[string]string{}
			for len(ended) < 5 {
				var msg struct {
					ID      string
					Type    string
					Payload json.RawMessage
				}
				require.NoError(t, wsjson.Read(ctx, conn, &msg))
				if msg.Type == "ping" {
					require.NoError(t, wsjson.Write(context.Background(), conn, map[string]any{"type": "pong"}))
					continue
				}
				require.NotContains(t, ended, msg.ID, "%s after operation %s's %s", msg.Type, msg.ID, ended[msg.ID])
				switch msg.Type {
				case "complete", "error":
					ended[msg.ID] = msg.Type
				case "next":
				default:
					t.Fatalf("unexpected %s: %s", msg.Type, msg.Payload)
				}
				assert.NotContains(t, string(msg.Payload), "INTERNAL_SERVER_ERROR")
				assert.NotContains(t, string(msg.Payload), `"data":{"`, "hostile operation %s ran: %s", msg.ID, msg.Payload)
			}
			// A query on the same socket proves nothing more was queued for them.
			writeText(t, conn, `{"id":"6","type":"subscribe","payload":{"query":"{ stats { total } }"}}`)
			for _, want := range []string{"next", "complete"} {
				var msg struct{ ID, Type string }
				require.NoError(t, wsjson.Read(ctx, conn, &msg))
				require.Equal(t, "6", msg.ID, "a message for operation %s after its end", msg.ID)
				require.Equal(t, want, msg.Type)
			}
			code, _ := closeWith(t, conn, websocket.StatusNormalClosure)
			assert.Equal(t, websocket.StatusNormalClosure, code)
		}},
		{"duplicate subscription id", func(t *testing.T) {
			conn, _, err := h.dialWS(t, transportWS)
			require.NoError(t, err)
			initAck(t, conn)
			writeText(t, conn, subscribe, subscribe, subscribe)
			code, _ := expectClose(t, conn)
			assert.Equal(t, websocket.StatusCode(4409), code, "graphql-transport-ws: Subscriber for 1 already exists")
		}},
		{"huge frame", func(t *testing.T) {
			conn, _, err := h.dialWS(t, transportWS)
			require.NoError(t, err)
			initAck(t, conn)
			writeText(t, conn, `{"id":"1","type":"subscribe","payload":{"query":"`+strings.Repeat(" ", 8<<20)+`"}}`)
			expectClose(t, conn)
		}},
		{"legacy graphql-ws garbage", func(t *testing.T) {
			conn, _, err := h.dialWS(t, "graphql-ws")
			require.NoError(t, err)
			writeText(t, conn, `{"type":"start","id":"1","payload":{"query":"mutation { generateKeys(count: 1) { id } }"}}`)
			expectClose(t, conn)
		}},
		{"unknown subprotocol", func(t *testing.T) {
			conn, res, err := h.dialWS(t, "graphql-evil", "mqtt")
			if err != nil { // refused: with a 4xx, never a 5xx
				require.NotNil(t, res, "%v", err)
				assert.GreaterOrEqual(t, res.StatusCode, 400)
				assert.Less(t, res.StatusCode, 500)
				return
			}
			// Accepted: the server must not claim a protocol the client did not offer,
			// and garbage still gets a clean close.
			assert.Contains(t, []string{"", "graphql-ws"}, conn.Subprotocol())
			writeText(t, conn, "garbage")
			expectClose(t, conn)
		}},
		{"no subprotocol, then close", func(t *testing.T) {
			conn, _, err := h.dialWS(t)
			require.NoError(t, err)
			closeWith(t, conn, websocket.StatusNormalClosure)
		}},
		{"connection_init from many sockets", func(t *testing.T) {
			var wg sync.WaitGroup
			errs := make(chan error, 100)
			for range 100 {
				wg.Go(func() {
					dialCtx, cancelDial := context.WithTimeout(context.Background(), hostileTimeout)
					defer cancelDial()
					conn, _, err := dialWebsocket(dialCtx, h.wsURL(), websocket.DialOptions{Subprotocols: []string{transportWS}})
					if err != nil {
						errs <- err
						return
					}
					defer conn.CloseNow()
					ctx, cancel := context.WithTimeout(context.Background(), hostileTimeout)
					defer cancel()
					for range 3 {
						_ = conn.Write(context.Background(), websocket.MessageText, []byte(`{"type":"connection_init"}`))
					}
					for {
						if _, _, err := conn.Read(ctx); err != nil {
							var ce websocket.CloseError
							if !errors.As(err, &ce) || !cleanCloseCodes[ce.Code] {
								errs <- fmt.Errorf("not a clean close: %w", err)
							}
							return
						}
					}
				})
			}
			wg.Wait()
			close(errs)
			for err := range errs {
				t.Error(err)
			}
		}},
	}
	h.client.CloseIdleConnections()
	baseline := runtime.NumGoroutine()
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			before := h.snapshot(t)
			tc.run(t)
			h.checkAfter(t, before)
		})
	}
	h.client.CloseIdleConnections()
	http.DefaultClient.CloseIdleConnections()
	goroutinesSettle(t, baseline)
}

// TestHostileIdleSockets opens 200 websockets that never say anything. They must not
// harm anyone else, the server must close them after its init timeout, and the
// goroutines they cost must be returned.
func TestHostileIdleSockets(t *testing.T) {
	if testing.Short() {
		t.Skip("waits for the server's websocket init timeout")
	}
	h := startHostile(t)
	h.client.CloseIdleConnections()
	baseline := runtime.NumGoroutine()
	before := h.snapshot(t)

	const idle = 200
	conns := make([]*websocket.Conn, 0, idle)
	for i := range idle {
		proto := transportWS
		if i%2 == 1 {
			proto = "graphql-ws"
		}
		conn, _, err := h.dialWS(t, proto)
		require.NoError(t, err)
		conns = append(conns, conn)
	}
	opened := time.Now()

	// Others are served meanwhile: a live subscription sees a mutation's event (after:
	// 0 replays what came before it went live, so nothing is missed).
	sub := h.subscribe(t, `subscription { keyEvents(types: [GENERATED], after: 0) { seq type keyId } }`)
	var gen struct{ GenerateKeys []struct{ ID string } }
	h.mustPost(t, `mutation { generateKeys(count: 1) { id } }`, nil, &gen)
	h.mustPost(t, `mutation($id: ID!) { deleteKey(id: $id) }`, map[string]any{"id": gen.GenerateKeys[0].ID}, nil)
	for readEvent(t, sub).KeyID != gen.GenerateKeys[0].ID { // earlier events, replayed
	}
	require.NoError(t, sub.CloseNow())
	require.Equal(t, before, h.snapshot(t))

	// The server closes every idle socket after its init timeout (10 s), cleanly.
	var wg sync.WaitGroup
	closes := make(chan error, idle)
	for _, conn := range conns {
		wg.Go(func() {
			ctx, cancel := context.WithDeadline(context.Background(), opened.Add(hostileTimeout))
			defer cancel()
			_, _, err := conn.Read(ctx)
			closes <- err
			conn.CloseNow()
		})
	}
	wg.Wait()
	close(closes)
	var clean int
	for err := range closes {
		var ce websocket.CloseError
		if errors.As(err, &ce) && cleanCloseCodes[ce.Code] {
			clean++
		} else {
			t.Errorf("idle socket not closed cleanly: %v", err)
		}
	}
	assert.Equal(t, idle, clean)
	h.checkAfter(t, before)
	h.client.CloseIdleConnections()
	http.DefaultClient.CloseIdleConnections()
	goroutinesSettle(t, baseline)
}
