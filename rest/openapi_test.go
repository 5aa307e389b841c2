package rest_test

import (
	"bytes"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/keypool/keypool/rest"
	"github.com/keypool/keypool/rest/resttest"
)

// TestOpenAPIServed: GET /v1/openapi.json answers the embedded document, which the
// validator's own lint accepts (resttest.Load fails on any error in it).
func TestOpenAPIServed(t *testing.T) {
	if _, err := resttest.Load(); err != nil {
		t.Fatal(err)
	}
	p := newPool(t)
	w := p.do("GET", "/v1/openapi.json", "")
	if w.Code != 200 || w.Header().Get("Content-Type") != "application/json" || !bytes.Equal(w.Body.Bytes(), rest.OpenAPI()) {
		t.Fatalf("%d %q, %d bytes", w.Code, w.Header().Get("Content-Type"), w.Body.Len())
	}
	var doc struct {
		OpenAPI string
		Paths   map[string]map[string]json.RawMessage
	}
	if err := json.Unmarshal(w.Body.Bytes(), &doc); err != nil || doc.OpenAPI != "3.0.3" {
		t.Fatalf("openapi %q: %v", doc.OpenAPI, err)
	}
	if w := p.do("HEAD", "/v1/openapi.json", ""); w.Code != 200 {
		t.Fatalf("HEAD: %d", w.Code)
	}
	w = p.do("PUT", "/v1/openapi.json", "{}")
	expect[errorBody](t, w, 405, "METHOD_NOT_ALLOWED")
	if allow := w.Header().Get("Allow"); allow != "GET, HEAD" {
		t.Fatalf("Allow %q", allow)
	}
}

// TestOpenAPIIndependentLint runs a second, independent validator over the served
// document: the Python openapi-spec-validator (a checker against the OpenAPI
// specification's own JSON Schema), which this project's machine image ships.
func TestOpenAPIIndependentLint(t *testing.T) {
	bin, err := exec.LookPath("openapi-spec-validator")
	if err != nil {
		t.Skip("openapi-spec-validator is not installed (pip install openapi-spec-validator); kin-openapi's lint still runs in TestOpenAPIServed")
	}
	w := newPool(t).do("GET", "/v1/openapi.json", "")
	file := filepath.Join(t.TempDir(), "openapi.json")
	if err := os.WriteFile(file, w.Body.Bytes(), 0o644); err != nil {
		t.Fatal(err)
	}
	out, err := exec.CommandContext(t.Context(), bin, "--schema", "3.0", file).CombinedOutput()
	if err != nil || !strings.Contains(string(out), ": OK") {
		t.Fatalf("openapi-spec-validator: %v\n%s", err, out)
	}
}

// TestOpenAPIOperationsServed: every operation of the document reaches a handler of
// its route (it is neither a 404 for no route nor a 405), so the document names no
// route that the server lacks. The converse, a route the server has and the
// document lacks, fails resttest's check on any test that calls it.
func TestOpenAPIOperationsServed(t *testing.T) {
	v, err := resttest.Load()
	if err != nil {
		t.Fatal(err)
	}
	p := newPool(t)
	id := p.generate(1)[0].ID
	handlers := map[string]http.Handler{
		"/healthz": rest.Healthz(),
		"/readyz":  rest.Readyz(p.store, "memory", nil),
	}
	for path, item := range v.Document().Paths.Map() {
		for method := range item.Operations() {
			target := strings.ReplaceAll(path, "{id}", id)
			t.Run(method+" "+path, func(t *testing.T) {
				h, ok := handlers[path]
				if !ok {
					h = p.handler
				}
				w := httptest.NewRecorder()
				resttest.Handler(t, h).ServeHTTP(w, httptest.NewRequest(method, target, nil))
				var e errorBody
				json.Unmarshal(w.Body.Bytes(), &e)
				if w.Code == 405 || w.Code == 404 && strings.HasPrefix(e.Error.Message, "no such route") {
					t.Fatalf("%s %s: %d %s", method, target, w.Code, w.Body)
				}
			})
		}
	}
}

