package graph

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"mime"
	"net/http"
	"net/url"
	"runtime/debug"
	"strings"
	"time"

	"github.com/99designs/gqlgen/graphql"
	"github.com/99designs/gqlgen/graphql/executor"
	"github.com/99designs/gqlgen/graphql/handler/extension"
	"github.com/vektah/gqlparser/v2/ast"
	"github.com/vektah/gqlparser/v2/gqlerror"

	"github.com/keypool/keypool/keystore"
)

// ServerOptions tune NewServer. The zero value is ready to use.
type ServerOptions struct {
	// Logger receives internal errors and panics; nil means slog.Default().
	Logger *slog.Logger
	// CheckOrigin widens which websocket upgrades may proceed: same-origin ones
	// (and those without an Origin header) always may; others only if CheckOrigin
	// says so. Nil allows no others. A CORS option sets it.
	CheckOrigin func(r *http.Request) bool
	// PingPongInterval overrides the default PingPongInterval (for tests).
	PingPongInterval time.Duration
	// WebsocketInitTimeout and WebsocketIdleTimeout override the defaults (for tests).
	WebsocketInitTimeout, WebsocketIdleTimeout time.Duration
	// MaxGenerate is the store's most keys per generateKeys (keystore.Options'), for
	// the complexity of generateKeys; 0 means keystore.DefaultMaxGenerate.
	MaxGenerate int
	// Fanout, if set, hears what the delivery of keyEvents does (metrics).
	Fanout FanoutObserver
	// FanoutWorkers bounds the goroutines that deliver events; 0 means FanoutWorkers().
	FanoutWorkers int
}

// NewServer returns the /graphql endpoint on store: POST, GET, SSE and websocket
// (graphql-transport-ws and graphql-ws), with a query cache, automatic persisted
// queries, a complexity limit, a request body limit, and errors coded in one place.
func NewServer(store keystore.Store, opts ServerOptions) http.Handler {
	logger := opts.Logger
	if logger == nil {
		logger = slog.Default()
	}
	checkOrigin := SameOrigin
	if widen := opts.CheckOrigin; widen != nil {
		checkOrigin = func(r *http.Request) bool { return SameOrigin(r) || widen(r) }
	}

	pingPong := opts.PingPongInterval
	if pingPong <= 0 {
		pingPong = PingPongInterval
	}

	resolver := &Resolver{Store: store}
	cfg := Config{Resolvers: resolver}
	maxGenerate := opts.MaxGenerate
	if maxGenerate <= 0 {
		maxGenerate = keystore.DefaultMaxGenerate
	}
	cfg.Complexity.Mutation.GenerateKeys = generateKeysComplexity(maxGenerate)
	cfg.Complexity.Mutation.AcquireKey = acquireKeyComplexity
	exec := executor.New(NewExecutableSchema(cfg))

	// Both caches are bounded in bytes and admit only operations that passed every
	// check (admitChecked); documentLimits runs before gqlgen parses and validates a
	// document it has not cached, and after the persisted queries' lookup.
	docs := newBoundedCache(QueryCacheBytes, func(query string, _ *ast.QueryDocument, ctx context.Context) int {
		if a := admissionFor(ctx); a != nil && a.docCost > 0 {
			return a.docCost
		}
		return documentCost(len(query), len(query))
	})
	exec.SetQueryCache(docs)
	exec.SetParserTokenLimit(MaxDocumentTokens)
	exec.Use(extension.Introspection{})
	exec.Use(extension.AutomaticPersistedQuery{Cache: newBoundedCache(PersistedQueryCacheBytes,
		func(hash, query string, _ context.Context) int { return len(hash) + len(query) })})
	exec.Use(documentLimits{docs: docs})
	exec.Use(newComplexityLimit(ComplexityLimit))
	exec.Use(admitChecked{})
	exec.Use(streamErrors{})
	exec.AroundRootFields(writeKeyLists)
	presenter, recover := errorPresenter(logger), recoverFunc(logger)
	exec.SetErrorPresenter(presenter)
	exec.SetRecoverFunc(recover)

	gate := newCostGate()
	fanout := newFanout(opts.FanoutWorkers, opts.Fanout)
	srv := endpoint{
		exec: gatedExecutor{Executor: exec, gate: gate, docs: docs},
		transports: []graphql.Transport{
			// SSE before POST: both take POST, and SSE is chosen by its Accept header.
			sseTransport{keepAlive: KeepAlivePingInterval, writeTimeout: WebsocketWriteTimeout, fanout: fanout, logger: logger},
			websocketTransport{opts: socketOptions{
				initTimeout:  orDefault(opts.WebsocketInitTimeout, WebsocketInitTimeout),
				idleTimeout:  orDefault(opts.WebsocketIdleTimeout, WebsocketIdleTimeout),
				writeTimeout: WebsocketWriteTimeout,
				pingInterval: pingPong,
				keepAlive:    KeepAlivePingInterval,
				logger:       logger,
				fanout:       fanout,
			}},
			// Last: it answers whatever the others do not.
			httpTransport{compiled: newCompiledOps(resolver, presenter, recover)},
		},
	}
	return guard(srv, checkOrigin, MaxBodyBytes, gate)
}

