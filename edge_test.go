package main

import (
	"bufio"
	"context"
	"encoding/json"
	"io"
	"net"
	"net/http"
	"net/url"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/coder/websocket"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// The browser edge (issue 12): cross-site request forgery, DNS rebinding, slow clients.

// edgeCase is one request a browser (or a page pretending to be one) might send.
type edgeCase struct {
	name        string
	method      string
	path        string // KNOWN stands for the known key's id
	contentType string
	body        string
	header      map[string]string
	status      int
	code        string // REST error.code or GraphQL errors[0].extensions.code; "" for no check
}

const evilOrigin = "https://evil.example"

// crossSite are the headers a browser sends with a request that a page on evilOrigin
// makes to keypool.
var crossSite = map[string]string{"Origin": evilOrigin, "Sec-Fetch-Site": "cross-site", "Sec-Fetch-Mode": "no-cors"}

func (h *hostile) send(t *testing.T, c edgeCase) (int, []byte) {
	t.Helper()
	req := mustRequest(t, c.method, h.url+strings.ReplaceAll(c.path, "KNOWN", h.known), strings.NewReader(c.body))
	if c.body == "" {
		req.Body, req.ContentLength = http.NoBody, 0
	}
	if c.contentType != "" {
		req.Header.Set("Content-Type", c.contentType)
	}
	for k, v := range c.header {
		if k == "Host" {
			req.Host = v
		} else {
			req.Header.Set(k, v)
		}
	}
	return h.fetch(t, req)
}

// errorCode reads the code of a REST or GraphQL error answer.
func errorCode(t *testing.T, body []byte) string {
	t.Helper()
	var answer struct {
		Error  *struct{ Code, Message string }
		Errors []struct {
			Message    string
			Extensions struct{ Code string }
		}
	}
	require.NoError(t, json.Unmarshal(body, &answer), "not JSON: %.300s", body)
	switch {
	case answer.Error != nil:
		assert.NotEmpty(t, answer.Error.Message)
		return answer.Error.Code
	case len(answer.Errors) > 0:
		assert.NotEmpty(t, answer.Errors[0].Message)
		return answer.Errors[0].Extensions.Code
	}
	return ""
}

// TestCrossSiteRequestsCannotChangeThePool sends what a page on another site can send
// without a preflight (forms, text/plain, no-cors fetches) and what a forger might add:
// each is refused before it reaches the pool. Scripts and same-origin pages still work.
func TestCrossSiteRequestsCannotChangeThePool(t *testing.T) {
	h := startHostile(t)
	const generate = `{"query":"mutation { generateKeys(count: 3) { id } }"}`
	oldBrowser := map[string]string{} // no Origin, no Sec-Fetch-*: only the content type gives it away
	refused := []edgeCase{
		// REST: the attack, as a modern browser sends it…
		{"form to generate", "POST", "/v1/keys", "application/x-www-form-urlencoded", "count=3", crossSite, 403, "FORBIDDEN"},
		{"text/plain JSON to generate", "POST", "/v1/keys", "text/plain", `{"count":3}`, crossSite, 403, "FORBIDDEN"},
		{"empty form to acquire", "POST", "/v1/keys/acquire?ttl=1h", "application/x-www-form-urlencoded", "", crossSite, 403, "FORBIDDEN"},
		{"no-cors fetch to acquire", "POST", "/v1/keys/acquire?ttl=1h", "", "", crossSite, 403, "FORBIDDEN"},
		{"form to unblock", "POST", "/v1/keys/KNOWN/unblock", "application/x-www-form-urlencoded", "", crossSite, 403, "FORBIDDEN"},
		{"form to keepalive", "POST", "/v1/keys/KNOWN/keepalive", "text/plain", "", crossSite, 403, "FORBIDDEN"},
		{"delete", "DELETE", "/v1/keys/KNOWN", "", "", crossSite, 403, "FORBIDDEN"},
		{"JSON from another origin", "POST", "/v1/keys", "application/json", `{"count":3}`, map[string]string{"Origin": evilOrigin}, 403, "FORBIDDEN"},
		{"cross-site without Origin", "POST", "/v1/keys", "application/json", `{"count":3}`, map[string]string{"Sec-Fetch-Site": "cross-site"}, 403, "FORBIDDEN"},
		{"same-site, another port", "POST", "/v1/keys", "", "", map[string]string{"Origin": "http://127.0.0.1:1", "Sec-Fetch-Site": "same-site"}, 403, "FORBIDDEN"},
		{"opaque origin", "POST", "/v1/keys", "", "", map[string]string{"Origin": "null"}, 403, "FORBIDDEN"},
		{"origin of a sandboxed page", "POST", "/v1/keys/acquire", "", "", map[string]string{"Origin": "null", "Sec-Fetch-Site": "cross-site"}, 403, "FORBIDDEN"},
		// …and as a browser that sends neither Origin nor Sec-Fetch-Site.
		{"old browser, text/plain JSON", "POST", "/v1/keys", "text/plain", `{"count":3}`, oldBrowser, 415, "UNSUPPORTED_MEDIA_TYPE"},
		{"old browser, text/plain with charset", "POST", "/v1/keys", "text/plain; charset=utf-8", `{"count":3}`, oldBrowser, 415, "UNSUPPORTED_MEDIA_TYPE"},
		{"old browser, form", "POST", "/v1/keys", "application/x-www-form-urlencoded", "count=3", oldBrowser, 415, "UNSUPPORTED_MEDIA_TYPE"},
		{"old browser, empty form to acquire", "POST", "/v1/keys/acquire?ttl=1h", "application/x-www-form-urlencoded", "", oldBrowser, 415, "UNSUPPORTED_MEDIA_TYPE"},
		{"old browser, multipart", "POST", "/v1/keys", "multipart/form-data; boundary=b", "--b\r\nContent-Disposition: form-data; name=\"count\"\r\n\r\n3\r\n--b--\r\n", oldBrowser, 415, "UNSUPPORTED_MEDIA_TYPE"},
		{"old browser, form to unblock", "POST", "/v1/keys/KNOWN/unblock", "application/x-www-form-urlencoded", "token=", oldBrowser, 415, "UNSUPPORTED_MEDIA_TYPE"},
		{"body without a content type", "POST", "/v1/keys", "", `{"count":3}`, oldBrowser, 415, "UNSUPPORTED_MEDIA_TYPE"},
		{"bad content type", "POST", "/v1/keys", "application/json; ===", `{"count":3}`, oldBrowser, 415, "UNSUPPORTED_MEDIA_TYPE"},

		// GraphQL: a cross-site page cannot mutate, whatever it sends.
		{"graphql JSON from another site", "POST", "/graphql", "application/json", generate, crossSite, 403, "FORBIDDEN"},
		{"graphql text/plain from another site", "POST", "/graphql", "text/plain", generate, crossSite, 403, "FORBIDDEN"},
		{"graphql form from another site", "POST", "/graphql", "application/x-www-form-urlencoded", "query=mutation+%7B+generateKeys(count%3A+3)+%7B+id+%7D+%7D", crossSite, 403, "FORBIDDEN"},
		{"graphql SSE from another site", "POST", "/graphql", "text/plain", generate, map[string]string{"Origin": evilOrigin, "Sec-Fetch-Site": "cross-site", "Accept": "text/event-stream"}, 403, "FORBIDDEN"},
		{"graphql JSON from another origin", "POST", "/graphql", "application/json", generate, map[string]string{"Origin": evilOrigin}, 403, "FORBIDDEN"},
		{"graphql mutation over GET from another site", "GET", "/graphql?query=" + url.QueryEscape(`mutation { generateKeys(count: 3) { id } }`), "", "", crossSite, 0, ""},
		{"graphql text/plain, old browser", "POST", "/graphql", "text/plain", generate, oldBrowser, 0, ""},
		{"graphql form, old browser", "POST", "/graphql", "application/x-www-form-urlencoded", "query=mutation+%7B+generateKeys(count%3A+3)+%7B+id+%7D+%7D", oldBrowser, 0, ""},
		{"graphql SSE text/plain, old browser", "POST", "/graphql", "text/plain", generate, map[string]string{"Accept": "text/event-stream"}, 0, ""},
	}
	for _, c := range refused {
		t.Run(c.name, func(t *testing.T) {
			before := h.snapshot(t)
			status, body := h.send(t, c)
			if c.status != 0 {
				require.Equal(t, c.status, status, "body %.300s", body)
				assert.Equal(t, c.code, errorCode(t, body), "body %.300s", body)
			} else {
				require.GreaterOrEqual(t, status, 400, "refused: %.300s", body)
				require.Less(t, status, 500, "never a 5xx: %.300s", body)
			}
			h.checkAfter(t, before)
		})
	}

	// What keeps working: scripts, curl's defaults, same-origin pages (GraphiQL, the
	// dashboard), and reads from anywhere.
	self := map[string]string{"Origin": h.url, "Sec-Fetch-Site": "same-origin", "Sec-Fetch-Mode": "cors"}
	for _, c := range []edgeCase{
		{"script, JSON", "POST", "/v1/keys", "application/json", `{"count":1}`, nil, 201, ""},
		{"script, JSON with charset", "POST", "/v1/keys", "application/json; charset=utf-8", `{"count":1}`, nil, 201, ""},
		{"script, no body", "POST", "/v1/keys", "", "", nil, 201, ""},
		{"curl -d, JSON sent as a form", "POST", "/v1/keys", "application/x-www-form-urlencoded", `{"count":1}`, nil, 201, ""},
		{"curl -d, JSON after white space", "POST", "/v1/keys", "application/x-www-form-urlencoded", " \r\n\t{\"count\":1}", nil, 201, ""},
		{"same-origin page", "POST", "/v1/keys", "application/json", `{"count":1}`, self, 201, ""},
		{"same-origin page, graphql", "POST", "/graphql", "application/json", `{"query":"mutation { generateKeys(count: 1) { id } }"}`, self, 200, ""},
		{"a user typing the address", "POST", "/v1/keys", "", "", map[string]string{"Sec-Fetch-Site": "none"}, 201, ""},
		{"read from another site", "GET", "/v1/stats", "", "", crossSite, 200, ""},
		{"graphql query from another site", "GET", "/graphql?query=%7Bstats%7Btotal%7D%7D", "", "", crossSite, 200, ""},
	} {
		t.Run("allowed/"+c.name, func(t *testing.T) {
			status, body := h.send(t, c)
			require.Equal(t, c.status, status, "body %.300s", body)
			assert.NotContains(t, string(body), `"error`)
		})
	}
}

// TestCrossSiteFromAllowedOrigins: an origin in -cors-origins may change the pool from
// its pages (its non-simple requests are preflighted and allowed); others may not.
func TestCrossSiteFromAllowedOrigins(t *testing.T) {
	s := startServer(t, "-cors-origins", "https://app.example.com")
	h := &hostile{server: s, client: &http.Client{Timeout: hostileTimeout}}
	allowed := map[string]string{"Origin": "https://app.example.com", "Sec-Fetch-Site": "cross-site", "Sec-Fetch-Mode": "cors"}
	status, body := h.send(t, edgeCase{method: "POST", path: "/v1/keys", contentType: "application/json", body: `{"count":2}`, header: allowed})
	require.Equal(t, 201, status, "%s", body)
	status, body = h.send(t, edgeCase{method: "POST", path: "/graphql", contentType: "application/json", body: `{"query":"mutation { acquireKey { token } }"}`, header: allowed})
	require.Equal(t, 200, status, "%s", body)
	assert.NotContains(t, string(body), `"errors"`)

	status, body = h.send(t, edgeCase{method: "POST", path: "/v1/keys", contentType: "application/json", body: `{"count":2}`, header: crossSite})
	require.Equal(t, 403, status)
	assert.Equal(t, "FORBIDDEN", errorCode(t, body))
	assert.JSONEq(t, `{"total":2,"available":1,"blocked":1}`, s.stats(t))
}

// rebound are the headers of a request from a page at http://rebind.example:PORT/
// after its DNS name was rebound to keypool's address: to the browser it is
// same-origin, so it sends no preflight and passes the Origin check.
func rebound(h *hostile, extra map[string]string) map[string]string {
	u, _ := url.Parse(h.url)
	headers := map[string]string{"Host": "rebind.example:" + u.Port(), "Origin": "http://rebind.example:" + u.Port(), "Sec-Fetch-Site": "same-origin"}
	for k, v := range extra {
		headers[k] = v
	}
	return headers
}

// TestDNSRebinding: a page served from a DNS name that was rebound to keypool's address
// cannot read or change the pool, over HTTP or a websocket; names keypool is reached by
// (loopback, IP addresses, this machine's name, -allowed-hosts) work.
func TestDNSRebinding(t *testing.T) {
	h := startHostile(t)
	for _, c := range []edgeCase{
		{"generate", "POST", "/v1/keys", "application/json", `{"count":3}`, rebound(h, nil), 403, "FORBIDDEN"},
		{"acquire", "POST", "/v1/keys/acquire?ttl=1h", "", "", rebound(h, nil), 403, "FORBIDDEN"},
		{"read a key", "GET", "/v1/keys/KNOWN", "", "", rebound(h, map[string]string{"Origin": ""}), 403, "FORBIDDEN"},
		{"graphql mutation", "POST", "/graphql", "application/json", `{"query":"mutation { generateKeys(count: 3) { id } }"}`, rebound(h, nil), 403, "FORBIDDEN"},
		{"graphql SSE", "POST", "/graphql", "application/json", `{"query":"subscription { keyEvents { keyId } }"}`, rebound(h, map[string]string{"Accept": "text/event-stream"}), 403, "FORBIDDEN"},
		{"the playground", "GET", "/", "", "", rebound(h, map[string]string{"Origin": "", "Sec-Fetch-Site": "none"}), 403, "FORBIDDEN"},
	} {
		t.Run(c.name, func(t *testing.T) {
			before := h.snapshot(t)
			status, body := h.send(t, c)
			require.Equal(t, c.status, status, "body %.300s", body)
			assert.Equal(t, c.code, errorCode(t, body))
			assert.Contains(t, string(body), "-allowed-hosts", "the refusal says how to allow the name")
			h.checkAfter(t, before)
		})
	}
	t.Run("websocket", func(t *testing.T) {
		header := http.Header{}
		for k, v := range rebound(h, nil) {
			header.Set(k, v)
		}
		ctx, cancel := context.WithTimeout(context.Background(), hostileTimeout)
		defer cancel()
		conn, res, err := dialWebsocket(ctx, h.wsURL(), websocket.DialOptions{
			Subprotocols: []string{transportWS}, HTTPHeader: header, Host: header.Get("Host")})
		if conn != nil {
			conn.CloseNow()
		}
		require.Error(t, err, "a rebound page opened a websocket: it would read every key id from keyEvents")
		require.NotNil(t, res)
		assert.Equal(t, http.StatusForbidden, res.StatusCode)
	})

	u, _ := url.Parse(h.url)
	port := u.Port()
	hostname, err := os.Hostname()
	require.NoError(t, err)
	for _, host := range []string{"localhost", "127.0.0.1", "[::1]", "app.localhost", "192.0.2.7", "[2001:db8::1]", strings.ToLower(hostname)} {
		t.Run("allowed/"+host, func(t *testing.T) {
			origin := "http://" + host + ":" + port
			status, body := h.send(t, edgeCase{method: "POST", path: "/v1/keys", contentType: "application/json", body: `{"count":1}`,
				header: map[string]string{"Host": host + ":" + port, "Origin": origin, "Sec-Fetch-Site": "same-origin"}})
			require.Equal(t, 201, status, "%s", body)

			ctx, cancel := context.WithTimeout(context.Background(), hostileTimeout)
			defer cancel()
			conn, _, err := dialWebsocket(ctx, h.wsURL(), websocket.DialOptions{
				Subprotocols: []string{transportWS}, HTTPHeader: http.Header{"Origin": {origin}}, Host: host + ":" + port})
			require.NoError(t, err)
			conn.CloseNow()
		})
	}
	t.Run("allowed/not a browser", func(t *testing.T) {
		status, body := h.send(t, edgeCase{method: "GET", path: "/v1/stats", header: map[string]string{"Host": "keypool.docker.internal:" + port}})
		require.Equal(t, 200, status, "scripts may use any name: %s", body)
	})

	for _, allow := range []string{"rebind.example", "*.example", "*"} {
		t.Run("flag/"+allow, func(t *testing.T) {
			s := startServer(t, "-allowed-hosts", allow)
			h := &hostile{server: s, client: &http.Client{Timeout: hostileTimeout}}
			status, body := h.send(t, edgeCase{method: "POST", path: "/v1/keys", contentType: "application/json", body: `{"count":1}`, header: rebound(h, nil)})
			require.Equal(t, 201, status, "%s", body)
		})
	}
	t.Run("env", func(t *testing.T) {
		cfg, err := parseConfig(nil, envOf(map[string]string{"KEYPOOL_ALLOWED_HOSTS": "rebind.example"}), io.Discard)
		require.NoError(t, err)
		assert.True(t, cfg.AllowedHosts.Allows("rebind.example:8080"))
		assert.False(t, cfg.AllowedHosts.Allows(strings.ToLower(hostname)), "the list replaces the default names")
		assert.True(t, cfg.AllowedHosts.Allows("localhost:8080"), "loopback is always allowed")
	})
}

// slowBody opens a connection to addr, sends head, then one byte of body every
// interval, until the server answers or hangs up; it returns what the server answered
// and how long after the head it did.
func slowBody(t *testing.T, addr, head string, interval time.Duration) (string, time.Duration) {
	t.Helper()
	conn, err := net.DialTimeout("tcp", addr, hostileTimeout)
	require.NoError(t, err)
	defer conn.Close()
	require.NoError(t, conn.SetDeadline(time.Now().Add(hostileTimeout)))
	_, err = conn.Write([]byte(head))
	require.NoError(t, err)
	start := time.Now()
	stop := make(chan struct{})
	defer close(stop)
	go func() {
		tick := time.NewTicker(interval)
		defer tick.Stop()
		for {
			select {
			case <-stop:
				return
			case <-tick.C:
				if _, err := conn.Write([]byte(" ")); err != nil {
					return
				}
			}
		}
	}()
	answer, err := bufio.NewReader(conn).ReadString('\n')
	require.False(t, isTimeout(err), "the slow client was never cut")
	return answer, time.Since(start)
}

// TestSlowClientsAreCut: a client that sends its body a byte at a time, or its headers,
// or nothing at all between requests, is cut after -read-timeout (or -idle-timeout);
// SSE and websocket subscriptions and waiting acquires, which read nothing for longer,
// live on.
func TestSlowClientsAreCut(t *testing.T) {
	const readTimeout = 300 * time.Millisecond
	s := startServer(t, "-read-timeout", readTimeout.String(), "-idle-timeout", readTimeout.String())
	addr := strings.TrimPrefix(s.url, "http://")

	// Streams opened first, so that they outlive every cut below.
	streamsOpened := time.Now()
	ws := s.subscribe(t, `subscription { keyEvents(types: [GENERATED]) { keyId } }`)
	sse := openSSE(t, s, `subscription { keyEvents(types: [GENERATED]) { keyId } }`)
	waited := make(chan int, 1)
	go func() {
		res, err := http.Post(s.url+"/v1/keys/acquire?wait=1s", "", nil)
		if err != nil {
			waited <- 0
			return
		}
		res.Body.Close()
		waited <- res.StatusCode
	}()

	// Each slow client is cut within the bound (with a generous margin), and the one
	// after it starts only then: together they outlast the bound three times over.
	for _, c := range []struct{ name, head string }{
		{"rest body", "POST /v1/keys HTTP/1.1\r\nHost: " + addr + "\r\nContent-Type: application/json\r\nContent-Length: 100000\r\n\r\n{"},
		{"graphql body", "POST /graphql HTTP/1.1\r\nHost: " + addr + "\r\nContent-Type: application/json\r\nContent-Length: 100000\r\n\r\n{"},
		{"headers", "GET /v1/stats HTTP/1.1\r\nHost: " + addr + "\r\nX-Slow: "},
	} {
		answer, took := slowBody(t, addr, c.head, readTimeout/10)
		assert.Less(t, took, readTimeout+5*time.Second, "%s: cut late", c.name)
		assert.GreaterOrEqual(t, took, readTimeout/2, "%s: cut before the bound", c.name)
		assert.NotContains(t, answer, " 5", "%s: never a 5xx: %q", c.name, answer)
	}
	// The server closes idle connections after a short -idle-timeout here: a POST on a
	// pooled connection it is closing would be reset, and POSTs are not retried.
	http.DefaultClient.CloseIdleConnections()
	assert.JSONEq(t, `{"total":0,"available":0,"blocked":0}`, s.stats(t), "no slow body was acted on")

	// An idle keep-alive connection is closed after -idle-timeout.
	conn, err := net.DialTimeout("tcp", addr, hostileTimeout)
	require.NoError(t, err)
	defer conn.Close()
	require.NoError(t, conn.SetDeadline(time.Now().Add(hostileTimeout)))
	_, err = conn.Write([]byte("GET /healthz HTTP/1.1\r\nHost: " + addr + "\r\n\r\n"))
	require.NoError(t, err)
	res, err := http.ReadResponse(bufio.NewReader(conn), nil)
	require.NoError(t, err)
	require.Equal(t, 200, res.StatusCode)
	idleSince := time.Now()
	_, err = conn.Read(make([]byte, 1024))
	require.False(t, isTimeout(err), "an idle connection was kept")
	assert.Less(t, time.Since(idleSince), readTimeout+5*time.Second)

	require.Greater(t, time.Since(streamsOpened), 3*readTimeout)
	assert.Equal(t, http.StatusNotFound, <-waited, "a waiting acquire is answered at the end of its wait, not cut")
	var gen struct{ GenerateKeys []struct{ ID string } }
	http.DefaultClient.CloseIdleConnections() // see above
	s.mustPost(t, `mutation { generateKeys(count: 1) { id } }`, nil, &gen)
	id := gen.GenerateKeys[0].ID
	assert.Equal(t, id, readEvent(t, ws).KeyID, "the websocket subscription lives on")
	assert.Equal(t, id, sse.next(t), "the SSE stream lives on")
}

// sseStream is an open SSE subscription.
type sseStream struct{ lines *bufio.Reader }

func openSSE(t *testing.T, s *server, query string) *sseStream {
	t.Helper()
	body, _ := json.Marshal(map[string]string{"query": query})
	req, err := http.NewRequest("POST", s.url+"/graphql", strings.NewReader(string(body)))
	require.NoError(t, err)
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("Accept", "text/event-stream")
	res, err := http.DefaultClient.Do(req)
	require.NoError(t, err)
	t.Cleanup(func() { res.Body.Close() })
	require.Equal(t, http.StatusOK, res.StatusCode)
	return &sseStream{lines: bufio.NewReader(res.Body)}
}

// next returns the keyId of the stream's next event.
func (s *sseStream) next(t *testing.T) string {
	t.Helper()
	done := make(chan string, 1)
	go func() {
		for {
			line, err := s.lines.ReadString('\n')
			if err != nil {
				done <- "stream ended: " + err.Error()
				return
			}
			data, ok := strings.CutPrefix(line, "data: ")
			if !ok {
				continue
			}
			var p struct {
				Data struct{ KeyEvents struct{ KeyID string } }
			}
			if json.Unmarshal([]byte(data), &p) == nil && p.Data.KeyEvents.KeyID != "" {
				done <- p.Data.KeyEvents.KeyID
				return
			}
		}
	}()
	select {
	case id := <-done:
		return id
	case <-time.After(hostileTimeout):
		t.Fatal("no SSE event")
		return ""
	}
}
