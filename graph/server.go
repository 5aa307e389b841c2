package graph

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"mime"
	"net/http"
	"net/url"
	"runtime/debug"
	"strings"
	"time"

	"github.com/99designs/gqlgen/graphql"
	"github.com/99designs/gqlgen/graphql/errcode"
	"github.com/99designs/gqlgen/graphql/handler"
	"github.com/99designs/gqlgen/graphql/handler/extension"
	"github.com/99designs/gqlgen/graphql/handler/lru"
	"github.com/99designs/gqlgen/graphql/handler/transport"
	"github.com/vektah/gqlparser/v2/ast"
	"github.com/vektah/gqlparser/v2/gqlerror"

	"github.com/keypool/keypool/keystore"
)

// Limits of the GraphQL endpoint.
const (
	// ComplexityLimit is the most a single operation may cost (one per field, lists
	// not multiplied). Real queries cost tens; the playground's introspection query is
	// not counted; a flood of aliased fields is refused with COMPLEXITY_LIMIT_EXCEEDED.
	ComplexityLimit = 200
	// MaxBodyBytes is the largest request body accepted; larger ones get 413.
	MaxBodyBytes = 1 << 20
	// KeepAlivePingInterval is how often an idle websocket or SSE stream gets a
	// keep-alive message, so proxies do not time it out.
	KeepAlivePingInterval = 10 * time.Second
	// PingPongInterval is how often a graphql-transport-ws client is pinged; one that
	// does not answer within twice this is dropped, so half-open sockets are noticed.
	PingPongInterval = 15 * time.Second
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

	srv := handler.New(NewExecutableSchema(Config{Resolvers: &Resolver{Store: store}}))
	// SSE before POST: both take POST, and SSE is chosen by its Accept header.
	srv.AddTransport(transport.SSE{KeepAlivePingInterval: KeepAlivePingInterval})
	srv.AddTransport(transport.Websocket{
		Implementation:        originCheckedElsewhere(),
		KeepAlivePingInterval: KeepAlivePingInterval,
		PingPongInterval:      pingPong,
		InitTimeout:           10 * time.Second,
		ErrorFunc: func(ctx context.Context, err error) {
			logger.Debug("websocket", "err", err)
		},
	})
	srv.AddTransport(transport.Options{})
	srv.AddTransport(transport.GET{})
	srv.AddTransport(transport.POST{})

	srv.SetQueryCache(lru.New[*ast.QueryDocument](1000))
	srv.Use(extension.Introspection{})
	srv.Use(extension.AutomaticPersistedQuery{Cache: lru.New[string](100)})
	srv.Use(extension.FixedComplexityLimit(ComplexityLimit))
	srv.Use(schemaLimit{})
	srv.Use(streamErrors{})

	srv.SetErrorPresenter(errorPresenter(logger))
	srv.SetRecoverFunc(recoverFunc(logger))

	return guard(srv, checkOrigin, MaxBodyBytes)
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

// originCheckedElsewhere is gqlgen's default websocket implementation without its own
// origin check: guard has done ours, which a CORS option can widen.
func originCheckedElsewhere() transport.WebsocketImplementation {
	impl := transport.CoderWebsocketImplementation{}
	impl.AcceptOptions.InsecureSkipVerify = true
	return closingWebsockets{impl}
}

// closingWebsockets records each accepted socket where guard can find it, so that
// guard closes it when its request ends. gqlgen returns without closing the socket
// when connection_init carries a payload that is not a JSON object, which left the
// socket open and unanswered for as long as the client cared to wait.
type closingWebsockets struct {
	transport.WebsocketImplementation
}

// acceptedKey finds a request's *transport.WebsocketConn slot in its context.
type acceptedKey struct{}

func (c closingWebsockets) Accept(w http.ResponseWriter, r *http.Request, opts transport.WebsocketAcceptOptions) (transport.WebsocketConn, error) {
	conn, err := c.WebsocketImplementation.Accept(w, r, opts)
	if slot, ok := r.Context().Value(acceptedKey{}).(*transport.WebsocketConn); ok && err == nil {
		*slot = conn
	}
	return conn, err
}

// guard refuses, before gqlgen sees them, websocket upgrades from a foreign origin
// (403) and request bodies over limit (413). gqlgen itself would answer an oversized
// body with 200 and an error, so the body is read here, bounded, and handed on.
func guard(next http.Handler, checkOrigin func(*http.Request) bool, limit int64) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Header.Get("Upgrade") != "" {
			if !checkOrigin(r) {
				http.Error(w, "websocket origin not allowed", http.StatusForbidden)
				return
			}
			// Whatever gqlgen did, the socket is closed when the request ends: a no-op
			// if gqlgen closed it already, and the close it would send otherwise.
			var accepted transport.WebsocketConn
			defer func() {
				if accepted != nil {
					_ = accepted.WriteClose(transport.WebsocketCloseNormalClosure, "terminated")
					_ = accepted.Close()
				}
			}()
			r = r.WithContext(context.WithValue(r.Context(), acceptedKey{}, &accepted))
		}
		if r.Body != nil && r.Body != http.NoBody {
			if r.ContentLength > limit {
				http.Error(w, "request body too large", http.StatusRequestEntityTooLarge)
				return
			}
			body, err := io.ReadAll(http.MaxBytesReader(w, r.Body, limit))
			if err != nil {
				var tooLarge *http.MaxBytesError
				if errors.As(err, &tooLarge) {
					http.Error(w, "request body too large", http.StatusRequestEntityTooLarge)
				} else {
					http.Error(w, "could not read request body", http.StatusBadRequest)
				}
				return
			}
			// gqlgen decodes the first JSON value and ignores the rest, so that
			// `{"query":"mutation …"} garbage` would run: a JSON body must be one value.
			if isJSON(r) && !json.Valid(body) {
				transport.SendErrorf(w, http.StatusBadRequest, "json request body could not be decoded: not a single JSON value")
				return
			}
			r.Body = io.NopCloser(bytes.NewReader(body))
		}
		next.ServeHTTP(w, r)
	})
}

