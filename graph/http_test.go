package graph_test

import (
	"bytes"
	"encoding/json"
	"io"
	"net/http"
	"net/url"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/keypool/keypool/graph"
	"github.com/keypool/keypool/keystore"
)

// TestEveryErrorIsCodedJSON checks that /graphql answers everything it refuses with a
// JSON body whose every error has an extensions.code, under a JSON content type, and
// the status the GraphQL-over-HTTP spec gives it.
func TestEveryErrorIsCodedJSON(t *testing.T) {
	e := newEnv(t, keystore.Options{})
	post := func(contentType, body string) *http.Request {
		req, err := http.NewRequest(http.MethodPost, e.srv.URL, strings.NewReader(body))
		require.NoError(t, err)
		if contentType != "" {
			req.Header.Set("Content-Type", contentType)
		}
		return req
	}
	get := func(query string) *http.Request {
		req, err := http.NewRequest(http.MethodGet, e.srv.URL+"?query="+url.QueryEscape(query), nil)
		require.NoError(t, err)
		return req
	}
	withMethod := func(method string) *http.Request {
		req := post("application/json", `{"query":"{ stats { total } }"}`)
		req.Method = method
		return req
	}
	cases := []struct {
		name   string
		req    *http.Request
		status int
		code   string
		allow  string
	}{
		{"malformed JSON", post("application/json", `{"query": `), 400, "BAD_REQUEST", ""},
		{"JSON that is not an object", post("application/json", `["{ stats { total } }"]`), 400, "BAD_REQUEST", ""},
		{"query not a string", post("application/json", `{"query": 7}`), 400, "BAD_REQUEST", ""},
		{"no query", post("application/json", `{"qeury": "{ stats { total } }"}`), 400, "BAD_REQUEST", ""},
		{"variables not an object", post("application/json", `{"query": "{ stats { total } }", "variables": []}`), 400, "BAD_REQUEST", ""},
		{"no body", post("application/json", ``), 400, "BAD_REQUEST", ""},
		{"text/plain", post("text/plain", `{"query": "{ stats { total } }"}`), 415, "UNSUPPORTED_MEDIA_TYPE", ""},
		{"no content type", post("", `{"query": "{ stats { total } }"}`), 415, "UNSUPPORTED_MEDIA_TYPE", ""},
		{"form", post("application/x-www-form-urlencoded", `query=%7Bstats%7Btotal%7D%7D`), 415, "UNSUPPORTED_MEDIA_TYPE", ""},
		{"PUT", withMethod(http.MethodPut), 405, "METHOD_NOT_ALLOWED", "GET, POST, OPTIONS"},
		{"DELETE", withMethod(http.MethodDelete), 405, "METHOD_NOT_ALLOWED", "GET, POST, OPTIONS"},
		{"mutation over GET", get(`mutation { generateKeys { id } }`), 405, "METHOD_NOT_ALLOWED", "POST"},
		{"subscription over GET", get(`subscription { keyEvents { seq } }`), 405, "METHOD_NOT_ALLOWED", "POST"},
		{"GET without a query", get(``), 400, "BAD_REQUEST", ""},
		{"a body over 1 MiB", post("application/json", `{"query": "{ stats { total } }", "pad": "`+strings.Repeat("x", graph.MaxBodyBytes)+`"}`), 413, "REQUEST_TOO_LARGE", ""},
		{"a subscription over plain POST", post("application/json", `{"query": "subscription { keyEvents { seq } }"}`), 400, "BAD_REQUEST", ""},
		{"JSON holding too many values", post("application/json", `{"query": "{ stats { total } }", "variables": {"x": [`+strings.Repeat("0,", graph.MaxJSONValues)+`0]}}`), 400, "BAD_REQUEST", ""},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			res, err := http.DefaultClient.Do(tc.req)
			require.NoError(t, err)
			defer res.Body.Close()
			body, err := io.ReadAll(res.Body)
			require.NoError(t, err)
			assert.Equal(t, tc.status, res.StatusCode, "%s", body)
			assert.True(t, strings.HasPrefix(res.Header.Get("Content-Type"), "application/json"), "Content-Type %q", res.Header.Get("Content-Type"))
			var resp response
			require.NoError(t, json.Unmarshal(body, &resp), "%s", body)
			requireCode(t, resp, tc.code)
			assert.Equal(t, tc.allow, res.Header.Get("Allow"))
		})
	}

	t.Run("a websocket from a foreign origin", func(t *testing.T) {
		_, res, err := dialWebsocket(e.srv.URL, "graphql-transport-ws", http.Header{"Origin": {"http://evil.example"}})
		require.Error(t, err)
		defer res.Body.Close()
		body, _ := io.ReadAll(res.Body)
		assert.Equal(t, http.StatusForbidden, res.StatusCode)
		assert.True(t, strings.HasPrefix(res.Header.Get("Content-Type"), "application/json"))
		var resp response
		require.NoError(t, json.Unmarshal(body, &resp), "%s", body)
		requireCode(t, resp, "FORBIDDEN")
	})
	assert.Equal(t, stats{}, e.stats(t), "nothing ran")
}

