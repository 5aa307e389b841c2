package auth

import (
	"context"
	"errors"
	"net/http"

	"github.com/99designs/gqlgen/graphql/handler/transport"

	"github.com/keypool/keypool/keystore"
	"github.com/keypool/keypool/middleware"
	"github.com/keypool/keypool/wire"
)

// Refuser answers a refused request in its route's error shape.
type Refuser func(w http.ResponseWriter, r *http.Request, status int, code keystore.Code, message string)

// Handler authenticates every request that open does not let through: one without a
// known bearer token is answered 401 UNAUTHENTICATED with WWW-Authenticate: Bearer;
// one with a token goes on with its Principal in the context (for streams, a context
// that ends when the token is removed). A websocket handshake without an Authorization
// header goes on unauthenticated: its token comes in connection_init (WebsocketInit).
func (g *Guard) Handler(open func(*http.Request) bool, refuse Refuser, next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if open(r) {
			next.ServeHTTP(w, r)
			return
		}
		header := r.Header.Get("Authorization")
		if header == "" && r.Header.Get("Upgrade") != "" {
			next.ServeHTTP(w, r.WithContext(WithPrincipal(r.Context(), anonymous)))
			return
		}
		p := g.Authenticate(header)
		if p == nil {
			g.Failed()
			w.Header().Set("WWW-Authenticate", `Bearer realm="keypool"`)
			message := "a token is needed: Authorization: Bearer TOKEN"
			if header != "" {
				message = "the token is not known (or not a Bearer token)"
			}
			refuse(w, r, http.StatusUnauthorized, wire.CodeUnauthenticated, message)
			return
		}
		ctx := WithPrincipal(r.Context(), p)
		if middleware.IsStream(r) {
			var stop func()
			ctx, stop = Bind(ctx, p)
			defer stop()
		}
		next.ServeHTTP(w, r.WithContext(ctx))
	})
}

// Require serves next only to a principal that may run op (Allow), for a route that is
// not one of the API's operations (/metrics).
func Require(op string, refuse Refuser, next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if err := Allow(r.Context(), op); err != nil {
			code := keystore.ErrorCode(err)
			refuse(w, r, wire.Status(code), code, keystore.ErrorMessage(err))
			return
		}
		next.ServeHTTP(w, r)
	})
}

// ErrNoToken is WebsocketInit's error for a connection_init without a known token.
var ErrNoToken = errors.New("a known token is needed in connection_init's payload: {\"Authorization\":\"Bearer TOKEN\"}")

// WebsocketInit is a websocket's connection_init hook (gqlgen's WebsocketInitFunc): it
// takes the token from the payload's Authorization ("Bearer TOKEN"), unless the
// handshake carried one already, and returns a context with the principal that ends
// when the token is removed. A missing or unknown token is ErrNoToken (close 4403).
func (g *Guard) WebsocketInit(ctx context.Context, payload transport.InitPayload) (context.Context, *transport.InitPayload, error) {
	p := FromContext(ctx)
	if p == nil || p == anonymous {
		header, _ := payload["Authorization"].(string)
		if p = g.Authenticate(header); p == nil {
			g.Failed()
			return nil, nil, ErrNoToken
		}
	}
	ctx, stop := Bind(WithPrincipal(ctx, p), p)
	context.AfterFunc(ctx, stop) // when the socket ends, the hook on the token goes
	return ctx, nil, nil
}
