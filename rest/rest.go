// Package rest serves keypool's /v1 routes (CONTRACT "REST") on a keystore.Store, with
// net/http's method and path patterns.
//
// Every route answers JSON. Errors have the shape {"error":{"code":…,"message":…}} with
// the code mapped to an HTTP status in one place (statusOf). Requests that cannot be
// understood are refused with 400 (413 for bodies over 1 MiB) before the store is
// touched, so a bad request never changes the pool.
package rest

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/url"
	"path"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/keypool/keypool/auth"
	"github.com/keypool/keypool/internal/bufpool"
	"github.com/keypool/keypool/keystore"
	"github.com/keypool/keypool/redact"
	"github.com/keypool/keypool/wire"
)

// MaxBodyBytes is the largest request body accepted, wire's for every transport;
// larger ones get 413.
const MaxBodyBytes = wire.MaxBodyBytes

// jsonContentType is shared by every response so that setting the header allocates nothing;
// net/http never modifies it.
var jsonContentType = []string{"application/json"}

type handler struct {
	store  keystore.Store
	logger *slog.Logger
}

// New returns the handler of the /v1 routes alone (see Mount), behind CanonicalPaths.
func New(store keystore.Store, logger *slog.Logger) http.Handler {
	mux := http.NewServeMux()
	Mount(mux, store, logger, nil)
	return CanonicalPaths(mux)
}

// CanonicalPaths goes in front of the ServeMux that the /v1 routes are mounted on
// (Mount), which would otherwise answer, before any route runs, a path that is not
// canonical ("//", "." or ".." segments: /v1//stats, /v1/keys//ID, /v1/keys/ID/..) and
// /v1 itself with a redirect in text/html. CanonicalPaths answers those of them that
// are, or clean up to, paths under /v1 with 404 NOT_FOUND in the JSON error shape, as
// any path that names no route. Not a redirect: programs build these paths from
// templates, so such a path is a bug (an empty id) that a redirect would hide, and
// its cleaned form may name another route than it seems to (/v1/keys/ID/../acquire
// is /v1/keys/acquire), which a 307 or 308 would take the method and body to.
func CanonicalPaths(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		p := r.URL.EscapedPath()
		if clean := cleanPath(p); p == "/v1" || clean != p && (underV1(p) || underV1(clean)) {
			writeErrorStatus(w, http.StatusNotFound, keystore.ENOTFOUND,
				"no such route: "+r.Method+" "+redact.Path(r.URL.Path)+" (paths under /v1 have no empty, . or .. segments)")
			return
		}
		next.ServeHTTP(w, r)
	})
}

func underV1(p string) bool { return p == "/v1" || strings.HasPrefix(p, "/v1/") }

// cleanPath is the form ServeMux redirects p to when it differs (net/http's
// cleanPath): path.Clean, keeping a trailing slash. It allocates only when it differs.
func cleanPath(p string) string {
	if p == "" {
		return "/"
	}
	if p[0] != '/' {
		p = "/" + p
	}
	np := path.Clean(p)
	if p[len(p)-1] == '/' && np != "/" {
		if len(p) == len(np)+1 && strings.HasPrefix(p, np) {
			return p
		}
		return np + "/"
	}
	return np
}

// Mount adds the /v1 routes to mux, each wrapped in wrap (nil for none), so that a
// request is routed once however many routes the server has. Paths under /v1 that
// name no route answer 404, and a route asked with the wrong method answers 405, both
// in the JSON error shape.
func Mount(mux *http.ServeMux, store keystore.Store, logger *slog.Logger, wrap func(http.Handler) http.Handler) {
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	if wrap == nil {
		wrap = func(h http.Handler) http.Handler { return h }
	}
	h := &handler{store: store, logger: logger}
	route := func(pattern string, serve http.Handler) { mux.Handle(pattern, wrap(limitBody(serve))) }
	// Each route runs the operation of the GraphQL root field of its name, and is
	// allowed to the roles auth's rules allow that operation (Operations).
	for pattern, op := range Operations {
		if op.Name != "" {
			route(pattern, h.allow(op.Name, op.serve(h)))
		} else {
			route(pattern, op.serve(h))
		}
	}

	// ServeMux answers a wrong method with a plain-text 405; these method-less patterns
	// are less specific than the routes above, so they catch exactly the wrong methods
	// and answer in JSON. "/v1/keys/acquire" gets none: a method-less pattern for it
	// would conflict with GET and DELETE /v1/keys/{id}, which serve it (as an unknown id).
	route("/v1/keys", methodNotAllowed("GET, HEAD, POST"))
	route("/v1/keys/{id}", methodNotAllowed("GET, HEAD, DELETE"))
	route("/v1/keys/{id}/unblock", methodNotAllowed("POST"))
	route("/v1/keys/{id}/keepalive", methodNotAllowed("POST"))
	route("/v1/keys/{id}/renew", methodNotAllowed("POST"))
	route("/v1/keys/{id}/restore", methodNotAllowed("POST"))
	route("/v1/stats", methodNotAllowed("GET, HEAD"))
	route("/v1/pools", methodNotAllowed("GET, HEAD"))
	route("/v1/history", methodNotAllowed("GET, HEAD"))
	route("/v1/openapi.json", methodNotAllowed("GET, HEAD"))
	route("/v1/docs", methodNotAllowed("GET, HEAD"))
	route("/v1/", http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		writeErrorStatus(w, http.StatusNotFound, keystore.ENOTFOUND, "no such route: "+r.Method+" "+redact.Path(r.URL.Path))
	}))
}

