package rest

import (
	_ "embed"
	"net/http"
)

// openAPIDocument describes every route of /v1 and the operations routes. It is written
// by hand, not generated: the answers are appended by hand (json.go), so there are no Go
// types to generate it from, and the tests (package resttest) prove that the server
// matches it by validating every request and answer of the REST suites against it.
//
//go:embed openapi.json
var openAPIDocument []byte

// OpenAPI returns the OpenAPI 3.0 document of the REST routes, as served at
// GET /v1/openapi.json. The caller must not modify it.
func OpenAPI() []byte { return openAPIDocument }

// serveOpenAPI answers GET /v1/openapi.json with the embedded document.
func serveOpenAPI(w http.ResponseWriter, r *http.Request) {
	w.Header()["Content-Type"] = jsonContentType
	w.Header().Set("Cache-Control", "no-cache")
	w.Write(openAPIDocument)
}
