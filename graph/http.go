package graph

import (
	"bytes"
	"encoding/json"
	"mime"
	"net/http"
	"net/url"
	"strings"

	"github.com/99designs/gqlgen/graphql"
	"github.com/99designs/gqlgen/graphql/handler/transport"
	"github.com/vektah/gqlparser/v2/gqlerror"

	"github.com/keypool/keypool/keystore"
	"github.com/keypool/keypool/wire"
)

// httpTransport is GraphQL over HTTP: gqlgen's own POST and GET transports, with what
// they answer otherwise than GraphQL-over-HTTP (and graphql-http's audit of it) has
// it mended around them:
//   - a request error (one that never ran: parse, validation, variables, complexity)
//     is 200 under application/json and 400 under application/graphql-response+json,
//     and carries no data entry at all;
//   - a body gqlgen cannot read as a request is 400 BAD_REQUEST, not echoed;
//   - a mutation over GET is 405 with Allow: POST; another method 405 with Allow;
//     a body that is not JSON 415; a subscription over plain HTTP 400;
//   - every refusal is a coded JSON error.
type httpTransport struct{}

func (httpTransport) Do(w http.ResponseWriter, r *http.Request, exec graphql.GraphExecutor) {
	var serve graphql.Transport = transport.POST{}
	var err *gqlerror.Error
	switch r.Method {
	case http.MethodOptions:
		w.Header().Set("Allow", allowedMethods)
		w.WriteHeader(http.StatusNoContent)
		return
	case http.MethodGet:
		serve, err = transport.GET{}, checkQueryString(r.URL.RawQuery)
	case http.MethodPost:
		if !isJSON(r) {
			err = coded(wire.CodeUnsupportedMediaType, "a POST body must be application/json")
		}
	default:
		w.Header().Set("Allow", allowedMethods)
		err = coded(wire.CodeMethodNotAllowed, "%s is not served here; use GET or POST", r.Method)
	}
	if err != nil {
		refuse(w, r, err)
		return
	}
	aw := &answerWriter{ResponseWriter: w}
	serve.Do(aw, r, exec) // endpoint has marked the context as plain HTTP's
	aw.finish()
}

const allowedMethods = "GET, POST, OPTIONS"

// answerWriter passes gqlgen's successful answers through, and holds back any other
// (it is small: a list of errors) to mend it in finish.
type answerWriter struct {
	http.ResponseWriter
	status int // what gqlgen wrote, while held back
	held   bytes.Buffer
}

func (a *answerWriter) WriteHeader(status int) {
	if status == http.StatusOK {
		a.ResponseWriter.WriteHeader(status)
		return
	}
	a.status = status
}

func (a *answerWriter) Write(p []byte) (int, error) {
	if a.status == 0 {
		return a.ResponseWriter.Write(p)
	}
	return a.held.Write(p)
}

// finish writes the held-back answer as GraphQL-over-HTTP has it.
func (a *answerWriter) finish() {
	if a.status == 0 {
		return
	}
	w := a.ResponseWriter
	mediaType := wire.MediaJSON
	if strings.HasPrefix(w.Header().Get("Content-Type"), wire.MediaGraphQLResponse) {
		mediaType = wire.MediaGraphQLResponse
	}
	w.Header().Del("Content-Type")
	var resp errorsOnly
	_ = json.Unmarshal(a.held.Bytes(), &resp)
	// gqlgen's POST words a body it cannot decode into a request so.
	if len(resp.Errors) == 0 || strings.HasPrefix(resp.Errors[0].Message, "json request body could not be decoded") {
		wire.WriteGraphQLError(w, mediaType, http.StatusBadRequest, wire.CodeBadRequest, notARequest)
		return
	}
	status := http.StatusOK // a request error, under application/json
	switch code := keystore.Code(codeOf(resp.Errors[0])); {
	case code == wire.CodeMethodNotAllowed:
		w.Header().Set("Allow", "POST")
		status = http.StatusMethodNotAllowed
	case code == wire.CodeForbidden || code == wire.CodeUnauthenticated: // access control
		status = wire.Status(code)
	case code == wire.CodeBadRequest || mediaType == wire.MediaGraphQLResponse:
		status = http.StatusBadRequest
	}
	wire.WriteJSON(w, mediaType+"; charset=utf-8", status, resp)
}

func codeOf(e *gqlerror.Error) string {
	code, _ := e.Extensions["code"].(string)
	return code
}

