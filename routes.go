package main

import (
	"log/slog"
	"net/http"

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
	mux.Handle("/graphql", graph.NewServer(m.Instrument(store, metrics.GraphQL),
		graph.ServerOptions{Logger: logger, CheckOrigin: cfg.CORSOrigins.CheckOrigin, MaxGenerate: cfg.MaxGenerate, Fanout: m}))
	rest.Mount(mux, m.Instrument(store, metrics.REST), logger, func(h http.Handler) http.Handler {
		return middleware.JSONBodies(middleware.RESTError, h)
	})
	mux.Handle("/healthz", rest.Healthz()) // no method: they answer a wrong one in JSON
	mux.Handle("/readyz", rest.Readyz(store, cfg.storeKind(), logger))
	mux.Handle("GET /metrics", m.Handler())
	mux.Handle("GET /{$}", web.GraphiQL())
	mux.Handle("GET /dashboard", web.Dashboard())
	mux.Handle("GET "+web.AssetPrefix, web.Assets())
	return middleware.Log(logger,
		middleware.BodyDeadline(cfg.ReadTimeout,
			middleware.Browsers(cfg.AllowedHosts, cfg.CORSOrigins, edgeError,
				middleware.CORS(cfg.CORSOrigins, rest.CanonicalPaths(mux)))))
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
