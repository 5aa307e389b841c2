package graph

import (
	"bytes"
	"context"
	"encoding/json"
	"mime"
	"net/http"
	"net/url"
	"strconv"
	"strings"

	"github.com/99designs/gqlgen/graphql"
	"github.com/keypool/keypool/internal/fastjson"
	"github.com/vektah/gqlparser/v2/ast"
	"github.com/vektah/gqlparser/v2/gqlerror"
)

// Codes of the answers that refuse a request before GraphQL sees it.
const (
	// codeBadRequest: not a GraphQL request: a body that is not one JSON object, a
	// query that is not a string, variables or extensions that are not objects, JSON
	// nested or numerous beyond the limits, an unsupported content type (415), or a
	// subscription over plain HTTP.
	codeBadRequest = "BAD_REQUEST"
	// codeMethodNotAllowed: a method /graphql does not serve, or a mutation over GET
	// (405, with an Allow header).
	codeMethodNotAllowed = "METHOD_NOT_ALLOWED"
	// codeTooLarge: a body over MaxBodyBytes (413).
	codeTooLarge = "REQUEST_TOO_LARGE"
	// codeForbidden: a websocket upgrade from a foreign origin (403).
	codeForbidden = "FORBIDDEN"
	// codeOperationLimit: a websocket operation beyond MaxSocketOperations.
	codeOperationLimit = "OPERATION_LIMIT_EXCEEDED"
)

// Media types of GraphQL-over-HTTP responses.
const (
	mediaJSON             = "application/json"
	mediaGraphQLResponse  = "application/graphql-response+json"
	allowedMethods        = "GET, POST, OPTIONS"
	allowedMethodsForPost = "POST"
)

// coded returns an error with an extensions.code, as clients see it.
func coded(code, format string, args ...any) *gqlerror.Error {
	err := gqlerror.Errorf(format, args...)
	err.Extensions = map[string]any{"code": code}
	return err
}

// errorsOnly is a response to a request error: the GraphQL-over-HTTP spec has it
// carry no data entry at all, not even null.
type errorsOnly struct {
	Errors     gqlerror.List  `json:"errors"`
	Extensions map[string]any `json:"extensions,omitempty"`
}

// writeJSON writes v as the response, in the negotiated media type.
func writeJSON(w http.ResponseWriter, mediaType string, status int, v any) {
	body, err := json.Marshal(v)
	if err != nil {
		body, _ = json.Marshal(errorsOnly{Errors: gqlerror.List{coded("INTERNAL_SERVER_ERROR", internalMessage)}})
		status = http.StatusInternalServerError
	}
	w.Header().Set("Content-Type", mediaType+"; charset=utf-8")
	w.WriteHeader(status)
	_, _ = w.Write(body)
}

// refuse answers a request that is not served, with one coded error.
func refuse(w http.ResponseWriter, r *http.Request, status int, err *gqlerror.Error) {
	writeJSON(w, negotiate(r), status, errorsOnly{Errors: gqlerror.List{err}})
}

// negotiate picks the response's media type from the Accept header: the
// GraphQL-over-HTTP one when the client names it first, application/json otherwise
// (also when Accept is absent, or names neither).
func negotiate(r *http.Request) string {
	switch accept := r.Header.Get("Accept"); accept {
	case "", "*/*", mediaJSON: // the common cases, without parsing
		return mediaJSON
	}
	for part := range strings.SplitSeq(r.Header.Get("Accept"), ",") {
		mediaType, params, err := mime.ParseMediaType(strings.TrimSpace(part))
		if err != nil || params["q"] == "0" {
			continue
		}
		switch mediaType {
		case mediaGraphQLResponse:
			return mediaGraphQLResponse
		case mediaJSON, "application/*", "*/*":
			return mediaJSON
		}
	}
	return mediaJSON
}

// requestJSON is a POST body (or websocket subscribe payload) as JSON has it; the
// fields' types are checked after decoding, so that a wrong one is a clear refusal.
type requestJSON struct {
	Query         any             `json:"query"`
	OperationName any             `json:"operationName"`
	Variables     json.RawMessage `json:"variables"`
	Extensions    json.RawMessage `json:"extensions"`
}

// decodeRequest reads a GraphQL request from one JSON object: every transport's
// body or payload goes through it, so that one rule set holds for all.
func decodeRequest(body []byte) (*graphql.RawParams, *gqlerror.Error) {
	if err := checkJSON(body); err != nil {
		return nil, err
	}
	body = bytes.TrimSpace(body)
	if len(body) == 0 || body[0] != '{' {
		return nil, coded(codeBadRequest, "the request must be one JSON object")
	}
	if params, ok := decodeWellFormed(body); ok {
		return params, requireQuery(params)
	}
	var req requestJSON
	if err := json.Unmarshal(body, &req); err != nil {
		return nil, coded(codeBadRequest, "the request could not be decoded")
	}
	params := &graphql.RawParams{}
	switch q := req.Query.(type) {
	case string:
		params.Query = q
	case nil:
	default:
		return nil, coded(codeBadRequest, "query must be a string")
	}
	switch name := req.OperationName.(type) {
	case string:
		params.OperationName = name
	case nil:
	default:
		return nil, coded(codeBadRequest, "operationName must be a string")
	}
	var err *gqlerror.Error
	if params.Variables, err = decodeObject("variables", req.Variables); err != nil {
		return nil, err
	}
	if params.Extensions, err = decodeObject("extensions", req.Extensions); err != nil {
		return nil, err
	}
	if err := requireQuery(params); err != nil {
		return nil, err
	}
	return params, nil
}

