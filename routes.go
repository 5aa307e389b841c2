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
		graph.ServerOptions{Logger: logger, CheckOrigin: cfg.CORSOrigins.CheckOrigin, MaxGenerate: cfg.MaxGenerate}))
	mux.Handle("/v1/", rest.New(m.Instrument(store, metrics.REST), logger))
	mux.Handle("GET /healthz", rest.Healthz())
	mux.Handle("GET /readyz", rest.Readyz(store, logger))
	mux.Handle("GET /metrics", m.Handler())
	mux.Handle("GET /{$}", web.GraphiQL())
	mux.Handle("GET /dashboard", web.Dashboard())
	mux.Handle("GET "+web.AssetPrefix, web.Assets())
	return middleware.Log(logger, middleware.CORS(cfg.CORSOrigins, mux))
}
