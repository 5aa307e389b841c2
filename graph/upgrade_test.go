package graph_test

import (
	"io"
	"net/http"
	"net/url"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/keypool/keypool/keystore"
)

// TestUpgradeOtherThanWebsocketIsIgnored: a request that offers another protocol
// upgrade than websocket (curl --http2 offers h2c on every plain-HTTP request) is
// answered over HTTP/1.1 as if it offered none, as RFC 9110 7.8 lets a server do.
func TestUpgradeOtherThanWebsocketIsIgnored(t *testing.T) {
	e := newEnv(t, keystore.Options{})
	for _, method := range []string{http.MethodPost, http.MethodGet} {
		t.Run(method, func(t *testing.T) {
			var req *http.Request
			var err error
			if method == http.MethodPost {
				req, err = http.NewRequest(method, e.srv.URL, strings.NewReader(`{"query":"{ stats { total } }"}`))
				require.NoError(t, err)
				req.Header.Set("Content-Type", "application/json")
			} else {
				req, err = http.NewRequest(method, e.srv.URL+"?query="+url.QueryEscape("{ stats { total } }"), nil)
				require.NoError(t, err)
			}
			req.Header.Set("Connection", "Upgrade, HTTP2-Settings")
			req.Header.Set("Upgrade", "h2c")
			req.Header.Set("HTTP2-Settings", "AAMAAABkAAQCAAAAAAIAAAAA")
			res, err := http.DefaultClient.Do(req)
			require.NoError(t, err)
			defer res.Body.Close()
			body, err := io.ReadAll(res.Body)
			require.NoError(t, err)
			require.Equal(t, http.StatusOK, res.StatusCode, "%s", body)
			require.Equal(t, 1, res.ProtoMajor)
			require.JSONEq(t, `{"data":{"stats":{"total":0}}}`, string(body))
		})
	}
}

// TestEventStreamOnlyWhenPreferred: a POST is answered as an event stream only when its
// Accept header names text/event-stream before JSON; urql names every type it reads,
// an event stream last, and gets JSON.
func TestEventStreamOnlyWhenPreferred(t *testing.T) {
	e := newEnv(t, keystore.Options{})
	for accept, want := range map[string]string{
		"application/graphql-response+json, application/graphql+json, application/json, text/event-stream, multipart/mixed": "application/graphql-response+json",
		"text/event-stream":                         "text/event-stream",
		"text/event-stream, application/json":       "text/event-stream",
		"application/json;q=0.9, text/event-stream": "application/json",
	} {
		req, err := http.NewRequest(http.MethodPost, e.srv.URL, strings.NewReader(`{"query":"{ stats { total } }"}`))
		require.NoError(t, err)
		req.Header.Set("Content-Type", "application/json")
		req.Header.Set("Accept", accept)
		res, err := http.DefaultClient.Do(req)
		require.NoError(t, err)
		body, err := io.ReadAll(res.Body)
		res.Body.Close()
		require.NoError(t, err)
		require.Equal(t, http.StatusOK, res.StatusCode, "%s", body)
		require.True(t, strings.HasPrefix(res.Header.Get("Content-Type"), want), "Accept %q: %s", accept, res.Header.Get("Content-Type"))
	}
}