// wellFormed is a request whose fields all have the types they should: decoded in
// one pass, as the common case; any other is decoded again, to say what is wrong.
type wellFormed struct {
	Query         string         `json:"query"`
	OperationName string         `json:"operationName"`
	Variables     map[string]any `json:"variables"`
	Extensions    map[string]any `json:"extensions"`
}

// decodeWellFormed decodes body, which checkJSON has found to be one JSON value, if it
// is one well-formed request, numbers kept exact, with the fast decoder: encoding/json's
// decoding takes some 4 µs for a typical request, a sixth of the server's time for it,
// and this some 2. What it does not decode goes to encoding/json, which says what is
// wrong.
func decodeWellFormed(body []byte) (*graphql.RawParams, bool) {
	var req wellFormed
	if !fastjson.Decode(body, &req, fastjson.Options{UseNumber: true}) {
		return nil, false
	}
	return &graphql.RawParams{Query: req.Query, OperationName: req.OperationName,
		Variables: req.Variables, Extensions: req.Extensions}, true
}

// requireQuery refuses a request with neither a query nor a persisted query's hash.
func requireQuery(params *graphql.RawParams) *gqlerror.Error {
	if params.Query == "" && params.Extensions["persistedQuery"] == nil {
		return coded(codeBadRequest, "the request has no query")
	}
	return nil
}

// decodeObject decodes an optional JSON object (absent or null: nil), with numbers
// kept exact, as gqlgen expects.
func decodeObject(name string, raw []byte) (map[string]any, *gqlerror.Error) {
	raw = bytes.TrimSpace(raw)
	if len(raw) == 0 || string(raw) == "null" {
		return nil, nil
	}
	if raw[0] != '{' {
		return nil, coded(codeBadRequest, "%s must be an object", name)
	}
	dec := json.NewDecoder(bytes.NewReader(raw))
	dec.UseNumber()
	var obj map[string]any
	if err := dec.Decode(&obj); err != nil {
		return nil, coded(codeBadRequest, "%s could not be decoded", name)
	}
	return obj, nil
}

// checkJSON refuses what is not one JSON value, or what holds more values or nests
// deeper than the limits, before anything is decoded: decoding allocates many times
// the size of a list of small values.
func checkJSON(b []byte) *gqlerror.Error {
	if !json.Valid(b) {
		return coded(codeBadRequest, "the request is not one JSON value")
	}
	values, depth := 0, 0
	for i := 0; i < len(b); i++ {
		switch b[i] {
		case '"':
			for i++; i < len(b) && b[i] != '"'; i++ {
				if b[i] == '\\' {
					i++
				}
			}
		case '{', '[':
			values++
			depth++
			if depth > MaxJSONDepth {
				return coded(codeBadRequest, "the request's JSON nests deeper than %d", MaxJSONDepth)
			}
		case '}', ']':
			depth--
		case ',':
			values++
		}
		if values > MaxJSONValues {
			return coded(codeBadRequest, "the request's JSON holds more than %d values", MaxJSONValues)
		}
	}
	return nil
}

// decodeQueryString reads a GraphQL request from a GET's query string.
func decodeQueryString(rawQuery string) (*graphql.RawParams, *gqlerror.Error) {
	values, err := url.ParseQuery(rawQuery)
	if err != nil {
		return nil, coded(codeBadRequest, "the query string could not be decoded")
	}
	params := &graphql.RawParams{Query: values.Get("query"), OperationName: values.Get("operationName")}
	var gqlErr *gqlerror.Error
	for _, p := range []struct {
		name string
		dst  *map[string]any
	}{{"variables", &params.Variables}, {"extensions", &params.Extensions}} {
		raw := values.Get(p.name)
		if raw == "" {
			continue
		}
		if gqlErr = checkJSON([]byte(raw)); gqlErr != nil {
			return nil, gqlErr
		}
		if *p.dst, gqlErr = decodeObject(p.name, []byte(raw)); gqlErr != nil {
			return nil, gqlErr
		}
	}
	if err := requireQuery(params); err != nil {
		return nil, err
	}
	return params, nil
}

// requestParamsKey finds, in a request's context, the *graphql.RawParams that guard
// decoded from its JSON body.
type requestParamsKey struct{}

