package graph

import (
	"bytes"
	"cmp"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"runtime"
	"runtime/debug"
	"strconv"
	"time"

	"github.com/99designs/gqlgen/graphql"
	"github.com/99designs/gqlgen/graphql/errcode"
	"github.com/99designs/gqlgen/graphql/executor"
	"github.com/99designs/gqlgen/graphql/handler/extension"
	"github.com/99designs/gqlgen/graphql/handler/transport"
	"github.com/vektah/gqlparser/v2/ast"
	"github.com/vektah/gqlparser/v2/gqlerror"
	"golang.org/x/sync/semaphore"

	"github.com/keypool/keypool/graph/fanout"
	"github.com/keypool/keypool/keystore"
	"github.com/keypool/keypool/middleware"
	"github.com/keypool/keypool/wire"
)

// ServerOptions tune NewServer. The zero value is ready to use.
type ServerOptions struct {
	// Logger receives internal errors and panics; nil means slog.Default().
	Logger *slog.Logger
	// CheckOrigin lets websocket upgrades proceed beyond middleware.Origins' rule (no
	// Origin header, or the same origin); nil lets no others.
	CheckOrigin func(r *http.Request) bool
	// PingPongInterval, WebsocketInitTimeout and WebsocketIdleTimeout override the
	// defaults of those names (for tests).
	PingPongInterval, WebsocketInitTimeout, WebsocketIdleTimeout time.Duration
	// MaxGenerate is the store's most keys per generateKeys, for its complexity; 0
	// means keystore.DefaultMaxGenerate.
	MaxGenerate int
	// Fanout, if set, hears what the delivery of keyEvents does (metrics).
	Fanout fanout.Observer
	// FanoutWorkers bounds the subscriptions that encode events at once; 0 means
	// fanout.New's default.
	FanoutWorkers int
	// WebsocketInit, if set, turns access control on: it authenticates a websocket's
	// connection_init (auth.Guard.WebsocketInit), and every operation's root fields
	// are checked against auth's rules before any runs.
	WebsocketInit transport.WebsocketInitFunc
}

func init() {
	// Refusals of a request before it runs are request errors, as gqlgen's own parse
	// and validation failures are: gqlgen's transports answer them with a status of
	// their own, which httpTransport then mends.
	for _, code := range []string{string(wire.CodeBadRequest), string(wire.CodeMethodNotAllowed),
		string(wire.CodeOperationLimit), codeComplexity, errcode.ParseFailed, errcode.ValidationFailed,
		"PERSISTED_QUERY_NOT_FOUND",
		string(wire.CodeForbidden), string(wire.CodeUnauthenticated)} { // access control's refusals
		errcode.RegisterErrorType(code, errcode.KindProtocol)
	}
}

// NewServer returns the /graphql endpoint on store: POST, GET, SSE and websocket
// (graphql-transport-ws and graphql-ws), every operation through gqlgen's executor and
// its extensions.
func NewServer(store keystore.Store, opts ServerOptions) http.Handler {
	logger := cmp.Or(opts.Logger, slog.Default())
	fan := fanout.New(opts.FanoutWorkers, opts.Fanout)

	cfg := Config{Resolvers: &Resolver{Store: store, Plans: fan.Plans()}}
	maxGenerate := orDefault(opts.MaxGenerate, keystore.DefaultMaxGenerate)
	cfg.Complexity.Mutation.GenerateKeys = generateKeysComplexity(maxGenerate)
	cfg.Complexity.Mutation.ImportKeys = importKeysComplexity(maxGenerate)
	cfg.Complexity.Mutation.AcquireKey = acquireKeyComplexity
	cfg.Complexity.Query.Keys = keysComplexity
	cfg.Complexity.Query.History = historyComplexity
	exec := executor.New(NewExecutableSchema(cfg))

	// Both caches are bounded in bytes and admit only operations that passed every
	// check (admission).
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
	exec.Use(extension.FixedComplexityLimit(ComplexityLimit))
	exec.Use(operationChecks{docs: docs})
	if opts.WebsocketInit != nil {
		exec.Use(accessCheck{})
	}
	exec.AroundRootFields(writeKeyLists)
	exec.SetErrorPresenter(errorPresenter(logger))
	exec.SetRecoverFunc(recoverFunc(logger))

	return endpoint{
		exec:        gatedExecutor{Executor: exec, gate: semaphore.NewWeighted(int64(max(1, runtime.GOMAXPROCS(0)-1))), docs: docs},
		widenOrigin: opts.CheckOrigin,
		ws: websocketTransport{
			initTimeout:  orDefault(opts.WebsocketInitTimeout, WebsocketInitTimeout),
			idleTimeout:  orDefault(opts.WebsocketIdleTimeout, WebsocketIdleTimeout),
			pingInterval: orDefault(opts.PingPongInterval, PingPongInterval),
			logger:       logger,
			fanout:       fan,
			init:         opts.WebsocketInit,
		},
		sse: sseTransport{fanout: fan},
	}
}