// internalMessage is all a client learns of an internal error.
const internalMessage = "internal error"

// errorPresenter is the one place where errors become extensions.code. A keystore
// error shows its code and message; gqlgen's own errors (parse, validation,
// complexity) keep theirs; anything else is INTERNAL_SERVER_ERROR with a generic
// message, its text only in the log.
func errorPresenter(logger *slog.Logger) graphql.ErrorPresenterFunc {
	return func(ctx context.Context, err error) *gqlerror.Error {
		presented := graphql.DefaultErrorPresenter(ctx, err)
		var storeErr *keystore.Error
		if errors.As(err, &storeErr) && storeErr.Code != keystore.EINTERNAL {
			presented.Message = storeErr.Message
			setCode(presented, storeErr.Code)
			if storeErr.Code == keystore.ECOMPACTED {
				presented.Extensions["oldestSeq"] = storeErr.OldestSeq
			}
			return presented
		}
		var gqlErr *gqlerror.Error
		if storeErr == nil && errors.As(err, &gqlErr) && gqlErr.Err == nil {
			// gqlgen's own error: its message is for clients. One about the request
			// itself (no path), such as an APQ hash that does not match its query,
			// may come without a code: it is the client's mistake.
			if len(presented.Path) == 0 && presented.Extensions["code"] == nil {
				setCode(presented, keystore.EINVALID)
			}
			return presented
		}
		if errors.Is(err, context.Canceled) { // the client left, or the server is stopping
			logger.DebugContext(ctx, "request cancelled", "err", err, "path", presented.Path.String())
		} else {
			logger.ErrorContext(ctx, "internal error", "err", err, "path", presented.Path.String())
		}
		presented.Message = internalMessage
		presented.Err = nil
		setCode(presented, keystore.EINTERNAL)
		return presented
	}
}

func setCode(e *gqlerror.Error, code keystore.Code) {
	if e.Extensions == nil {
		e.Extensions = map[string]any{}
	}
	e.Extensions["code"] = string(code)
}

// recoverFunc logs a resolver's panic with its stack and answers
// INTERNAL_SERVER_ERROR. It returns a finished *gqlerror.Error because the websocket
// transport sends a recovered error as it is, without the presenter.
func recoverFunc(logger *slog.Logger) graphql.RecoverFunc {
	return func(ctx context.Context, p any) error {
		logger.ErrorContext(ctx, "panic in resolver", "panic", fmt.Sprint(p), "stack", string(debug.Stack()))
		return &gqlerror.Error{
			Message:    internalMessage,
			Extensions: map[string]any{"code": string(keystore.EINTERNAL)},
		}
	}
}