// Operation is what a REST route does: the OpenAPI operationId of the route, and the
// name of the operation (GraphQL's root field) it runs, as auth's rules name it; ""
// for the documents that need no token.
type Operation struct {
	ID    string
	Name  string
	serve func(h *handler) http.Handler
}

func served(f func(h *handler, w http.ResponseWriter, r *http.Request)) func(h *handler) http.Handler {
	return func(h *handler) http.Handler {
		return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { f(h, w, r) })
	}
}

// Operations are the /v1 routes, by pattern.
var Operations = map[string]Operation{
	"POST /v1/keys":                {"generateKeys", "generateKeys", served((*handler).generate)},
	"POST /v1/keys/acquire":        {"acquireKey", "acquireKey", served((*handler).acquire)},
	"GET /v1/keys/{id}":            {"getKey", "key", served((*handler).get)},
	"DELETE /v1/keys/{id}":         {"deleteKey", "deleteKey", served((*handler).delete)},
	"POST /v1/keys/{id}/unblock":   {"unblockKey", "unblockKey", served((*handler).unblock)},
	"POST /v1/keys/{id}/keepalive": {"keepAlive", "keepAlive", served((*handler).keepAlive)},
	"POST /v1/keys/{id}/renew":     {"renewLease", "renewLease", served((*handler).renew)},
	"POST /v1/keys/{id}/restore":   {"restoreKey", "restoreKey", served((*handler).restore)},
	"POST /v1/keys/import":         {"importKeys", "importKeys", served((*handler).importKeys)},
	"GET /v1/keys":                 {"listKeys", "keys", served((*handler).list)},
	"GET /v1/stats":                {"getStats", "stats", served((*handler).stats)},
	"GET /v1/pools":                {"listPools", "pools", served((*handler).pools)},
	"GET /v1/history":              {"getHistory", "history", served((*handler).history)},
	"GET /v1/openapi.json":         {"getOpenAPI", "", func(*handler) http.Handler { return http.HandlerFunc(serveOpenAPI) }},
	"GET /v1/docs":                 {"getDocs", "", func(*handler) http.Handler { return http.HandlerFunc(serveDocs) }},
}

// allow refuses a request whose token's role may not run op (auth.Allow), in REST's
// error shape; with access control off it lets every request through.
func (h *handler) allow(op string, next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if err := auth.Allow(r.Context(), op); err != nil {
			h.writeError(w, r, err)
			return
		}
		next.ServeHTTP(w, r)
	})
}

// limitBody refuses a body over MaxBodyBytes with 413 before any route runs, also on
// the routes that ignore their body (acquire, keepalive, delete): without it, an 8 MiB
// request to those would still act on the pool. A body of unknown length (chunked) is
// read here, bounded; one of known length is left to the route to read.
func limitBody(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.ContentLength > MaxBodyBytes || r.ContentLength < 0 && r.Body != nil && r.Body != http.NoBody {
			body, err := wire.ReadBody(w, r)
			switch {
			case keystore.ErrorCode(err) == wire.CodeTooLarge:
				writeErrorStatus(w, http.StatusRequestEntityTooLarge, wire.CodeTooLarge, keystore.ErrorMessage(err))
				return
			case err != nil:
				writeErrorStatus(w, http.StatusBadRequest, keystore.EINVALID, "could not read the request body")
				return
			}
			r.Body = io.NopCloser(bytes.NewReader(body))
			r.ContentLength = int64(len(body))
		}
		next.ServeHTTP(w, r)
	})
}