// errorPresenter is the one place where errors become extensions.code: a keystore
// error shows its code and message, gqlgen's own errors keep theirs, anything else is
// INTERNAL_SERVER_ERROR with a generic message, its text only in the log.
func errorPresenter(logger *slog.Logger) graphql.ErrorPresenterFunc {
	return func(ctx context.Context, err error) *gqlerror.Error {
		presented := graphql.DefaultErrorPresenter(ctx, err)
		var storeErr *keystore.Error
		if errors.As(err, &storeErr) && storeErr.Code != keystore.EINTERNAL {
			presented.Message = storeErr.Message
			errcode.Set(presented, string(storeErr.Code))
			switch storeErr.Code {
			case keystore.ECOMPACTED:
				presented.Extensions["oldestSeq"] = storeErr.OldestSeq
				presented.Extensions["oldestSeq64"] = strconv.FormatInt(storeErr.OldestSeq, 10)
			case keystore.ESTREAMCHANGED:
				presented.Extensions["stream"] = storeErr.Stream
			case keystore.EALREADYEXISTS:
				presented.Extensions["index"] = storeErr.Index
			}
			return presented
		}
		var gqlErr *gqlerror.Error
		if storeErr == nil && errors.As(err, &gqlErr) && gqlErr.Err == nil {
			// gqlgen's own error: its message is for clients. One about the request
			// itself (no path), such as an APQ hash that does not match its query,
			// may come without a code: it is the client's mistake.
			if len(presented.Path) == 0 && presented.Extensions["code"] == nil {
				errcode.Set(presented, string(keystore.EINVALID))
			}
			return presented
		}
		if errors.Is(err, context.Canceled) { // the client left, or the server is stopping
			logger.DebugContext(ctx, "request cancelled", "err", err, "path", presented.Path.String())
		} else {
			logger.ErrorContext(ctx, "internal error", "err", err, "path", presented.Path.String())
		}
		presented.Message = wire.InternalMessage
		presented.Err = nil
		errcode.Set(presented, string(keystore.EINTERNAL))
		return presented
	}
}

// recoverFunc logs a resolver's panic with its stack and answers INTERNAL_SERVER_ERROR.
func recoverFunc(logger *slog.Logger) graphql.RecoverFunc {
	return func(ctx context.Context, p any) error {
		logger.ErrorContext(ctx, "panic in resolver", "panic", fmt.Sprint(p), "stack", string(debug.Stack()))
		return coded(keystore.EINTERNAL, wire.InternalMessage)
	}
}

// endpoint is the /graphql handler. Before any transport sees a request, it refuses
// websocket upgrades from a foreign origin (403), bodies over MaxBodyBytes (413), and
// JSON bodies not one JSON object within the JSON limits (400), checked through the
// gate if large. Then the request's transport serves it with the gated executor
// (gqlgen's handler.Server would hand its transports its own).
type endpoint struct {
	exec        gatedExecutor
	widenOrigin func(*http.Request) bool // ServerOptions.CheckOrigin
	ws          websocketTransport
	sse         sseTransport
}

func (e endpoint) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if isWebsocket(r) && !(middleware.Origins{}).CheckOrigin(r) && (e.widenOrigin == nil || !e.widenOrigin(r)) {
		refuse(w, r, coded(wire.CodeForbidden, "websocket origin not allowed"))
		return
	}
	if r.Method == http.MethodPost {
		body, readErr := wire.ReadBody(w, r)
		var err *gqlerror.Error
		switch {
		case keystore.ErrorCode(readErr) == wire.CodeTooLarge:
			err = coded(wire.CodeTooLarge, "%s", keystore.ErrorMessage(readErr))
		case readErr != nil:
			err = coded(wire.CodeBadRequest, "the request body could not be read")
		case !isJSON(r):
		case len(body) == 0:
			err = coded(wire.CodeBadRequest, "the request has no body")
		case len(body) < costlyBodyBytes:
			err = checkJSON(body)
		case e.exec.gate.Acquire(r.Context(), 1) != nil:
			err = coded(wire.CodeBadRequest, "the request was cancelled")
		default:
			err = checkJSON(body)
			e.exec.gate.Release(1)
		}
		if err != nil {
			refuse(w, r, err)
			return
		}
		r.Body = io.NopCloser(bytes.NewReader(body))
	}
	ctx := graphql.StartOperationTrace(r.Context())
	switch {
	case isWebsocket(r):
		e.ws.Do(w, r.WithContext(ctx), e.exec)
	case e.sse.Supports(r): // before POST's: both take a POST
		e.sse.Do(w, r.WithContext(ctx), e.exec)
	default:
		httpTransport{}.Do(w, r.WithContext(context.WithValue(ctx, plainHTTPKey{}, r.Method)), e.exec)
	}
}

func orDefault[T int | time.Duration](v, fallback T) T {
	if v > 0 {
		return v
	}
	return fallback
}