// SameOrigin allows a request without an Origin header (not a browser) or whose
// Origin names the host the request was sent to.
func SameOrigin(r *http.Request) bool {
	origin := r.Header.Get("Origin")
	if origin == "" {
		return true
	}
	u, err := url.Parse(origin)
	if err != nil {
		return false
	}
	return strings.EqualFold(u.Host, r.Host)
}

// guard refuses, before gqlgen sees them, websocket upgrades from a foreign origin
// (403) and request bodies over limit (413), and decodes a JSON body once for every
// transport that takes one (400 if it is not a GraphQL request), each answer a
// coded JSON error. The body is read here, bounded, and handed on.
func guard(next http.Handler, checkOrigin func(*http.Request) bool, limit int64, gate costGate) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Header.Get("Upgrade") != "" {
			if !checkOrigin(r) {
				refuse(w, r, http.StatusForbidden, coded(codeForbidden, "websocket origin not allowed"))
				return
			}
		}
		if r.Body == nil || r.Body == http.NoBody {
			if r.Method == http.MethodPost && isJSON(r) {
				refuse(w, r, http.StatusBadRequest, coded(codeBadRequest, "the request has no body"))
				return
			}
			next.ServeHTTP(w, r)
			return
		}
		body, status, err := readBody(w, r, limit)
		if err != nil {
			refuse(w, r, status, err)
			return
		}
		if r.Method == http.MethodPost && isJSON(r) {
			params, err := decodeGated(r.Context(), gate, body)
			if err != nil {
				refuse(w, r, http.StatusBadRequest, err)
				return
			}
			r = withParams(r, params)
		}
		read := &bufferedBody{}
		read.Reset(body)
		r.Body = read
		next.ServeHTTP(w, r)
	})
}

// bufferedBody is a body that guard has read, given again to the handlers after it.
type bufferedBody struct{ bytes.Reader }

func (*bufferedBody) Close() error { return nil }

// decodeGated decodes a request body, through the gate if it is large.
func decodeGated(ctx context.Context, gate costGate, body []byte) (*graphql.RawParams, *gqlerror.Error) {
	if len(body) >= costlyBodyBytes {
		if gate.enter(ctx) != nil {
			return nil, coded(codeBadRequest, "the request was cancelled")
		}
		defer gate.leave()
	}
	return decodeRequest(body)
}

// readBody reads r's body, at most limit bytes, into one buffer of its size.
func readBody(w http.ResponseWriter, r *http.Request, limit int64) ([]byte, int, *gqlerror.Error) {
	tooLarge := func() *gqlerror.Error { return coded(codeTooLarge, "the request body is larger than %d bytes", limit) }
	if r.ContentLength > limit {
		return nil, http.StatusRequestEntityTooLarge, tooLarge()
	}
	var buf bytes.Buffer
	if r.ContentLength > 0 {
		buf.Grow(int(r.ContentLength) + bytes.MinRead) // room for the read that finds the end
	}
	_, err := buf.ReadFrom(http.MaxBytesReader(w, r.Body, limit))
	if err != nil {
		var maxBytes *http.MaxBytesError
		if errors.As(err, &maxBytes) {
			return nil, http.StatusRequestEntityTooLarge, tooLarge()
		}
		return nil, http.StatusBadRequest, coded(codeBadRequest, "the request body could not be read")
	}
	return buf.Bytes(), 0, nil
}

// isJSON reports whether r's body is declared JSON (the POST and SSE transports').
func isJSON(r *http.Request) bool {
	contentType := r.Header.Get("Content-Type")
	if contentType == mediaJSON { // the common case, without parsing
		return true
	}
	mediaType, _, err := mime.ParseMediaType(contentType)
	return err == nil && mediaType == mediaJSON
}

func orDefault(d, fallback time.Duration) time.Duration {
	if d > 0 {
		return d
	}
	return fallback
}