// isJSON reports whether r's body is declared JSON (the POST and SSE transports').
func isJSON(r *http.Request) bool {
	mediaType, _, err := mime.ParseMediaType(r.Header.Get("Content-Type"))
	return err == nil && mediaType == "application/json"
}

// MaxSchemaFields is how many times one operation may select __schema. gqlgen's
// complexity limit does not count __schema at all (so that the playground's
// introspection query passes), which would let aliases of it multiply the whole
// schema in one response: 2,000 aliases answer with megabytes after seconds of work.
const MaxSchemaFields = 1

// schemaLimit refuses, with COMPLEXITY_LIMIT_EXCEEDED, an operation that selects
// __schema more than MaxSchemaFields times, fragments included.
type schemaLimit struct{}

var (
	_ graphql.HandlerExtension        = schemaLimit{}
	_ graphql.OperationContextMutator = schemaLimit{}
)

func (schemaLimit) ExtensionName() string                          { return "SchemaLimit" }
func (schemaLimit) Validate(schema graphql.ExecutableSchema) error { return nil }

func (schemaLimit) MutateOperationContext(ctx context.Context, rc *graphql.OperationContext) *gqlerror.Error {
	if rc.Operation == nil {
		return nil
	}
	if n := countSchemaFields(rc.Operation.SelectionSet, map[string]int{}); n > MaxSchemaFields {
		err := gqlerror.Errorf("operation selects __schema %d times; at most %d allowed", n, MaxSchemaFields)
		errcode.Set(err, "COMPLEXITY_LIMIT_EXCEEDED")
		return err
	}
	return nil
}

// countSchemaFields counts the __schema fields that set selects, through fragments;
// memo holds each fragment's count, so that nested spreads cost one walk each (cycles
// were refused by validation). Counts saturate just above the limit.
func countSchemaFields(set ast.SelectionSet, memo map[string]int) int {
	n := 0
	for _, sel := range set {
		switch s := sel.(type) {
		case *ast.Field:
			if s.Name == "__schema" {
				n++
			}
		case *ast.InlineFragment:
			n += countSchemaFields(s.SelectionSet, memo)
		case *ast.FragmentSpread:
			c, ok := memo[s.Name]
			if !ok && s.Definition != nil {
				c = countSchemaFields(s.Definition.SelectionSet, memo)
				memo[s.Name] = c
			}
			n += c
		}
		if n > MaxSchemaFields {
			return MaxSchemaFields + 1
		}
	}
	return n
}
