package main

import (
	"log/slog"
	"net/http"
	"strings"

	"github.com/keypool/keypool/auth"
	"github.com/keypool/keypool/graph"
	"github.com/keypool/keypool/keystore"
	"github.com/keypool/keypool/metrics"
	"github.com/keypool/keypool/middleware"
	"github.com/keypool/keypool/rest"
	"github.com/keypool/keypool/web"
)

// newHandler mounts every route of the server, so the whole surface reads at a glance.
func newHandler(store keystore.Store, cfg config, logger *slog.Logger, m *metrics.Metrics) http.Handler {
	mux := http.NewServeMux()
	graphOpts := graph.ServerOptions{Logger: logger, CheckOrigin: cfg.CORSOrigins.CheckOrigin, MaxGenerate: cfg.MaxGenerate, Fanout: m}
	if cfg.guard != nil {
		graphOpts.WebsocketInit = cfg.guard.WebsocketInit
	}
	if cfg.guard != nil {
		store = auth.Store(store) // the rules on pools and leases, for every transport
	}
	mux.Handle("/graphql", graph.NewServer(m.Instrument(store, metrics.GraphQL), graphOpts))
	rest.Mount(mux, m.Instrument(store, metrics.REST), logger, func(h http.Handler) http.Handler {
		return middleware.JSONBodies(middleware.RESTError, h)
	})
	mux.Handle("/healthz", rest.Healthz()) // no method: they answer a wrong one in JSON
	mux.Handle("/readyz", rest.Readyz(store, cfg.storeKind(), logger))
	mux.Handle("GET /metrics", auth.Require("metrics", edgeError, m.Handler()))
	mux.Handle("GET /{$}", web.GraphiQL())
	mux.Handle("GET /dashboard", web.Dashboard())
	mux.Handle("GET "+web.AssetPrefix, web.Assets())
	var routes http.Handler = mux
	if cfg.guard != nil {
		routes = cfg.guard.Handler(openRoute, edgeError, mux)
	}
	return middleware.Log(logger,
		middleware.BodyDeadline(cfg.ReadTimeout,
			middleware.Browsers(cfg.AllowedHosts, cfg.CORSOrigins, edgeError,
				middleware.CORS(cfg.CORSOrigins, rest.CanonicalPaths(routes)))))
}

// openRoute reports whether r needs no token with access control on: the health
// checks, the pages' shells and their assets, the API's documents, and OPTIONS (a
// browser's preflight carries no token). Every other route, the whole API, needs one.
func openRoute(r *http.Request) bool {
	switch p := r.URL.Path; {
	case r.Method == http.MethodOptions:
		return true
	case p == "/healthz", p == "/readyz", p == "/", p == "/dashboard", p == "/v1/openapi.json", p == "/v1/docs":
		return true
	default:
		return strings.HasPrefix(p, web.AssetPrefix)
	}
}

// edgeError answers a request refused before its route ran in the route's error shape:
// GraphQL's at /graphql, REST's everywhere else.
func edgeError(w http.ResponseWriter, r *http.Request, status int, code keystore.Code, message string) {
	if r.URL.Path == "/graphql" {
		middleware.GraphQLError(w, r, status, code, message)
		return
	}
	middleware.RESTError(w, r, status, code, message)
}
