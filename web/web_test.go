package web

import (
	"compress/gzip"
	"io"
	"net/http"
	"net/http/httptest"
	"regexp"
	"strings"
	"testing"

	"go.uber.org/goleak"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

func get(t *testing.T, h http.Handler, target string, header ...string) *http.Response {
	t.Helper()
	req := httptest.NewRequest(http.MethodGet, target, nil)
	for i := 0; i+1 < len(header); i += 2 {
		req.Header.Set(header[i], header[i+1])
	}
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, req)
	return rec.Result()
}

func body(t *testing.T, res *http.Response) string {
	t.Helper()
	b, err := io.ReadAll(res.Body)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

// refs finds the URLs a page loads: src= and href= attributes.
var refs = regexp.MustCompile(`(?:src|href)="([^"]*)"`)

func TestPages(t *testing.T) {
	h := routes()
	for _, page := range []struct{ path, title string }{
		{"/", "keypool · GraphiQL"},
		{"/dashboard", "keypool · dashboard"},
	} {
		t.Run(page.path, func(t *testing.T) {
			res := get(t, h, page.path)
			if res.StatusCode != http.StatusOK {
				t.Fatalf("status %d", res.StatusCode)
			}
			if got := res.Header.Get("Content-Type"); got != "text/html; charset=utf-8" {
				t.Errorf("Content-Type %q", got)
			}
			if got := res.Header.Get("Cache-Control"); got != "no-cache" {
				t.Errorf("Cache-Control %q", got)
			}
			csp := res.Header.Get("Content-Security-Policy")
			for _, want := range []string{"default-src 'none'", "script-src 'self'", "connect-src 'self' ws://example.com wss://example.com"} {
				if !strings.Contains(csp, want) {
					t.Errorf("CSP %q lacks %q", csp, want)
				}
			}
			html := body(t, res)
			if !strings.Contains(html, "<title>"+page.title+"</title>") {
				t.Errorf("no title %q in page", page.title)
			}
			if regexp.MustCompile(`<script>| on[a-z]+=`).MatchString(html) {
				t.Error("inline script: the CSP would refuse it")
			}
			found := refs.FindAllStringSubmatch(html, -1)
			if len(found) == 0 {
				t.Fatal("page loads nothing")
			}
			for _, m := range found {
				u := m[1]
				if u == "/" || u == "/dashboard" {
					continue // links between the pages
				}
				if !strings.HasPrefix(u, AssetPrefix) || !strings.Contains(u, "?v=") {
					t.Errorf("page loads %q: want a versioned %s URL", u, AssetPrefix)
					continue
				}
				res := get(t, h, strings.ReplaceAll(u, "&amp;", "&"))
				if res.StatusCode != http.StatusOK {
					t.Errorf("%s: status %d", u, res.StatusCode)
				}
				if got := res.Header.Get("Cache-Control"); got != "public, max-age=31536000, immutable" {
					t.Errorf("%s: Cache-Control %q", u, got)
				}
			}
		})
	}
}

func TestPageMethods(t *testing.T) {
	h := routes()
	for _, target := range []string{"/", "/dashboard", "/assets/dashboard.js"} {
		req := httptest.NewRequest(http.MethodPost, target, strings.NewReader("{}"))
		rec := httptest.NewRecorder()
		h.ServeHTTP(rec, req)
		if rec.Code != http.StatusMethodNotAllowed || rec.Header().Get("Allow") != "GET, HEAD" {
			t.Errorf("POST %s: %d, Allow %q", target, rec.Code, rec.Header().Get("Allow"))
		}
		req = httptest.NewRequest(http.MethodHead, target, nil)
		rec = httptest.NewRecorder()
		h.ServeHTTP(rec, req)
		if rec.Code != http.StatusOK || rec.Body.Len() != 0 {
			t.Errorf("HEAD %s: %d with %d bytes", target, rec.Code, rec.Body.Len())
		}
	}
}

func TestAssets(t *testing.T) {
	h := routes()
	for name, want := range map[string]string{
		"vendor/graphiql/graphiql.min.js":              "text/javascript; charset=utf-8",
		"vendor/graphiql/graphiql.min.css":             "text/css; charset=utf-8",
		"vendor/react/react.production.min.js":         "text/javascript; charset=utf-8",
		"vendor/react-dom/react-dom.production.min.js": "text/javascript; charset=utf-8",
		"vendor/graphiql/LICENSE":                      "text/plain; charset=utf-8",
		"vendor/react/LICENSE":                         "text/plain; charset=utf-8",
		"vendor/react-dom/LICENSE":                     "text/plain; charset=utf-8",
		"vendor/VERSIONS":                              "text/plain; charset=utf-8",
		"dashboard.js":                                 "text/javascript; charset=utf-8",
		"dashboard.css":                                "text/css; charset=utf-8",
		"graphiql-page.js":                             "text/javascript; charset=utf-8",
		"keypool.svg":                                  "image/svg+xml",
	} {
		res := get(t, h, AssetPrefix+name)
		if res.StatusCode != http.StatusOK {
			t.Errorf("%s: status %d", name, res.StatusCode)
			continue
		}
		if got := res.Header.Get("Content-Type"); got != want {
			t.Errorf("%s: Content-Type %q, want %q", name, got, want)
		}
		if got := res.Header.Get("X-Content-Type-Options"); got != "nosniff" {
			t.Errorf("%s: X-Content-Type-Options %q", name, got)
		}
		// Without the content hash the URL may change meaning: revalidate.
		if got := res.Header.Get("Cache-Control"); got != "no-cache" {
			t.Errorf("%s: Cache-Control %q", name, got)
		}
		etag := res.Header.Get("ETag")
		if etag == "" {
			t.Errorf("%s: no ETag", name)
			continue
		}
		if res := get(t, h, AssetPrefix+name, "If-None-Match", etag); res.StatusCode != http.StatusNotModified {
			t.Errorf("%s: If-None-Match: status %d, want 304", name, res.StatusCode)
		}
		if res := get(t, h, AssetPrefix+name+"?v=stale"); res.Header.Get("Cache-Control") != "no-cache" {
			t.Errorf("%s?v=stale: Cache-Control %q", name, res.Header.Get("Cache-Control"))
		}
	}
	for _, target := range []string{"/assets/", "/assets/nope.js", "/assets/vendor", "/assets/web.go", "/assets/vendor/", "/nope"} {
		if res := get(t, h, target); res.StatusCode != http.StatusNotFound {
			t.Errorf("%s: status %d, want 404", target, res.StatusCode)
		}
	}
}

func TestVendorVersionsPinned(t *testing.T) {
	versions := string(theSite.assets["vendor/VERSIONS"].body)
	for _, pkg := range []string{"graphiql 3.", "react 18.", "react-dom 18."} {
		if !regexp.MustCompile(`(?m)^` + regexp.QuoteMeta(pkg) + `\d+\.\d+ sha512-[A-Za-z0-9+/=]+$`).MatchString(versions) {
			t.Errorf("VERSIONS lacks an exact %q version:\n%s", pkg, versions)
		}
	}
}

// TestNoOtherHost checks the embedded files for anything that would load from
// another host; the browser test checks the same at run time, and the CSP makes
// the browser refuse it anyway.
func TestNoOtherHost(t *testing.T) {
	cssURL := regexp.MustCompile(`url\(\s*['"]?([^'")\s]*)`)
	absolute := regexp.MustCompile(`(?i)(?:https?:|wss?:)?//[a-z0-9.-]+\.[a-z]{2,}`)
	for name, a := range theSite.assets {
		text := string(a.body)
		switch {
		case strings.HasSuffix(name, ".css"):
			for _, m := range cssURL.FindAllStringSubmatch(text, -1) {
				if !strings.HasPrefix(m[1], "data:") && !strings.HasPrefix(m[1], "#") {
					t.Errorf("%s loads %q", name, m[1])
				}
			}
			if strings.Contains(text, "@import") {
				t.Errorf("%s has an @import", name)
			}
		case strings.HasSuffix(name, ".js") && !strings.HasPrefix(name, "vendor/"):
			// Our own scripts name no host at all; the vendor bundles mention
			// project homepages in comments and error messages, which load nothing.
			if m := absolute.FindString(text); m != "" {
				t.Errorf("%s names %q", name, m)
			}
		}
	}
}

// TestScriptsInsertText checks that our own scripts put text from the server (pool
// names, holders, key ids) into the page as text only: no API that parses HTML.
func TestScriptsInsertText(t *testing.T) {
	parsesHTML := regexp.MustCompile(`\b(?:innerHTML|outerHTML|insertAdjacentHTML|document\.write(?:ln)?|createContextualFragment|setHTMLUnsafe|parseHTMLUnsafe)\b`)
	checked := 0
	for name, a := range theSite.assets {
		if !strings.HasSuffix(name, ".js") || strings.HasPrefix(name, "vendor/") {
			continue
		}
		checked++
		for _, m := range parsesHTML.FindAllString(string(a.body), -1) {
			t.Errorf("%s uses %s: set textContent instead", name, m)
		}
	}
	if checked < 2 {
		t.Errorf("checked %d scripts, want dashboard.js and graphiql-page.js at least", checked)
	}
}

func TestContentSecurityPolicy(t *testing.T) {
	for _, host := range []string{"", "evil.example; script-src *", "[::1]:8080", "a b", "x\ny"} {
		csp := ContentSecurityPolicy(host)
		if got := csp[strings.Index(csp, "connect-src"):]; !strings.HasPrefix(got, "connect-src 'self';") {
			t.Errorf("host %q: %s", host, got)
		}
	}
	csp := ContentSecurityPolicy("127.0.0.1:8080")
	if !strings.Contains(csp, "connect-src 'self' ws://127.0.0.1:8080 wss://127.0.0.1:8080;") {
		t.Errorf("CSP %q", csp)
	}
	if strings.Contains(csp, "*") || strings.Contains(csp, "http") {
		t.Errorf("CSP allows another host: %q", csp)
	}
}

func TestAssetsGzip(t *testing.T) {
	h := routes()
	const name = AssetPrefix + "vendor/graphiql/graphiql.min.js"
	plain := get(t, h, name)
	plainBody := body(t, plain)
	if plain.Header.Get("Content-Encoding") != "" || plain.Header.Get("Vary") != "Accept-Encoding" {
		t.Fatalf("without Accept-Encoding: Content-Encoding %q, Vary %q", plain.Header.Get("Content-Encoding"), plain.Header.Get("Vary"))
	}
	for _, accept := range []string{"gzip", "gzip, deflate, br, zstd", "br;q=1.0, GZIP;q=0.5"} {
		res := get(t, h, name, "Accept-Encoding", accept)
		if res.Header.Get("Content-Encoding") != "gzip" {
			t.Fatalf("Accept-Encoding %q: Content-Encoding %q", accept, res.Header.Get("Content-Encoding"))
		}
		if res.Header.Get("ETag") == plain.Header.Get("ETag") {
			t.Error("the gzip and identity bodies share an ETag")
		}
		zipped := body(t, res)
		zr, err := gzip.NewReader(strings.NewReader(zipped))
		if err != nil {
			t.Fatal(err)
		}
		unzipped, err := io.ReadAll(zr)
		if err != nil {
			t.Fatal(err)
		}
		if string(unzipped) != plainBody {
			t.Fatal("the gzipped body differs from the file")
		}
		if len(zipped) > len(plainBody)/2 {
			t.Errorf("gzipped to %d of %d bytes", len(zipped), len(plainBody))
		}
	}
	for _, accept := range []string{"gzip;q=0", "deflate, br", "identity"} {
		if res := get(t, h, name, "Accept-Encoding", accept); res.Header.Get("Content-Encoding") != "" {
			t.Errorf("Accept-Encoding %q: Content-Encoding %q", accept, res.Header.Get("Content-Encoding"))
		}
	}
	// Images and tiny files go as they are.
	if res := get(t, h, AssetPrefix+"keypool.svg", "Accept-Encoding", "gzip"); res.Header.Get("Content-Encoding") != "" {
		t.Errorf("keypool.svg (%d bytes) was gzipped", len(theSite.assets["keypool.svg"].body))
	}
}

// routes mounts the pages as the server does.
func routes() http.Handler {
	mux := http.NewServeMux()
	mux.Handle("GET /{$}", GraphiQL())
	mux.Handle("GET /dashboard", Dashboard())
	mux.Handle("GET "+AssetPrefix, Assets())
	return mux
}