// TestResponseMediaTypes checks the statuses and bodies GraphQL-over-HTTP asks for:
// under application/json a well-formed request is answered 200 even when it fails to
// parse, validate or coerce its variables; under application/graphql-response+json
// those are 400; and a request error never carries a data entry.
func TestResponseMediaTypes(t *testing.T) {
	e := newEnv(t, keystore.Options{})
	send := func(accept, body string) (int, string, map[string]json.RawMessage) {
		req, err := http.NewRequest(http.MethodPost, e.srv.URL, strings.NewReader(body))
		require.NoError(t, err)
		req.Header.Set("Content-Type", "application/json")
		if accept != "" {
			req.Header.Set("Accept", accept)
		}
		res, err := http.DefaultClient.Do(req)
		require.NoError(t, err)
		defer res.Body.Close()
		raw, err := io.ReadAll(res.Body)
		require.NoError(t, err)
		var fields map[string]json.RawMessage
		require.NoError(t, json.Unmarshal(raw, &fields), "%s", raw)
		return res.StatusCode, res.Header.Get("Content-Type"), fields
	}
	failures := map[string]string{
		"parse":                 `{"query": "{"}`,
		"validation":            `{"query": "{ nope }"}`,
		"variables":             `{"query": "query($id: ID!) { key(id: $id) { id } }", "variables": {"id": null}}`,
		"unknown operationName": `{"query": "query A { stats { total } }", "operationName": "B"}`,
		"complexity":            `{"query": "{` + strings.Repeat(` a: stats { total } b: stats { total }`, 60) + `}"}`,
	}
	for name, body := range failures {
		t.Run(name, func(t *testing.T) {
			for _, accept := range []string{"", "application/json", "*/*"} {
				status, contentType, fields := send(accept, body)
				assert.Equal(t, http.StatusOK, status, "Accept %q", accept)
				assert.Contains(t, contentType, "application/json")
				assert.NotContains(t, fields, "data", "a request error has no data entry")
				assert.Contains(t, fields, "errors")
			}
			status, contentType, fields := send("application/graphql-response+json", body)
			assert.Equal(t, http.StatusBadRequest, status)
			assert.Contains(t, contentType, "application/graphql-response+json")
			assert.NotContains(t, fields, "data")
		})
	}
	t.Run("success", func(t *testing.T) {
		for _, accept := range []string{"", "application/json", "application/graphql-response+json", "application/graphql-response+json, application/json;q=0.9"} {
			status, _, fields := send(accept, `{"query": "{ stats { total } }"}`)
			assert.Equal(t, http.StatusOK, status)
			assert.JSONEq(t, `{"stats": {"total": 0}}`, string(fields["data"]))
		}
	})
	t.Run("a field error has data and 200", func(t *testing.T) {
		status, _, fields := send("application/graphql-response+json", `{"query": "mutation { acquireKey { token } }"}`)
		assert.Equal(t, http.StatusOK, status)
		assert.JSONEq(t, `{"acquireKey": null}`, string(fields["data"]))
	})
	t.Run("OPTIONS", func(t *testing.T) {
		req, err := http.NewRequest(http.MethodOptions, e.srv.URL, bytes.NewReader(nil))
		require.NoError(t, err)
		res, err := http.DefaultClient.Do(req)
		require.NoError(t, err)
		res.Body.Close()
		assert.Equal(t, http.StatusNoContent, res.StatusCode)
		assert.Equal(t, "GET, POST, OPTIONS", res.Header.Get("Allow"))
	})
}