func methodNotAllowed(allow string) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		a := allow
		if r.URL.Path == "/v1/keys/acquire" {
			a = "GET, HEAD, POST, DELETE"
		}
		w.Header().Set("Allow", a)
		writeErrorStatus(w, http.StatusMethodNotAllowed, wire.CodeMethodNotAllowed, r.Method+" is not allowed here; allowed: "+a)
	})
}

// generateRequest is the body of POST /v1/keys; a missing body or count means 1, a
// missing pool the default pool.
type generateRequest struct {
	Count *int   `json:"count"`
	Pool  string `json:"pool"`
}

func (h *handler) generate(w http.ResponseWriter, r *http.Request) {
	var req generateRequest
	if !decodeBody(h, w, r, &req) {
		return
	}
	count := 1
	if req.Count != nil {
		count = *req.Count
	}
	keys, err := h.store.Generate(r.Context(), req.Pool, count)
	if err != nil {
		h.writeError(w, r, err)
		return
	}
	writeKeys(w, http.StatusCreated, keys)
}

func (h *handler) acquire(w http.ResponseWriter, r *http.Request) {
	opts, err := acquireOptions(r.URL)
	if err != nil {
		h.writeError(w, r, err)
		return
	}
	k, err := h.store.Acquire(r.Context(), opts)
	if err != nil {
		h.writeError(w, r, err)
		return
	}
	h.writeLease(w, r, &k)
}

// acquireOptions reads ?pool=, ?holder=, and ?ttl= and ?wait= (Go durations).
func acquireOptions(u *url.URL) (keystore.AcquireOptions, error) {
	q, err := query(u, "pool", "holder", "ttl", "wait")
	if err != nil {
		return keystore.AcquireOptions{}, err
	}
	opts := keystore.AcquireOptions{Pool: q["pool"], Holder: q["holder"]}
	if ttl, ok := q["ttl"]; ok {
		d, err := wire.ParseDuration("ttl", ttl)
		if err != nil {
			return opts, err
		}
		opts.TTL = &d
	}
	if wait, ok := q["wait"]; ok {
		if opts.Wait, err = wire.ParseDuration("wait", wait); err != nil {
			return opts, err
		}
	}
	return opts, nil
}

// query reads the parameters of u, each of the names given at most once. Unknown
// parameters are refused so that a typo is not silently ignored.
func query(u *url.URL, names ...string) (map[string]string, error) {
	if u.RawQuery == "" {
		return nil, nil // the common case, without a map
	}
	q, err := url.ParseQuery(u.RawQuery)
	if err != nil {
		return nil, keystore.Errorf(keystore.EINVALID, "bad query string: %v", err)
	}
	params := make(map[string]string, len(q))
	for name, values := range q {
		if !slices.Contains(names, name) {
			return nil, keystore.Errorf(keystore.EINVALID, "unknown query parameter %q (want %s)", name, strings.Join(names, ", "))
		}
		if len(values) != 1 {
			return nil, keystore.Errorf(keystore.EINVALID, "query parameter %q given %d times", name, len(values))
		}
		params[name] = values[0]
	}
	return params, nil
}

func (h *handler) get(w http.ResponseWriter, r *http.Request) {
	k, err := h.store.Get(r.Context(), r.PathValue("id"))
	h.writeKey(w, r, &k, err)
}

func (h *handler) delete(w http.ResponseWriter, r *http.Request) {
	if err := h.store.Delete(r.Context(), r.PathValue("id")); err != nil {
		h.writeError(w, r, err)
		return
	}
	w.WriteHeader(http.StatusNoContent)
}

// unblockRequest is the optional body of POST /v1/keys/{id}/unblock: cooldown is a Go
// duration, empty for none.
type unblockRequest struct {
	Token    string `json:"token"`
	Cooldown string `json:"cooldown"`
	Failed   bool   `json:"failed"`
}

func (h *handler) unblock(w http.ResponseWriter, r *http.Request) {
	var req unblockRequest
	if !decodeBody(h, w, r, &req) {
		return
	}
	cooldown, err := optionalDuration("cooldown", req.Cooldown)
	if err != nil {
		h.writeError(w, r, err)
		return
	}
	opts := keystore.UnblockOptions{Cooldown: cooldown, Failed: req.Failed}
	k, err := h.store.UnblockWith(r.Context(), r.PathValue("id"), req.Token, opts)
	h.writeKey(w, r, &k, err)
}

func (h *handler) restore(w http.ResponseWriter, r *http.Request) {
	k, err := h.store.Restore(r.Context(), r.PathValue("id"))
	h.writeKey(w, r, &k, err)
}

