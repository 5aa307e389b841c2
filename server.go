// Command keypool serves a pool of API keys, leased out over GraphQL.
//
// Run it with `go run .`; see docs/configuration.md for the flags.
package main

//go:generate go tool gqlgen generate

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/signal"
	"sync"
	"syscall"
	"time"

	"github.com/jonboulle/clockwork"

	"github.com/keypool/keypool/auth"
	"github.com/keypool/keypool/gcfloor"
	"github.com/keypool/keypool/internal/buildinfo"
	"github.com/keypool/keypool/keystore"
	"github.com/keypool/keypool/keystore/redisstore"
	"github.com/keypool/keypool/metrics"
	"github.com/keypool/keypool/middleware"
	"github.com/keypool/keypool/redact"
)

// shutdownTimeout bounds how long in-flight requests may take to finish on shutdown.
const shutdownTimeout = 10 * time.Second

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	err := run(ctx, os.Args, os.Getenv, os.Stdout, os.Stderr, nil)
	stop()
	switch {
	case errors.Is(err, flag.ErrHelp):
		os.Exit(0)
	case err != nil:
		fmt.Fprintln(os.Stderr, "keypool:", err)
		os.Exit(1)
	}
}

// run is the whole server: parse the configuration, open the store, serve until ctx
// ends, then shut down gracefully and return nil. args include the program name.
// ready, if not nil, is told the address once the server accepts connections.
func run(ctx context.Context, args []string, getenv func(string) string, stdout, stderr io.Writer, ready func(net.Addr)) error {
	cfg, err := parseConfig(args[1:], getenv, stderr)
	if err != nil {
		return err
	}
	if cfg.ShowVersion {
		fmt.Fprintln(stdout, "keypool", buildinfo.Read())
		return nil
	}
	logger := newLogger(cfg.LogFormat, cfg.LogLevel, stderr)
	gcfloor.Set(uint64(cfg.GCHeapFloor) << 20)

	metricSet := metrics.New()
	if cfg.AuthFile != "" { // before the store: a bad file stops the server with nothing to undo
		if cfg.guard, err = auth.NewGuard(cfg.AuthFile, metricSet.AuthFailed); err != nil {
			return fmt.Errorf("-auth-file: %v", err)
		}
		stopReloads := reloadOnHangup(cfg.guard, logger)
		defer stopReloads()
	}
	store, err := openStore(cfg, metricSet, logger)
	if err != nil {
		return err
	}
	defer store.Close()
	metricSet.WatchStore(store)
	go store.RecordHistory(ctx)

	ln, err := net.Listen("tcp", cfg.Addr)
	if err != nil {
		return fmt.Errorf("-addr: %v", err)
	}
	// What net/http refuses before any handler (a bad %-escape in a path, a malformed
	// header) is answered in JSON too; websockets still get the plain TCP connection.
	ln = middleware.ServerRefusals(ln)
	if cfg.guard == nil && !isLoopback(ln.Addr()) {
		logger.Warn("access control is off and the server listens beyond loopback: anyone who reaches it may lease, import and delete keys; see -auth-file",
			"addr", ln.Addr().String())
	}

	streams := newStreamTracker()
	srv := &http.Server{
		Handler: middleware.RawConnections(streams.wrap(newHandler(store, cfg, logger, metricSet))),
		// Slow clients: headers and idle keep-alive connections are bounded here, bodies
		// by middleware.BodyDeadline (in routes.go), whose deadline is lifted once the
		// body is in, so that SSE streams and waiting acquires, which read nothing for
		// longer, are not cut; hijacked websockets carry no deadline from either.
		ReadHeaderTimeout: cfg.ReadTimeout,
		IdleTimeout:       cfg.IdleTimeout,
		ErrorLog:          slog.NewLogLogger(logger.Handler(), slog.LevelWarn),
	}
	// Shutdown neither waits for nor closes hijacked websockets and long-lived SSE
	// streams: end them ourselves, cleanly, as soon as shutdown starts.
	srv.RegisterOnShutdown(streams.end)

	fmt.Fprintf(stdout, "keypool listening on %s (GraphiQL), API at /graphql\n", displayURL(ln.Addr()))
	logger.Info("serving", "addr", ln.Addr().String(), "store", redact.URL(cfg.Store),
		"lease_ttl", cfg.LeaseTTL.String(), "keepalive_ttl", cfg.KeepAliveTTL.String())

	served := make(chan error, 1)
	go func() { served <- srv.Serve(ln) }()
	if ready != nil {
		ready(ln.Addr()) // the listener queues connections already
	}

	select {
	case err := <-served:
		return fmt.Errorf("serve: %w", err)
	case <-ctx.Done():
	}
	logger.Info("shutting down")
	store.StopWaiting() // waiting acquires answer UNAVAILABLE now, not at the grace period's end
	shutdownCtx, cancel := context.WithTimeout(context.Background(), shutdownTimeout)
	defer cancel()
	if err := srv.Shutdown(shutdownCtx); err != nil {
		logger.Warn("shutdown did not finish in time", "err", err)
		_ = srv.Close()
	}
	streams.wait(shutdownCtx)
	<-served // http.ErrServerClosed
	if err := store.Close(); err != nil {
		return fmt.Errorf("close store: %w", err)
	}
	logger.Info("stopped")
	return nil
}