// errorsOnly is a response to a request error, which carries no data entry at all.
type errorsOnly struct {
	Errors     gqlerror.List  `json:"errors"`
	Extensions map[string]any `json:"extensions,omitempty"`
}

// refuse answers a request that is not served with one coded error, at its code's
// status, in GraphQL-over-HTTP's media type if Accept names it first.
func refuse(w http.ResponseWriter, r *http.Request, err *gqlerror.Error) {
	code, mediaType := keystore.Code(codeOf(err)), wire.MediaJSON
	if wire.Prefers(r.Header, wire.MediaGraphQLResponse, wire.MediaJSON, "application/*", "*/*") {
		mediaType = wire.MediaGraphQLResponse
	}
	wire.WriteGraphQLError(w, mediaType, wire.Status(code), code, err.Message)
}

// coded returns an error with an extensions.code, as clients see it.
func coded(code keystore.Code, format string, args ...any) *gqlerror.Error {
	err := gqlerror.Errorf(format, args...)
	err.Extensions = map[string]any{"code": string(code)}
	return err
}

func isJSON(r *http.Request) bool {
	contentType := r.Header.Get("Content-Type")
	if contentType == wire.MediaJSON {
		return true // the common case, without parsing
	}
	mediaType, _, err := mime.ParseMediaType(contentType)
	return err == nil && mediaType == wire.MediaJSON
}

// isWebsocket reports whether r asks to become a websocket. Another Upgrade (h2c,
// which curl --http2 offers) is ignored, as RFC 9110 7.8 lets a server do.
func isWebsocket(r *http.Request) bool { return hasToken(r.Header, "Upgrade", "websocket") }

// hasToken reports whether the comma-separated values of header name hold token.
func hasToken(h http.Header, name, token string) bool {
	for _, v := range h.Values(name) {
		for t := range strings.SplitSeq(v, ",") {
			if strings.EqualFold(strings.TrimSpace(t), token) {
				return true
			}
		}
	}
	return false
}

// checkJSON refuses what is not one JSON object within the JSON limits before anything
// decodes it: decoding allocates many times the size of a list of small values.
func checkJSON(b []byte) *gqlerror.Error {
	if !json.Valid(b) {
		return coded(wire.CodeBadRequest, "the request is not one JSON value")
	}
	if b = bytes.TrimSpace(b); len(b) == 0 || b[0] != '{' {
		return coded(wire.CodeBadRequest, "the request must be one JSON object")
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
				return coded(wire.CodeBadRequest, "the request's JSON nests deeper than %d", MaxJSONDepth)
			}
		case '}', ']':
			depth--
		case ',':
			values++
		}
		if values > MaxJSONValues {
			return coded(wire.CodeBadRequest, "the request's JSON holds more than %d values", MaxJSONValues)
		}
	}
	return nil
}

// checkQueryString refuses a GET's query string that gqlgen could not read, or whose
// variables or extensions are over the JSON limits.
func checkQueryString(rawQuery string) *gqlerror.Error {
	values, err := url.ParseQuery(rawQuery)
	if err != nil {
		return coded(wire.CodeBadRequest, "the query string could not be decoded")
	}
	if values.Get("query") == "" && values.Get("extensions") == "" {
		return coded(wire.CodeBadRequest, "the request has no query")
	}
	for _, name := range []string{"variables", "extensions"} {
		if raw := values.Get(name); raw != "" {
			if err := checkJSON([]byte(raw)); err != nil {
				err.Message = name + ": " + err.Message
				return err
			}
		}
	}
	return nil
}

// plainHTTPKey marks the context of an operation sent over plain HTTP, with its
// method: a subscription cannot be served there, nor anything but a query over GET
// (operationChecks).
type plainHTTPKey struct{}

// decodeRequest reads a GraphQL request under the JSON limits as gqlgen's POST does
// (numbers kept exact), for SSE's body and a websocket's subscribe payload.
func decodeRequest(body []byte, header http.Header) (*graphql.RawParams, *gqlerror.Error) {
	if err := checkJSON(body); err != nil {
		return nil, err
	}
	dec := json.NewDecoder(bytes.NewReader(body))
	dec.UseNumber()
	now := graphql.Now()
	params := &graphql.RawParams{Headers: header, ReadTime: graphql.TraceTiming{Start: now, End: now}}
	if err := dec.Decode(params); err != nil {
		return nil, coded(wire.CodeBadRequest, "%s", notARequest)
	}
	return params, nil
}

const notARequest = "the body is not a GraphQL request: query and operationName must be strings, variables and extensions objects"
