package middleware_test

import (
	"bufio"
	"bytes"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/keypool/keypool/middleware"
)

func TestLog(t *testing.T) {
	var buf bytes.Buffer
	logger := slog.New(slog.NewTextHandler(&buf, &slog.HandlerOptions{Level: slog.LevelDebug}))
	h := middleware.Log(logger, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.WriteHeader(http.StatusConflict)
		w.Write([]byte("12345"))
	}))
	h.ServeHTTP(httptest.NewRecorder(), httptest.NewRequest("POST", "/v1/keys/Zx9_-aQ1w2e3r4t5y6u7i8/unblock?x=1", nil))
	line := buf.String()
	for _, want := range []string{"level=DEBUG", "method=POST", "path=/v1/keys/Zx9_-a…/unblock", "status=409", "bytes=5", "duration="} {
		if !strings.Contains(line, want) {
			t.Errorf("log line lacks %q: %s", want, line)
		}
	}
	if strings.Contains(line, "Q1w2e3") {
		t.Errorf("log line leaks the key id: %s", line)
	}

	// Implicit 200, and a handler that writes nothing.
	buf.Reset()
	middleware.Log(logger, http.HandlerFunc(func(http.ResponseWriter, *http.Request) {})).
		ServeHTTP(httptest.NewRecorder(), httptest.NewRequest("GET", "/healthz", nil))
	if !strings.Contains(buf.String(), "status=200") || !strings.Contains(buf.String(), "bytes=0") {
		t.Errorf("empty response logged as %s", buf.String())
	}
}

func TestLogOffAtInfo(t *testing.T) {
	var buf bytes.Buffer
	logger := slog.New(slog.NewTextHandler(&buf, nil))
	var sawRecorder bool
	middleware.Log(logger, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		_, sawRecorder = w.(*httptest.ResponseRecorder)
	})).ServeHTTP(httptest.NewRecorder(), httptest.NewRequest("GET", "/", nil))
	if buf.Len() != 0 || !sawRecorder {
		t.Fatalf("at info level the writer is wrapped (%v) or a line is logged: %s", !sawRecorder, buf.String())
	}
}

// hijackable is a ResponseWriter that can be hijacked and flushed, as a server's is.
type hijackable struct {
	*httptest.ResponseRecorder
	hijacked bool
}

func (h *hijackable) Hijack() (net.Conn, *bufio.ReadWriter, error) {
	h.hijacked = true
	return nil, nil, nil
}

func TestLogPassesHijackAndFlush(t *testing.T) {
	var buf bytes.Buffer
	logger := slog.New(slog.NewTextHandler(&buf, &slog.HandlerOptions{Level: slog.LevelDebug}))
	inner := &hijackable{ResponseRecorder: httptest.NewRecorder()}
	middleware.Log(logger, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.(http.Flusher).Flush()
		if _, _, err := w.(http.Hijacker).Hijack(); err != nil {
			t.Fatal(err)
		}
	})).ServeHTTP(inner, httptest.NewRequest("GET", "/graphql", nil))
	if !inner.hijacked || !inner.Flushed {
		t.Fatalf("hijacked %v flushed %v", inner.hijacked, inner.Flushed)
	}

	inner = &hijackable{ResponseRecorder: httptest.NewRecorder()}
	buf.Reset()
	middleware.Log(logger, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.(http.Hijacker).Hijack()
	})).ServeHTTP(inner, httptest.NewRequest("GET", "/graphql", nil))
	if !strings.Contains(buf.String(), "status=101") {
		t.Fatalf("hijacked request logged as %s", buf.String())
	}
}

func TestParseOrigins(t *testing.T) {
	o, err := middleware.ParseOrigins(" https://App.example.com , http://localhost:3000,, ")
	if err != nil {
		t.Fatal(err)
	}
	if o.String() != "https://app.example.com,http://localhost:3000" {
		t.Fatalf("parsed %q", o.String())
	}
	if !o.Allows("https://app.example.com") || !o.Allows("HTTPS://APP.EXAMPLE.COM") || o.Allows("https://evil.example.com") || o.Allows("http://app.example.com") {
		t.Fatal("Allows")
	}
	if o, _ := middleware.ParseOrigins("*"); !o.Allows("https://anything.example") || o.String() != "*" {
		t.Fatal("* does not allow every origin")
	}
	if o, _ := middleware.ParseOrigins(""); !o.Empty() {
		t.Fatal("empty list is not empty")
	}
	for _, bad := range []string{"example.com", "ftp://example.com", "https://example.com/path", "https://", "https://u:p@example.com", "https://example.com?x=1", "://x"} {
		if _, err := middleware.ParseOrigins(bad); err == nil {
			t.Errorf("%q accepted", bad)
		}
	}
	var flagValue middleware.Origins
	if err := flagValue.Set("https://a.example"); err != nil || !flagValue.Allows("https://a.example") {
		t.Fatalf("Set: %v", err)
	}
	if err := flagValue.Set("nope"); err == nil {
		t.Fatal("Set accepted nope")
	}
}

