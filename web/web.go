// Package web serves keypool's browser pages: GraphiQL at / and a live dashboard
// at /dashboard, with every file they load embedded in the binary.
//
// Nothing on either page comes from another host. The vendored GraphiQL, React
// and ReactDOM builds live in assets/vendor (see refresh-assets.sh), and every
// page is sent with a Content-Security-Policy that allows only this origin, so
// the browser itself refuses anything else.
package web

import (
	"bytes"
	"compress/gzip"
	"crypto/sha256"
	"embed"
	"encoding/hex"
	"html/template"
	"io/fs"
	"mime"
	"net/http"
	"path"
	"strings"
	"sync"
	"time"
)

// AssetPrefix is the URL path under which the static files are served.
const AssetPrefix = "/assets/"

//go:embed assets
var assetFS embed.FS

//go:embed pages/*.html
var pageFS embed.FS

// asset is one embedded static file, ready to serve.
type asset struct {
	body        []byte
	contentType string
	version     string // first 16 hex digits of the SHA-256 of body

	gzipOnce sync.Once
	gzipBody []byte // body gzipped, made on first demand; nil if not worth it
}

// gzipped returns the body compressed with gzip, or nil when compression does
// not pay (images, tiny files). It is made once, on the first request that
// accepts it, so that starting the binary costs nothing.
func (a *asset) gzipped() []byte {
	a.gzipOnce.Do(func() {
		if len(a.body) < 1024 || !strings.HasPrefix(a.contentType, "text/") && a.contentType != "image/svg+xml" {
			return
		}
		var buf bytes.Buffer
		zw, _ := gzip.NewWriterLevel(&buf, gzip.DefaultCompression)
		zw.Write(a.body)
		zw.Close()
		if buf.Len() < len(a.body)*9/10 {
			a.gzipBody = buf.Bytes()
		}
	})
	return a.gzipBody
}

// site holds everything the handlers serve; it is built once, at package init,
// from the embedded files, so a broken asset fails every test and every start.
type site struct {
	assets map[string]*asset // keyed by path below assets/, e.g. "vendor/react/LICENSE"
	pages  map[string][]byte // rendered HTML, keyed by page name
}

var theSite = mustBuildSite()

func mustBuildSite() *site {
	s, err := buildSite()
	if err != nil {
		panic("web: " + err.Error())
	}
	return s
}

func buildSite() (*site, error) {
	s := &site{assets: map[string]*asset{}, pages: map[string][]byte{}}
	root, err := fs.Sub(assetFS, "assets")
	if err != nil {
		return nil, err
	}
	err = fs.WalkDir(root, ".", func(name string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		body, err := fs.ReadFile(root, name)
		if err != nil {
			return err
		}
		sum := sha256.Sum256(body)
		s.assets[name] = &asset{
			body:        body,
			contentType: contentType(name),
			version:     hex.EncodeToString(sum[:8]),
		}
		return nil
	})
	if err != nil {
		return nil, err
	}

	// Pages name their assets with {{asset "name"}}, which yields a URL carrying
	// the file's content hash: the browser may then cache it for good, and a new
	// build changes the URL.
	funcs := template.FuncMap{"asset": func(name string) (string, error) {
		a, ok := s.assets[name]
		if !ok {
			return "", fs.ErrNotExist
		}
		return AssetPrefix + name + "?v=" + a.version, nil
	}}
	tmpl, err := template.New("").Funcs(funcs).ParseFS(pageFS, "pages/*.html")
	if err != nil {
		return nil, err
	}
	for _, t := range tmpl.Templates() {
		if t.Name() == "" {
			continue
		}
		var buf bytes.Buffer
		if err := t.Execute(&buf, nil); err != nil {
			return nil, err
		}
		s.pages[strings.TrimSuffix(t.Name(), ".html")] = buf.Bytes()
	}
	return s, nil
}

func contentType(name string) string {
	switch path.Ext(name) {
	case ".js":
		return "text/javascript; charset=utf-8"
	case ".css":
		return "text/css; charset=utf-8"
	case ".html":
		return "text/html; charset=utf-8"
	case ".svg":
		return "image/svg+xml"
	case ".png":
		return "image/png"
	case "":
		return "text/plain; charset=utf-8" // LICENSE, VERSIONS
	}
	if t := mime.TypeByExtension(path.Ext(name)); t != "" {
		return t
	}
	return "application/octet-stream"
}

// GraphiQL serves the GraphiQL page. Mount it at "/"; it answers GET and HEAD
// only, whatever the path it is mounted at.
func GraphiQL() http.Handler { return pageHandler("graphiql") }

