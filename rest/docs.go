package rest

import (
	"crypto/sha256"
	"embed"
	"encoding/base64"
	"net/http"
	"strings"
)

// The page at /v1/docs renders the OpenAPI document for people. It is one HTML file
// with its style and script inlined from docs/, so that a Content-Security-Policy of
// hashes can allow exactly those and nothing else: the page loads only
// /v1/openapi.json, from this origin, and works offline.
//
//go:embed docs
var docsFS embed.FS

var docsPage, docsPolicy = mustBuildDocs()

func mustBuildDocs() ([]byte, string) {
	read := func(name string) string {
		b, err := docsFS.ReadFile("docs/" + name)
		if err != nil {
			panic("rest: " + err.Error())
		}
		return string(b)
	}
	html, css, js := read("docs.html"), read("docs.css"), read("docs.js")
	if !strings.Contains(html, "/*CSS*/") || !strings.Contains(html, "/*JS*/") || strings.Contains(js, "</script") {
		panic("rest: docs/docs.html lacks its placeholders, or docs.js closes its script")
	}
	html = strings.Replace(html, "/*CSS*/", css, 1)
	html = strings.Replace(html, "/*JS*/", js, 1)
	hash := func(s string) string {
		sum := sha256.Sum256([]byte(s))
		return "'sha256-" + base64.StdEncoding.EncodeToString(sum[:]) + "'"
	}
	policy := strings.Join([]string{
		"default-src 'none'",
		"script-src " + hash(js),
		"style-src " + hash(css),
		"connect-src 'self'",
		"img-src 'self' data:",
		"base-uri 'none'",
		"form-action 'none'",
		"frame-ancestors 'none'",
	}, "; ")
	return []byte(html), policy
}

// serveDocs answers GET /v1/docs with the page.
func serveDocs(w http.ResponseWriter, r *http.Request) {
	h := w.Header()
	h.Set("Content-Type", "text/html; charset=utf-8")
	h.Set("Content-Security-Policy", docsPolicy)
	h.Set("X-Content-Type-Options", "nosniff")
	h.Set("Referrer-Policy", "no-referrer")
	h.Set("Cache-Control", "no-cache")
	w.Write(docsPage)
}