// httpTransport is GraphQL over HTTP as the GraphQL-over-HTTP spec (and graphql-http's
// audit of it) has it: POST with a JSON body, GET for queries, responses in
// application/json or application/graphql-response+json as the client accepts.
// With application/json every well-formed request is answered 200, request errors
// included; with application/graphql-response+json a request error (one with no
// data: parse, validation, variables, complexity) is 400. Anything else /graphql
// cannot serve gets a coded JSON error: 405 with Allow for another method or a
// mutation over GET, 415 for another content type, 400 for a malformed request.
// It is the last transport, so that it answers every request the others do not.
type httpTransport struct {
	compiled *compiledOps // nil: every request through gqlgen
}

var _ graphql.Transport = httpTransport{}

func (httpTransport) Supports(r *http.Request) bool { return r.Header.Get("Upgrade") == "" }

func (t httpTransport) Do(w http.ResponseWriter, r *http.Request, exec graphql.GraphExecutor) {
	var params *graphql.RawParams
	var err *gqlerror.Error
	switch r.Method {
	case http.MethodOptions:
		w.Header().Set("Allow", allowedMethods)
		w.WriteHeader(http.StatusNoContent)
		return
	case http.MethodGet:
		params, err = decodeQueryString(r.URL.RawQuery)
	case http.MethodPost:
		if !isJSON(r) {
			refuse(w, r, http.StatusUnsupportedMediaType,
				coded(codeBadRequest, "a POST body must be application/json"))
			return
		}
		params, _ = r.Context().Value(requestParamsKey{}).(*graphql.RawParams)
		if params == nil {
			err = coded(codeBadRequest, "the request has no body")
		}
	default:
		w.Header().Set("Allow", allowedMethods)
		refuse(w, r, http.StatusMethodNotAllowed, coded(codeMethodNotAllowed, "%s is not served here; use GET or POST", r.Method))
		return
	}
	if err != nil {
		refuse(w, r, http.StatusBadRequest, err)
		return
	}
	mediaType := negotiate(r)
	if r.Method == http.MethodPost {
		if op := t.compiled.lookup(params); op != nil && t.compiled.serve(w, r, mediaType, op, params.Variables) {
			return
		}
	}
	params.Headers = r.Header
	params.ReadTime = graphql.TraceTiming{Start: graphql.Now(), End: graphql.Now()}
	ctx := graphql.StartOperationTrace(r.Context())
	opCtx, errs := exec.CreateOperationContext(ctx, params)
	if errs != nil {
		resp := exec.DispatchError(graphql.WithOperationContext(ctx, opCtx), errs)
		status := http.StatusOK
		if mediaType == mediaGraphQLResponse {
			status = http.StatusBadRequest
		}
		writeJSON(w, mediaType, status, errorsOnly{Errors: resp.Errors, Extensions: resp.Extensions})
		return
	}
	switch op := opCtx.Operation.Operation; {
	case r.Method == http.MethodGet && op != ast.Query:
		w.Header().Set("Allow", allowedMethodsForPost)
		refuse(w, r, http.StatusMethodNotAllowed, coded(codeMethodNotAllowed, "a %s must be sent with POST", op))
		return
	case op == ast.Subscription:
		refuse(w, r, http.StatusBadRequest,
			coded(codeBadRequest, "a subscription needs a websocket, or a POST with Accept: text/event-stream"))
		return
	}
	if r.Method == http.MethodPost {
		t.compiled.learn(params, opCtx)
	}
	responses, ctx := exec.DispatchOperation(ctx, opCtx)
	writeResponse(w, mediaType, responses(ctx))
}

// writeResponse writes an operation's response. One with data alone (a successful
// query or mutation, the common case) is written as it is, without re-encoding the
// data gqlgen encoded already.
func writeResponse(w http.ResponseWriter, mediaType string, resp *graphql.Response) {
	if resp == nil || len(resp.Errors) > 0 || len(resp.Extensions) > 0 || resp.Label != "" || resp.Path != nil ||
		resp.HasNext != nil || len(resp.Data) == 0 {
		writeJSON(w, mediaType, http.StatusOK, resp)
		return
	}
	writeData(w, mediaType, []byte(`{"data":`), resp.Data, []byte("}"))
}

// writeData writes a response of data alone, the concatenation of parts.
func writeData(w http.ResponseWriter, mediaType string, parts ...[]byte) {
	h := w.Header()
	h["Content-Type"] = contentTypes[mediaType]
	n := 0
	for _, p := range parts {
		n += len(p)
	}
	if n > smallResponse { // net/http counts a smaller one itself
		h["Content-Length"] = []string{strconv.Itoa(n)}
	}
	w.WriteHeader(http.StatusOK)
	for _, p := range parts {
		_, _ = w.Write(p)
	}
}

// smallResponse is the most a handler may write for net/http to send Content-Length
// itself (its buffer before chunking).
const smallResponse = 2048

// contentTypes are the Content-Type headers of the media types, shared: net/http
// only reads them.
var contentTypes = map[string][]string{
	mediaJSON:            {mediaJSON + "; charset=utf-8"},
	mediaGraphQLResponse: {mediaGraphQLResponse + "; charset=utf-8"},
}

// withParams records the request decoded from r's body for httpTransport.
func withParams(r *http.Request, params *graphql.RawParams) *http.Request {
	return r.WithContext(context.WithValue(r.Context(), requestParamsKey{}, params))
}