// importRequest is the body of POST /v1/keys/import; keepAliveTTL is a Go duration,
// empty to keep the keys until deleted.
type importRequest struct {
	Pool         string      `json:"pool"`
	Keys         []importKey `json:"keys"`
	KeepAliveTTL string      `json:"keepAliveTTL"`
}

type importKey struct {
	Secret string `json:"secret"`
	Name   string `json:"name"`
}

func (h *handler) importKeys(w http.ResponseWriter, r *http.Request) {
	var req importRequest
	if !decodeBody(h, w, r, &req) {
		return
	}
	keepAliveTTL, err := optionalDuration("keepAliveTTL", req.KeepAliveTTL)
	if err != nil {
		h.writeError(w, r, err)
		return
	}
	opts := keystore.ImportOptions{Pool: req.Pool, KeepAliveTTL: keepAliveTTL}
	in := make([]keystore.KeyInput, len(req.Keys))
	for i, k := range req.Keys {
		in[i] = keystore.KeyInput{Secret: k.Secret, Name: k.Name}
	}
	keys, err := h.store.Import(r.Context(), in, opts)
	if err != nil {
		h.writeError(w, r, err)
		return
	}
	writeKeys(w, http.StatusCreated, keys)
}

func (h *handler) keepAlive(w http.ResponseWriter, r *http.Request) {
	k, err := h.store.KeepAlive(r.Context(), r.PathValue("id"))
	h.writeKey(w, r, &k, err)
}

// renewRequest is the body of POST /v1/keys/{id}/renew; ttl is a Go duration, empty for
// the pool's default lease TTL.
type renewRequest struct {
	Token string `json:"token"`
	TTL   string `json:"ttl"`
}

func (h *handler) renew(w http.ResponseWriter, r *http.Request) {
	var req renewRequest
	if !decodeBody(h, w, r, &req) {
		return
	}
	ttl, err := optionalDuration("ttl", req.TTL)
	if err != nil {
		h.writeError(w, r, err)
		return
	}
	k, err := h.store.Renew(r.Context(), r.PathValue("id"), req.Token, ttl)
	if err != nil {
		h.writeError(w, r, err)
		return
	}
	h.writeLease(w, r, &k)
}

func (h *handler) stats(w http.ResponseWriter, r *http.Request) {
	q, err := query(r.URL, "pool")
	if err != nil {
		h.writeError(w, r, err)
		return
	}
	s, err := h.store.Stats(r.Context(), q["pool"])
	if err != nil {
		h.writeError(w, r, err)
		return
	}
	writeJSON(w, http.StatusOK, func(b []byte) []byte { return appendStats(b, s) })
}

func (h *handler) pools(w http.ResponseWriter, r *http.Request) {
	if _, err := query(r.URL); err != nil {
		h.writeError(w, r, err)
		return
	}
	pools, err := h.store.Pools(r.Context())
	if err != nil {
		h.writeError(w, r, err)
		return
	}
	writeJSON(w, http.StatusOK, func(b []byte) []byte { return appendPools(b, pools) })
}

// history answers GET /v1/history?pool=&since=: the pool's sampled counts.
func (h *handler) history(w http.ResponseWriter, r *http.Request) {
	q, err := query(r.URL, "pool", "since")
	if err != nil {
		h.writeError(w, r, err)
		return
	}
	var since time.Time
	if s, ok := q["since"]; ok {
		if since, err = wire.ParseTime("since", s); err != nil {
			h.writeError(w, r, err)
			return
		}
	}
	samples, err := h.store.History(r.Context(), q["pool"], since)
	if err != nil {
		h.writeError(w, r, err)
		return
	}
	writeJSON(w, http.StatusOK, func(b []byte) []byte { return appendHistory(b, samples) })
}

// list answers GET /v1/keys?pool=&status=&limit=&cursor=: one page of keys, and the
// cursor of the next (null on the last page).
func (h *handler) list(w http.ResponseWriter, r *http.Request) {
	q, err := query(r.URL, "pool", "status", "limit", "cursor")
	if err != nil {
		h.writeError(w, r, err)
		return
	}
	opts := keystore.ListOptions{Pool: q["pool"], Status: keystore.Status(q["status"]), First: keystore.DefaultListFirst, After: q["cursor"]}
	if limit, ok := q["limit"]; ok {
		if opts.First, err = strconv.Atoi(limit); err != nil {
			h.writeError(w, r, keystore.Errorf(keystore.EINVALID, "limit must be a whole number from 1 to %d", keystore.MaxListFirst))
			return
		}
	}
	page, err := h.store.List(r.Context(), opts)
	if err != nil {
		h.writeError(w, r, err)
		return
	}
	var next *string
	if page.HasNext {
		next = &page.EndCursor
	}
	writeKeys(w, http.StatusOK, page.Keys, next)
}