// openStore builds the store that -store names.
func openStore(cfg config, observer keystore.Observer, logger *slog.Logger) (*keystore.Pool, error) {
	opts := cfg.storeOptions()
	opts.Observer = observer
	if cfg.storeKind() == "memory" {
		return keystore.NewMemory(clockwork.NewRealClock(), opts)
	}
	// A shared pool in Redis (redis://, rediss:// or unix://), on Redis's clock.
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	options := []redisstore.Option{redisstore.WithLogger(logger), redisstore.WithMinReplicas(cfg.RedisMinReplicas)}
	if cfg.SecretsKey != nil {
		options = append(options, redisstore.WithSecretsKey(cfg.SecretsKey))
	}
	store, err := redisstore.New(ctx, cfg.Store, clockwork.NewRealClock(), opts, options...)
	if err != nil {
		return nil, fmt.Errorf("-store: %w", err)
	}
	return store, nil
}

// reloadOnHangup rereads the auth file at every SIGHUP until stop is called. A file
// that cannot be read keeps the tokens in force, and says why in the log (never a
// token, nor its hash).
func reloadOnHangup(guard *auth.Guard, logger *slog.Logger) (stop func()) {
	hangups := make(chan os.Signal, 1)
	signal.Notify(hangups, syscall.SIGHUP)
	done := make(chan struct{})
	var wg sync.WaitGroup
	wg.Go(func() {
		for {
			select {
			case <-done:
				return
			case <-hangups:
				tokens, err := guard.Reload()
				if err != nil {
					logger.Error("-auth-file not reread: the tokens in force stay", "err", err)
					continue
				}
				logger.Info("-auth-file reread", "tokens", tokens.Len())
			}
		}
	})
	return func() {
		signal.Stop(hangups)
		close(done)
		wg.Wait()
	}
}

// isLoopback reports whether addr is reachable from this machine only.
func isLoopback(addr net.Addr) bool {
	tcp, ok := addr.(*net.TCPAddr)
	return ok && tcp.IP.IsLoopback()
}

func newLogger(format string, level slog.Level, w io.Writer) *slog.Logger {
	opts := &slog.HandlerOptions{Level: level}
	if format == "json" {
		return slog.New(slog.NewJSONHandler(w, opts))
	}
	return slog.New(slog.NewTextHandler(w, opts))
}

// displayURL is the address people can open: localhost when listening on all interfaces.
func displayURL(addr net.Addr) string {
	host, port, err := net.SplitHostPort(addr.String())
	if err != nil {
		return "http://" + addr.String() + "/"
	}
	if ip := net.ParseIP(host); host == "" || ip != nil && ip.IsUnspecified() {
		host = "localhost"
	}
	return "http://" + net.JoinHostPort(host, port) + "/"
}

// streamTracker ends long-lived requests (websockets, SSE) at shutdown: their
// contexts are cancelled, which makes gqlgen close them cleanly, and wait lets run
// return only once they are gone.
type streamTracker struct {
	ctx    context.Context
	cancel context.CancelFunc

	mu     sync.Mutex
	active int
	idle   chan struct{} // closed when active drops to zero, if someone waits
}

func newStreamTracker() *streamTracker {
	ctx, cancel := context.WithCancel(context.Background())
	return &streamTracker{ctx: ctx, cancel: cancel}
}

func (s *streamTracker) wrap(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if !middleware.IsStream(r) {
			next.ServeHTTP(w, r)
			return
		}
		s.enter()
		defer s.leave()
		ctx, cancel := context.WithCancel(r.Context())
		defer cancel()
		stop := context.AfterFunc(s.ctx, cancel)
		defer stop()
		next.ServeHTTP(w, r.WithContext(ctx))
	})
}

func (s *streamTracker) enter() {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.active++
}

func (s *streamTracker) leave() {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.active--
	if s.active == 0 && s.idle != nil {
		close(s.idle)
		s.idle = nil
	}
}

// end cancels every stream, now and to come.
func (s *streamTracker) end() { s.cancel() }

// wait waits for the streams to finish, or for ctx to end.
func (s *streamTracker) wait(ctx context.Context) {
	s.mu.Lock()
	if s.active == 0 {
		s.mu.Unlock()
		return
	}
	if s.idle == nil {
		s.idle = make(chan struct{})
	}
	idle := s.idle
	s.mu.Unlock()
	select {
	case <-idle:
	case <-ctx.Done():
	}
}