// TestHealthMethods: the operations routes answer a wrong method in the JSON error
// shape with Allow, as /v1 does (net/http's own 405 is plain text).
func TestHealthMethods(t *testing.T) {
	p := newPool(t)
	for path, h := range map[string]http.Handler{"/healthz": rest.Healthz(), "/readyz": rest.Readyz(p.store, "memory", nil)} {
		for _, method := range []string{"POST", "PUT", "DELETE", "PATCH"} {
			w := httptest.NewRecorder()
			resttest.Handler(t, h).ServeHTTP(w, httptest.NewRequest(method, path, strings.NewReader(`{}`)))
			expect[errorBody](t, w, 405, "METHOD_NOT_ALLOWED")
			if allow := w.Header().Get("Allow"); allow != "GET, HEAD" {
				t.Fatalf("%s %s: Allow %q", method, path, allow)
			}
		}
		w := httptest.NewRecorder()
		resttest.Handler(t, h).ServeHTTP(w, httptest.NewRequest("HEAD", path, nil))
		if w.Code != 200 {
			t.Fatalf("HEAD %s: %d", path, w.Code)
		}
	}
}

// chunkedBody hides a body's length, as a chunked upload does.
type chunkedBody struct{ io.Reader }

// TestHostileAgainstDocument sends what a careless or hostile client may, through
// the document's validator (as every test of this package does): every answer must be
// one the document lists for its route, and every request the document refuses must
// be refused.
func TestHostileAgainstDocument(t *testing.T) {
	p := newPool(t)
	p.generate(2)
	l := p.acquire()
	before := p.stats()
	huge := strings.Repeat(" ", rest.MaxBodyBytes+1)
	key := "/v1/keys/" + l.Key.ID
	for _, c := range []struct {
		method, target, contentType, body string
		chunked                           bool
		status                            int
	}{
		// Oversized bodies, declared or not, on every route, even those that read none.
		{method: "POST", target: "/v1/keys", body: huge, chunked: true, status: 413},
		{method: "POST", target: "/v1/keys/acquire", body: huge, status: 413},
		{method: "POST", target: "/v1/keys/acquire", body: huge, chunked: true, status: 413},
		{method: "POST", target: key + "/keepalive", body: huge, chunked: true, status: 413},
		{method: "POST", target: key + "/renew", body: huge, chunked: true, status: 413},
		{method: "DELETE", target: key, body: huge, chunked: true, status: 413},
		{method: "GET", target: key, body: huge, status: 413},
		{method: "GET", target: "/v1/stats", body: huge, chunked: true, status: 413},
		{method: "GET", target: "/v1/openapi.json", body: huge, status: 413},
		{method: "POST", target: "/v1/nope", body: huge, status: 413},
		// Bodies that are not JSON, whatever they claim to be.
		{method: "POST", target: "/v1/keys", contentType: "application/json", body: "\xff\xfe", status: 400},
		{method: "POST", target: "/v1/keys", contentType: "text/plain", body: `count=3`, status: 400},
		{method: "POST", target: "/v1/keys", contentType: "application/json", body: `null`, status: 400},
		{method: "POST", target: key + "/unblock", contentType: "application/json", body: ` null `, status: 400},
		{method: "POST", target: "/v1/keys", contentType: "application/json", body: `{"count":null,"count":2,"x":1}`, status: 400},
		{method: "POST", target: "/v1/keys", contentType: "application/json", body: strings.Repeat("[", 100000), status: 400},
		{method: "POST", target: "/v1/keys", contentType: "application/json", body: `{"count":1e400}`, status: 400},
		{method: "POST", target: key + "/unblock", contentType: "application/json", body: `{"token":["x"]}`, status: 400},
		{method: "POST", target: key + "/unblock", contentType: "application/json", body: `{"Token":"x","token":"y","TOKEN":"z"}`, status: 409},
		{method: "POST", target: key + "/renew", contentType: "application/json", body: `{"token":""}`, status: 400},
		{method: "POST", target: key + "/renew", contentType: "application/json", body: `{"token":"` + l.Token + `","ttl":"1h1s"}`, status: 400},
		{method: "POST", target: key + "/renew", contentType: "application/json", body: `{"token":"` + l.Token + `","ttl":"-0s"}`, status: 400},
		{method: "POST", target: key + "/renew", contentType: "application/json", body: `{"token":"` + l.Token + `","ttl":"9999999999999h"}`, status: 400},
		// Durations and query strings.
		{method: "POST", target: "/v1/keys/acquire?ttl=-0s", status: 400},
		{method: "POST", target: "/v1/keys/acquire?wait=-0s", status: 400},
		{method: "POST", target: "/v1/keys/acquire?ttl=%FF", status: 400},
		{method: "POST", target: "/v1/keys/acquire?ttl=", status: 400},
		{method: "POST", target: "/v1/keys/acquire?wait=30.000000001s", status: 400},
		{method: "POST", target: "/v1/keys/acquire?ttl=1h0m0.000000001s", status: 400},
		{method: "POST", target: "/v1/keys/acquire?ttl=999.5ms", status: 400},
		{method: "POST", target: "/v1/keys/acquire?ttl=90", status: 400},
		{method: "POST", target: "/v1/keys/acquire?ttl=90S", status: 400},
		{method: "POST", target: "/v1/keys/acquire?ttl=1s;wait=1s", status: 400},
		{method: "POST", target: "/v1/keys/acquire?" + strings.Repeat("a=1&", 1000), status: 400},
		// Ids no key has.
		{method: "GET", target: "/v1/keys/%FF%FE", status: 404},
		{method: "POST", target: "/v1/keys/%00/keepalive", status: 404},
		{method: "DELETE", target: "/v1/keys/" + strings.Repeat("A", 10000), status: 404},
		{method: "POST", target: "/v1/keys/" + l.Token + "/unblock", status: 404}, // a token is no id
		// Methods and routes.
		{method: "PUT", target: "/v1/keys", status: 405},
		{method: "GET", target: "/v1/keys?limit=1001", status: 400},
		{method: "OPTIONS", target: key, status: 405},
		{method: "TRACE", target: "/v1/stats", status: 405},
		{method: "POST", target: "/v1/openapi.json", status: 405},
		{method: "GET", target: "/v1/keys/x/y/z", status: 404},
		{method: "DELETE", target: "/v1/keys/acquire", status: 404},
	} {
		t.Run(c.method+" "+c.target[:min(len(c.target), 60)]+" "+c.body[:min(len(c.body), 30)], func(t *testing.T) {
			var body io.Reader
			if c.body != "" {
				body = strings.NewReader(c.body)
				if c.chunked {
					body = chunkedBody{body}
				}
			}
			r := httptest.NewRequest(c.method, c.target, body)
			if c.contentType != "" {
				r.Header.Set("Content-Type", c.contentType)
			}
			w := httptest.NewRecorder()
			p.handler.ServeHTTP(w, r)
			if c.method == "HEAD" {
				if w.Code != c.status {
					t.Fatalf("status %d, want %d", w.Code, c.status)
				}
				return
			}
			expect[errorBody](t, w, c.status, "")
		})
	}
	if after := p.stats(); after != before {
		t.Fatalf("hostile requests changed the pool: %+v, was %+v", after, before)
	}
}

// TestBodiesOfAnyContentType: a JSON body is read as JSON whatever its Content-Type,
// as curl -d sends it (application/x-www-form-urlencoded).
func TestBodiesOfAnyContentType(t *testing.T) {
	p := newPool(t)
	for _, ct := range []string{"application/x-www-form-urlencoded", "text/plain", ""} {
		r := httptest.NewRequest("POST", "/v1/keys", strings.NewReader(`{"count":2}`))
		if ct != "" {
			r.Header.Set("Content-Type", ct)
		}
		w := httptest.NewRecorder()
		p.handler.ServeHTTP(w, r)
		if keys := expect[keysJSON](t, w, 201, "").Keys; len(keys) != 2 {
			t.Fatalf("%q: %d keys", ct, len(keys))
		}
	}
}
