package middleware_test

import (
	"encoding/json"
	"github.com/keypool/keypool/keystore"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"strings"
	"testing"

	"github.com/keypool/keypool/middleware"
)

func TestParseHosts(t *testing.T) {
	h, err := middleware.ParseHosts(" Keypool.LAN. , *.Example.com,, 10.0.0.7")
	if err != nil {
		t.Fatal(err)
	}
	if h.String() != "keypool.lan,10.0.0.7,*.example.com" {
		t.Fatalf("parsed %q", h.String())
	}
	for host, want := range map[string]bool{
		"keypool.lan":            true,
		"KEYPOOL.LAN:8080":       true,
		"keypool.lan.:8080":      true,
		"a.b.example.com":        true,
		"example.com":            false, // *.example.com is for names under it
		"evilexample.com":        false,
		"keypool.lan.evil.com":   false,
		"rebind.example:8080":    false,
		"localhost:8080":         true, // always
		"LocalHost.":             true,
		"app.localhost:3000":     true,
		"127.0.0.1:8080":         true,
		"192.0.2.1":              true,
		"[::1]:8080":             true,
		"[2001:db8::1]":          true,
		"":                       false,
		"localhost.evil.example": false,
	} {
		if got := h.Allows(host); got != want {
			t.Errorf("Allows(%q) = %v, want %v", host, got, want)
		}
	}
	if any, _ := middleware.ParseHosts("*"); !any.Allows("anything.example:1") || any.String() != "*" {
		t.Fatal("* does not allow every host")
	}
	if (middleware.Hosts{}).Allows("rebind.example") || !(middleware.Hosts{}).Allows("127.0.0.1:1") {
		t.Fatal("the zero value allows loopback and IP addresses only")
	}
	for _, bad := range []string{"http://keypool.lan", "keypool.lan:8080", "keypool.lan/x", "a b", "*.", "*x.example", "user@host", "::zz"} {
		if _, err := middleware.ParseHosts(bad); err == nil {
			t.Errorf("%q accepted", bad)
		}
	}
	var flagValue middleware.Hosts
	if err := flagValue.Set("a.example"); err != nil || !flagValue.Allows("a.example") {
		t.Fatalf("Set: %v", err)
	}
	if err := flagValue.Set("http://nope"); err == nil {
		t.Fatal("Set accepted a URL")
	}
}

func TestDefaultHosts(t *testing.T) {
	h := middleware.DefaultHosts()
	name, err := os.Hostname()
	name = strings.ToLower(name)
	if err != nil {
		t.Skip("no host name:", err)
	}
	if !h.Allows(name+":8080") || !h.Allows("localhost:8080") || h.Allows("rebind.example") {
		t.Fatalf("defaults %q", h.String())
	}
	if !strings.Contains(name, ".") && !h.Allows(name+".local") {
		t.Fatalf("defaults %q lack the mDNS name", h.String())
	}
}

// guarded is what the server mounts, in miniature: Browsers in front of every route,
// JSONBodies in front of the REST ones.
func guarded(hosts middleware.Hosts, origins middleware.Origins) http.Handler {
	route := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(r.Body)
		w.Write([]byte("served:" + string(body)))
	})
	mux := http.NewServeMux()
	mux.Handle("/v1/", middleware.JSONBodies(middleware.RESTError, route))
	mux.Handle("/graphql", route)
	refuse := func(w http.ResponseWriter, r *http.Request, status int, code keystore.Code, message string) {
		if r.URL.Path == "/graphql" {
			middleware.GraphQLError(w, r, status, code, message)
		} else {
			middleware.RESTError(w, r, status, code, message)
		}
	}
	return middleware.Browsers(hosts, origins, refuse, mux)
}

type browserCase struct {
	name, method, target, contentType, body string
	header                                  map[string]string
	status                                  int
	code                                    string
}

func (c browserCase) serve(t *testing.T, h http.Handler) *httptest.ResponseRecorder {
	t.Helper()
	r := httptest.NewRequest(c.method, c.target, strings.NewReader(c.body))
	if c.body == "" {
		r.Body, r.ContentLength = http.NoBody, 0
	}
	if c.contentType != "" {
		r.Header.Set("Content-Type", c.contentType)
	}
	for k, v := range c.header {
		if k == "Host" {
			r.Host = v
		} else {
			r.Header.Set(k, v)
		}
	}
	w := httptest.NewRecorder()
	h.ServeHTTP(w, r)
	return w
}