// decodeBody decodes an optional JSON object into dst, strictly: no unknown field,
// nothing after it. An empty body leaves dst as it is; an oversized, malformed or
// unexpected one is answered here (false returned). limitBody has bounded the body.
func decodeBody[T any](h *handler, w http.ResponseWriter, r *http.Request, dst *T) bool {
	if r.Body == nil || r.Body == http.NoBody {
		return true
	}
	body, err := io.ReadAll(r.Body)
	if err != nil {
		h.writeError(w, r, keystore.Errorf(keystore.EINVALID, "could not read the request body"))
		return false
	}
	body = bytes.Trim(body, " \t\r\n")
	if len(body) == 0 {
		return true
	}
	dec := json.NewDecoder(bytes.NewReader(body))
	dec.DisallowUnknownFields()
	err = dec.Decode(dst)
	switch {
	case err == nil && body[0] != '{':
		// encoding/json decodes null into a struct as nothing at all; anything else
		// but an object already failed.
		err = errors.New("the body must be a JSON object")
	case err == nil && dec.More():
		err = errors.New("unexpected data after the JSON object")
	case err == nil:
		return true
	}
	h.writeError(w, r, keystore.Errorf(keystore.EINVALID, "bad JSON body: %s", describeJSONError(err)))
	return false
}

// describeJSONError words a decoding error for clients without Go type names.
func describeJSONError(err error) string {
	if e, ok := errors.AsType[*json.UnmarshalTypeError](err); ok {
		return fmt.Sprintf("field %q has the wrong type (%s)", e.Field, e.Value)
	}
	if e, ok := errors.AsType[*json.SyntaxError](err); ok {
		return fmt.Sprintf("syntax error at byte %d", e.Offset)
	}
	if errors.Is(err, io.ErrUnexpectedEOF) {
		return "unexpected end of input"
	}
	return err.Error() // unknown field "x", trailing data: no internals in these
}

func (h *handler) writeKey(w http.ResponseWriter, r *http.Request, k *keystore.Key, err error) {
	if err != nil {
		h.writeError(w, r, err)
		return
	}
	writeJSON(w, http.StatusOK, func(b []byte) []byte { return appendKey(b, k) })
}

func (h *handler) writeLease(w http.ResponseWriter, r *http.Request, k *keystore.Key) {
	if k.Lease == nil { // a store bug: a lease answer without a lease
		h.writeError(w, r, errors.New("store returned a key without a lease"))
		return
	}
	writeJSON(w, http.StatusOK, func(b []byte) []byte { return appendLease(b, k) })
}

// writeJSON writes the body that appendBody appends, from a pooled buffer.
func writeJSON(w http.ResponseWriter, status int, appendBody func([]byte) []byte) {
	buf := bufpool.Get()
	*buf = appendBody(*buf)
	w.Header()["Content-Type"] = jsonContentType
	w.WriteHeader(status)
	w.Write(*buf)
	bufpool.Put(buf)
}

// writeError answers err in the JSON error shape. Errors that map to 500 are logged and
// shown only as internal errors.
func (h *handler) writeError(w http.ResponseWriter, r *http.Request, err error) {
	code := keystore.ErrorCode(err)
	status := wire.Status(code)
	message := keystore.ErrorMessage(err)
	if status == http.StatusInternalServerError {
		if r.Context().Err() != nil && errors.Is(err, context.Cause(r.Context())) {
			// The client left (a waiting acquire, typically): nobody reads this answer.
			h.logger.Debug("request abandoned by the client", "path", redact.Path(r.URL.Path), "err", err)
		} else {
			h.logger.Error("internal error", "method", r.Method, "path", redact.Path(r.URL.Path), "err", err)
		}
		code, message = keystore.EINTERNAL, wire.InternalMessage
	}
	var dup *keystore.Error
	if code == keystore.EALREADYEXISTS && errors.As(err, &dup) {
		wire.WriteRESTDuplicate(w, message, dup.Index)
		return
	}
	writeErrorStatus(w, status, code, message)
}

func writeErrorStatus(w http.ResponseWriter, status int, code keystore.Code, message string) {
	wire.WriteRESTError(w, status, code, message)
}

// optionalDuration parses the duration called name that a body may leave out: nil
// when s is empty.
func optionalDuration(name, s string) (*time.Duration, error) {
	if s == "" {
		return nil, nil
	}
	d, err := wire.ParseDuration(name, s)
	if err != nil {
		return nil, err
	}
	return &d, nil
}