// Dashboard serves the live dashboard page; mount it at "/dashboard".
func Dashboard() http.Handler { return pageHandler("dashboard") }

// Assets serves the embedded static files; mount it at AssetPrefix ("/assets/").
// A request whose ?v= matches the file's content hash (the URLs the pages use)
// may be cached for a year; any other is revalidated with its ETag.
func Assets() http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if !allowRead(w, r) {
			return
		}
		name, ok := strings.CutPrefix(r.URL.Path, AssetPrefix)
		a := theSite.assets[name]
		if !ok || a == nil {
			http.NotFound(w, r)
			return
		}
		h := w.Header()
		setSecurityHeaders(h, r)
		h.Set("Content-Type", a.contentType)
		h.Set("Vary", "Accept-Encoding")
		if r.URL.Query().Get("v") == a.version {
			h.Set("Cache-Control", "public, max-age=31536000, immutable")
		} else {
			h.Set("Cache-Control", "no-cache")
		}
		body, etag := a.body, `"`+a.version+`"`
		if gz := a.gzipped(); gz != nil && acceptsGzip(r) {
			body, etag = gz, `"`+a.version+`-gzip"`
			h.Set("Content-Encoding", "gzip")
		}
		h.Set("ETag", etag)
		http.ServeContent(w, r, "", time.Time{}, bytes.NewReader(body))
	})
}

// acceptsGzip reports whether the request's Accept-Encoding allows gzip.
func acceptsGzip(r *http.Request) bool {
	for _, header := range r.Header.Values("Accept-Encoding") {
		for part := range strings.SplitSeq(header, ",") {
			coding, params, _ := strings.Cut(strings.TrimSpace(part), ";")
			if !strings.EqualFold(strings.TrimSpace(coding), "gzip") {
				continue
			}
			q := strings.ReplaceAll(strings.TrimSpace(params), " ", "")
			return q != "q=0" && q != "q=0.0" && q != "q=0.00" && q != "q=0.000"
		}
	}
	return false
}

func pageHandler(name string) http.Handler {
	body, ok := theSite.pages[name]
	if !ok {
		panic("web: no page " + name)
	}
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if !allowRead(w, r) {
			return
		}
		h := w.Header()
		setSecurityHeaders(h, r)
		h.Set("Content-Type", "text/html; charset=utf-8")
		// The page is tiny and names its assets by content hash: always revalidate
		// it, so a new build is picked up at once.
		h.Set("Cache-Control", "no-cache")
		http.ServeContent(w, r, "", time.Time{}, bytes.NewReader(body))
	})
}

func allowRead(w http.ResponseWriter, r *http.Request) bool {
	if r.Method == http.MethodGet || r.Method == http.MethodHead {
		return true
	}
	w.Header().Set("Allow", "GET, HEAD")
	http.Error(w, http.StatusText(http.StatusMethodNotAllowed), http.StatusMethodNotAllowed)
	return false
}

func setSecurityHeaders(h http.Header, r *http.Request) {
	h.Set("Content-Security-Policy", ContentSecurityPolicy(r.Host))
	h.Set("X-Content-Type-Options", "nosniff")
	h.Set("Referrer-Policy", "no-referrer")
}

// ContentSecurityPolicy returns the policy both pages are served with: every
// fetch directive allows this origin only. The exceptions are what GraphiQL
// needs — inline styles (CodeMirror and React set them) and data: URLs (its
// fonts and icons are inlined in its CSS) — and WebSocket connections back to
// host, the Host the page was requested from, for subscriptions.
func ContentSecurityPolicy(host string) string {
	connect := "'self'"
	if validHost(host) {
		// CSP 3 lets 'self' match ws: and wss: on the same host, but older
		// browsers need the WebSocket origins spelt out.
		connect += " ws://" + host + " wss://" + host
	}
	return strings.Join([]string{
		"default-src 'none'",
		"script-src 'self'",
		"style-src 'self' 'unsafe-inline'",
		"img-src 'self' data:",
		"font-src 'self' data:",
		"connect-src " + connect,
		"manifest-src 'self'",
		"base-uri 'none'",
		"form-action 'self'",
		"frame-ancestors 'none'",
	}, "; ")
}

// validHost reports whether host is a plain name-or-IPv4[:port] that can go
// into a CSP source expression as is (CSP has no syntax for IPv6 literals, and
// a Host header is client input).
func validHost(host string) bool {
	if host == "" || len(host) > 255 {
		return false
	}
	for _, c := range host {
		switch {
		case c >= 'a' && c <= 'z', c >= 'A' && c <= 'Z', c >= '0' && c <= '9':
		case c == '.', c == '-', c == ':':
		default:
			return false
		}
	}
	return true
}