func TestBrowsersAndJSONBodies(t *testing.T) {
	origins, _ := middleware.ParseOrigins("https://app.example.com")
	hosts, _ := middleware.ParseHosts("keypool.internal")
	h := guarded(hosts, origins)
	const self = "http://keypool.internal"
	evil := map[string]string{"Origin": "https://evil.example", "Sec-Fetch-Site": "cross-site"}
	for _, c := range []browserCase{
		// Scripts.
		{"script JSON", "POST", "http://keypool.internal/v1/keys", "application/json", `{"count":1}`, nil, 200, ""},
		{"script +json", "POST", "http://keypool.internal/v1/keys", "application/merge-patch+json", `{}`, nil, 200, ""},
		{"script no body", "POST", "http://keypool.internal/v1/keys/acquire", "", "", nil, 200, ""},
		{"curl -d JSON", "POST", "http://keypool.internal/v1/keys", "application/x-www-form-urlencoded", `{"count":1}`, nil, 200, ""},
		{"curl -d JSON array", "POST", "http://keypool.internal/v1/keys", "application/x-www-form-urlencoded", `[1]`, nil, 200, ""},
		{"curl -d form", "POST", "http://keypool.internal/v1/keys", "application/x-www-form-urlencoded", `count=1`, nil, 415, "UNSUPPORTED_MEDIA_TYPE"},
		{"curl -d empty", "POST", "http://keypool.internal/v1/keys", "application/x-www-form-urlencoded", ``, nil, 415, "UNSUPPORTED_MEDIA_TYPE"},
		{"white space only", "POST", "http://keypool.internal/v1/keys", "application/x-www-form-urlencoded", strings.Repeat(" ", 5000) + "{}", nil, 415, "UNSUPPORTED_MEDIA_TYPE"},
		{"text/plain", "POST", "http://keypool.internal/v1/keys", "text/plain", `{"count":1}`, nil, 415, "UNSUPPORTED_MEDIA_TYPE"},
		{"multipart", "POST", "http://keypool.internal/v1/keys", "multipart/form-data; boundary=x", "--x--", nil, 415, "UNSUPPORTED_MEDIA_TYPE"},
		{"no type, a body", "DELETE", "http://keypool.internal/v1/keys/k", "", `{}`, nil, 415, "UNSUPPORTED_MEDIA_TYPE"},
		{"bad type", "PUT", "http://keypool.internal/v1/keys/k", "application/json;;", `{}`, nil, 415, "UNSUPPORTED_MEDIA_TYPE"},
		{"GET with a body of any type", "GET", "http://keypool.internal/v1/stats", "text/plain", `x`, nil, 200, ""},
		{"graphql bodies are gqlgen's to judge", "POST", "http://keypool.internal/graphql", "text/plain", `x`, nil, 200, ""},
		{"any host for scripts", "POST", "http://rebind.example/v1/keys", "application/json", `{}`, nil, 200, ""},

		// Browsers.
		{"same origin", "POST", "http://keypool.internal/v1/keys", "application/json", `{}`, map[string]string{"Origin": self, "Sec-Fetch-Site": "same-origin"}, 200, ""},
		{"same origin behind TLS", "POST", "http://keypool.internal/v1/keys", "application/json", `{}`, map[string]string{"Origin": "https://keypool.internal"}, 200, ""},
		{"typed address", "POST", "http://keypool.internal/v1/keys", "", "", map[string]string{"Sec-Fetch-Site": "none"}, 200, ""},
		{"allowed origin", "POST", "http://keypool.internal/v1/keys", "application/json", `{}`, map[string]string{"Origin": "https://app.example.com", "Sec-Fetch-Site": "cross-site"}, 200, ""},
		{"allowed origin, graphql", "POST", "http://keypool.internal/graphql", "application/json", `{}`, map[string]string{"Origin": "https://app.example.com"}, 200, ""},
		{"cross-site read", "GET", "http://keypool.internal/v1/stats", "", "", evil, 200, ""},
		{"cross-site preflight", "OPTIONS", "http://keypool.internal/v1/keys", "", "", evil, 200, ""},
		{"cross-site POST", "POST", "http://keypool.internal/v1/keys", "application/json", `{}`, evil, 403, "FORBIDDEN"},
		{"cross-site DELETE", "DELETE", "http://keypool.internal/v1/keys/k", "", "", evil, 403, "FORBIDDEN"},
		{"cross-site PATCH", "PATCH", "http://keypool.internal/v1/keys/k", "", "", evil, 403, "FORBIDDEN"},
		{"cross-site, unknown method", "PURGE", "http://keypool.internal/v1/keys/k", "", "", evil, 403, "FORBIDDEN"},
		{"cross-site graphql", "POST", "http://keypool.internal/graphql", "application/json", `{}`, evil, 403, "FORBIDDEN"},
		{"same-site", "POST", "http://keypool.internal/v1/keys", "", "", map[string]string{"Origin": "http://keypool.internal:3000", "Sec-Fetch-Site": "same-site"}, 403, "FORBIDDEN"},
		{"Sec-Fetch-Site alone", "POST", "http://keypool.internal/v1/keys", "", "", map[string]string{"Sec-Fetch-Site": "cross-site"}, 403, "FORBIDDEN"},
		{"Origin alone", "POST", "http://keypool.internal/v1/keys", "", "", map[string]string{"Origin": "https://evil.example"}, 403, "FORBIDDEN"},
		{"null Origin", "POST", "http://keypool.internal/v1/keys", "", "", map[string]string{"Origin": "null"}, 403, "FORBIDDEN"},
		{"unparsable Origin", "POST", "http://keypool.internal/v1/keys", "", "", map[string]string{"Origin": "%%"}, 403, "FORBIDDEN"},
		{"Origin lies, Sec-Fetch-Site tells", "POST", "http://keypool.internal/v1/keys", "", "", map[string]string{"Origin": self, "Sec-Fetch-Site": "cross-site"}, 403, "FORBIDDEN"},
		{"rebound host", "POST", "http://rebind.example/v1/keys", "application/json", `{}`, map[string]string{"Origin": "http://rebind.example", "Sec-Fetch-Site": "same-origin"}, 403, "FORBIDDEN"},
		{"rebound host, a read", "GET", "http://rebind.example/v1/stats", "", "", map[string]string{"Sec-Fetch-Site": "same-origin", "Sec-Fetch-Mode": "cors"}, 403, "FORBIDDEN"},
		{"rebound host, graphql", "GET", "http://rebind.example/graphql", "", "", map[string]string{"Sec-Fetch-Mode": "websocket"}, 403, "FORBIDDEN"},
		{"listed host", "POST", "http://keypool.internal:8080/v1/keys", "", "", map[string]string{"Origin": "http://keypool.internal:8080", "Sec-Fetch-Site": "same-origin"}, 200, ""},
		{"loopback", "POST", "http://localhost:8080/v1/keys", "", "", map[string]string{"Origin": "http://localhost:8080", "Sec-Fetch-Site": "same-origin"}, 200, ""},
		{"IP address", "POST", "http://10.1.2.3:8080/v1/keys", "", "", map[string]string{"Origin": "http://10.1.2.3:8080", "Sec-Fetch-Site": "same-origin"}, 200, ""},
	} {
		t.Run(c.name, func(t *testing.T) {
			w := c.serve(t, h)
			if w.Code != c.status {
				t.Fatalf("status %d, want %d: %s", w.Code, c.status, w.Body)
			}
			if c.code == "" {
				if !strings.HasPrefix(w.Body.String(), "served:") {
					t.Fatalf("not served: %s", w.Body)
				}
				return
			}
			if ct := w.Header().Get("Content-Type"); !strings.HasPrefix(ct, "application/json") {
				t.Errorf("Content-Type %q", ct)
			}
			var rest struct {
				Error struct{ Code, Message string }
			}
			var gql struct {
				Errors []struct {
					Message    string
					Extensions struct{ Code string }
				}
			}
			if strings.HasSuffix(c.target, "/graphql") {
				if err := json.Unmarshal(w.Body.Bytes(), &gql); err != nil || len(gql.Errors) != 1 || gql.Errors[0].Extensions.Code != c.code || gql.Errors[0].Message == "" {
					t.Fatalf("GraphQL error shape: %s", w.Body)
				}
			} else if err := json.Unmarshal(w.Body.Bytes(), &rest); err != nil || rest.Error.Code != c.code || rest.Error.Message == "" {
				t.Fatalf("REST error shape: %s", w.Body)
			}
		})
	}
}

// A chunked body (unknown length) with no content type is looked at: empty passes,
// anything else is refused.
func TestJSONBodiesChunkedWithoutType(t *testing.T) {
	h := middleware.JSONBodies(middleware.RESTError, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(r.Body)
		w.Write([]byte("served:" + string(body)))
	}))
	for body, want := range map[string]int{"": 200, "\n": 200, "{}": 415} {
		r := httptest.NewRequest("POST", "/v1/keys/acquire", io.NopCloser(strings.NewReader(body)))
		r.ContentLength = -1
		w := httptest.NewRecorder()
		h.ServeHTTP(w, r)
		if w.Code != want {
			t.Errorf("chunked body %q: %d %s", body, w.Code, w.Body)
		}
	}
	// What was looked at is handed on whole.
	r := httptest.NewRequest("POST", "/v1/keys", strings.NewReader(" {\"count\":2}"))
	r.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	w := httptest.NewRecorder()
	h.ServeHTTP(w, r)
	if w.Body.String() != "served: {\"count\":2}" {
		t.Fatalf("body handed on as %q", w.Body)
	}
}