func TestCheckOrigin(t *testing.T) {
	o, _ := middleware.ParseOrigins("https://app.example.com")
	for origin, want := range map[string]bool{
		"":                         true, // not a browser
		"http://keypool.internal":  true, // same origin
		"https://app.example.com":  true,
		"https://evil.example.com": false,
		"%%":                       false,
	} {
		r := httptest.NewRequest("GET", "http://keypool.internal/graphql", nil)
		if origin != "" {
			r.Header.Set("Origin", origin)
		}
		if got := o.CheckOrigin(r); got != want {
			t.Errorf("origin %q: %v, want %v", origin, got, want)
		}
		if got := (middleware.Origins{}).CheckOrigin(r); got != (origin == "" || origin == "http://keypool.internal") {
			t.Errorf("no origins, origin %q: %v", origin, got)
		}
	}
}

func TestCORS(t *testing.T) {
	next := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Method == http.MethodOptions {
			w.WriteHeader(http.StatusMethodNotAllowed)
			return
		}
		w.Write([]byte("served"))
	})
	serve := func(h http.Handler, method, origin string, preflight bool) *httptest.ResponseRecorder {
		r := httptest.NewRequest(method, "/v1/stats", nil)
		if origin != "" {
			r.Header.Set("Origin", origin)
		}
		if preflight {
			r.Header.Set("Access-Control-Request-Method", "POST")
			r.Header.Set("Access-Control-Request-Headers", "content-type, x-apollo-operation-name")
		}
		w := httptest.NewRecorder()
		h.ServeHTTP(w, r)
		return w
	}

	o, _ := middleware.ParseOrigins("https://app.example.com")
	h := middleware.CORS(o, next)

	w := serve(h, "GET", "https://app.example.com", false)
	if w.Body.String() != "served" || w.Header().Get("Access-Control-Allow-Origin") != "https://app.example.com" || w.Header().Get("Vary") != "Origin" {
		t.Fatalf("allowed GET: %v %q", w.Header(), w.Body)
	}
	w = serve(h, "GET", "https://evil.example.com", false)
	if w.Body.String() != "served" || w.Header().Get("Access-Control-Allow-Origin") != "" || w.Header().Get("Vary") != "Origin" {
		t.Fatalf("other origin's GET: %v", w.Header())
	}
	w = serve(h, "GET", "", false)
	if w.Body.String() != "served" || w.Header().Get("Access-Control-Allow-Origin") != "" {
		t.Fatalf("no origin: %v", w.Header())
	}

	w = serve(h, "OPTIONS", "https://app.example.com", true)
	if w.Code != 204 || w.Header().Get("Access-Control-Allow-Origin") != "https://app.example.com" ||
		w.Header().Get("Access-Control-Allow-Methods") != "GET, POST, DELETE, OPTIONS" ||
		w.Header().Get("Access-Control-Allow-Headers") != "content-type, x-apollo-operation-name" ||
		w.Header().Get("Access-Control-Max-Age") == "" || !strings.Contains(strings.Join(w.Header().Values("Vary"), ","), "Origin") {
		t.Fatalf("allowed preflight: %d %v", w.Code, w.Header())
	}
	w = serve(h, "OPTIONS", "https://evil.example.com", true)
	if w.Code != 204 || w.Header().Get("Access-Control-Allow-Origin") != "" || w.Header().Get("Access-Control-Allow-Methods") != "" {
		t.Fatalf("refused preflight: %d %v", w.Code, w.Header())
	}
	if w = serve(h, "OPTIONS", "https://app.example.com", false); w.Code != 405 {
		t.Fatalf("a plain OPTIONS is not a preflight: %d", w.Code)
	}

	star, _ := middleware.ParseOrigins("*")
	w = serve(middleware.CORS(star, next), "GET", "https://anything.example", false)
	if w.Header().Get("Access-Control-Allow-Origin") != "*" {
		t.Fatalf("*: %v", w.Header())
	}

	w = serve(middleware.CORS(middleware.Origins{}, next), "OPTIONS", "https://app.example.com", true)
	if w.Code != 405 || len(w.Header()) != 0 {
		t.Fatalf("CORS off: %d %v", w.Code, w.Header())
	}
}
