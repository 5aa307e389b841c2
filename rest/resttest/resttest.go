// Package resttest checks HTTP exchanges with keypool's REST routes against their
// OpenAPI document (rest.OpenAPI), so that a handler that drifts from the document
// fails the tests that drive it.
//
// Wrap the handler under test with Handler, or a client's transport with Transport:
// every exchange with /v1 or the operations routes then goes through Check. The
// document is written by hand; these checks are what keeps it true.
package resttest

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"path"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"

	"github.com/getkin/kin-openapi/openapi3"
	"github.com/getkin/kin-openapi/openapi3filter"
	"github.com/getkin/kin-openapi/routers"
	"github.com/getkin/kin-openapi/routers/gorillamux"

	"github.com/keypool/keypool/rest"
)

// Validator checks requests and answers against the document. It is safe for
// concurrent use.
type Validator struct {
	doc    *openapi3.T
	router routers.Router
	// anyRoute answers what a request may get before, or without, any route: the
	// statuses of the document's shared responses that do not depend on the route.
	anyRoute *routers.Route
}

// unrouted names, by status, the responses of components that a request under /v1
// may get when it names no route of the document: a wrong method, an unknown path, or
// a refusal before routing (an oversized or unreadable body, the edge's checks).
var unrouted = map[int]string{
	http.StatusBadRequest:            "BadRequest",
	http.StatusForbidden:             "Forbidden",
	http.StatusNotFound:              "NoRoute",
	http.StatusMethodNotAllowed:      "MethodNotAllowed",
	http.StatusRequestEntityTooLarge: "TooLarge",
	http.StatusUnsupportedMediaType:  "UnsupportedMediaType",
}

var loaded = sync.OnceValues(func() (*Validator, error) { return New(rest.OpenAPI()) })

func init() {
	// The docs page: its body is checked as a string (its schema), like text/plain.
	openapi3filter.RegisterBodyDecoder("text/html", openapi3filter.PlainBodyDecoder)
}

// Load returns the Validator of the embedded document, loaded and linted once.
func Load() (*Validator, error) { return loaded() }

// New loads an OpenAPI document, lints it (kin-openapi's Validate: structure,
// references, formats, patterns, and every example against its schema) and returns
// its Validator.
func New(document []byte) (*Validator, error) {
	loader := openapi3.NewLoader()
	doc, err := loader.LoadFromData(document)
	if err != nil {
		return nil, fmt.Errorf("loading the OpenAPI document: %w", err)
	}
	if err := doc.Validate(context.Background(), openapi3.EnableSchemaFormatValidation(), openapi3.EnableExamplesValidation()); err != nil {
		return nil, fmt.Errorf("the OpenAPI document is not valid: %w", err)
	}
	router, err := gorillamux.NewRouter(doc)
	if err != nil {
		return nil, err
	}
	v := &Validator{doc: doc, router: router}
	responses := openapi3.NewResponses()
	for status, name := range unrouted {
		ref := doc.Components.Responses[name]
		if ref == nil {
			return nil, fmt.Errorf("the OpenAPI document has no components.responses.%s", name)
		}
		responses.Set(strconv.Itoa(status), ref)
	}
	responses.Delete("default")
	v.anyRoute = &routers.Route{Spec: doc, PathItem: &openapi3.PathItem{}, Operation: &openapi3.Operation{Responses: responses}}
	return v, nil
}

// Document returns the loaded document.
func (v *Validator) Document() *openapi3.T { return v.doc }

// Covers reports whether a request to urlPath is one the document describes: /v1 and
// below (also a path that cleans up to one, such as /x/../v1/stats), /healthz and
// /readyz.
func Covers(urlPath string) bool {
	underV1 := func(p string) bool { return p == "/v1" || strings.HasPrefix(p, "/v1/") }
	return underV1(urlPath) || underV1(path.Clean("/"+urlPath)) || urlPath == "/healthz" || urlPath == "/readyz"
}

// Exchange is one request with its answer, bodies read whole.
type Exchange struct {
	Request     *http.Request // its Body is not read: RequestBody holds it
	RequestBody []byte
	Status      int
	Header      http.Header
	Body        []byte
}

// Check returns an error when the exchange is not what the document says:
//   - an answer whose status the route does not document, or whose headers, content
//     type or body do not match what it documents for that status (a documented
//     answer without content must have no body);
//   - an error whose code is not one of those the documented response shows in its
//     examples (so a 404 cannot carry LEASE_MISMATCH);
//   - a request that breaks the document (a bad parameter, body, content) answered
//     with anything but a 4xx: what the document refuses, the server must refuse;
//   - a request to no route of the document answered other than by the responses
//     any request may get (404 NoRoute, 405 MethodNotAllowed with Allow, 413, ...).
//
// Exchanges the document does not cover pass: paths outside /v1 and the operations
// routes, and CORS preflights (answered by the CORS layer). A path under /v1 that is
// not canonical ("//", "." or ".." segments) names no route of the document: it gets
// 404 like any other, never net/http's redirect.
func (v *Validator) Check(ctx context.Context, x Exchange) error {
	req := x.Request
	if !Covers(req.URL.Path) {
		return nil
	}
	if req.Method == http.MethodOptions && req.Header.Get("Access-Control-Request-Method") != "" {
		return nil
	}
	// Route a copy whose body is the one read. HEAD is routed as GET: net/http serves
	// HEAD on every GET route, with GET's status and headers and no body.
	vreq := req.Clone(ctx)
	vreq.Body = io.NopCloser(bytes.NewReader(x.RequestBody))
	vreq.ContentLength = int64(len(x.RequestBody))
	if vreq.URL.Host == "" { // a server-side request: its URL is only a path
		vreq.URL.Scheme, vreq.URL.Host = "http", req.Host
	}
	head := req.Method == http.MethodHead
	if head {
		vreq.Method = http.MethodGet
	}
	route, pathParams, err := v.router.FindRoute(vreq)
	if err != nil {
		if !errors.Is(err, routers.ErrPathNotFound) && !errors.Is(err, routers.ErrMethodNotAllowed) {
			return fmt.Errorf("routing %s %s: %v", req.Method, req.URL.Path, err)
		}
		if _, ok := unrouted[x.Status]; !ok {
			return fmt.Errorf("%s %s names no route of the document (%v), yet was answered %d: %.300s",
				req.Method, req.URL.Path, err, x.Status, x.Body)
		}
		return v.checkResponse(ctx, x, &openapi3filter.RequestValidationInput{Request: vreq, Route: v.anyRoute}, head)
	}

	input := &openapi3filter.RequestValidationInput{
		Request:    vreq,
		PathParams: pathParams,
		Route:      route,
		Options: &openapi3filter.Options{
			RejectWhenRequestBodyNotSpecified: true,
			AuthenticationFunc:                openapi3filter.NoopAuthenticationFunc,
			SkipSettingDefaults:               true,
		},
	}
	requestErr := openapi3filter.ValidateRequest(ctx, input)
	if requestErr != nil && isContentTypeError(requestErr) && len(x.RequestBody) > 0 {
		// The routes read every body as JSON whatever its Content-Type (curl -d sends
		// a form type): judge the body as JSON, so that a good one may be served.
		vreq.Body = io.NopCloser(bytes.NewReader(x.RequestBody))
		vreq.Header.Set("Content-Type", "application/json")
		requestErr = openapi3filter.ValidateRequest(ctx, input)
	}
	if requestErr != nil && (x.Status < 400 || x.Status >= 500) {
		return fmt.Errorf("%s %s breaks the document (%v), yet was answered %d: %.300s",
			req.Method, req.URL.Path, requestErr, x.Status, x.Body)
	}
	return v.checkResponse(ctx, x, input, head)
}

func (v *Validator) checkResponse(ctx context.Context, x Exchange, input *openapi3filter.RequestValidationInput, head bool) error {
	req := x.Request
	responses := input.Route.Operation.Responses
	ref := responses.Status(x.Status)
	if ref == nil || ref.Value == nil {
		return fmt.Errorf("%s %s answered %d, which the document does not list for it (it lists %v): %.300s",
			req.Method, req.URL.Path, x.Status, statuses(responses), x.Body)
	}
	if head { // what ValidateResponse skips for HEAD: the documented headers
		for name, h := range ref.Value.Headers {
			if h.Value != nil && h.Value.Required && x.Header.Get(name) == "" {
				return fmt.Errorf("HEAD %s answered %d without the documented header %s", req.URL.Path, x.Status, name)
			}
		}
		return nil
	}
	if len(ref.Value.Content) == 0 && len(x.Body) > 0 {
		return fmt.Errorf("%s %s answered %d with a body, where the document says none: %.300s",
			req.Method, req.URL.Path, x.Status, x.Body)
	}
	err := openapi3filter.ValidateResponse(ctx, &openapi3filter.ResponseValidationInput{
		RequestValidationInput: input,
		Status:                 x.Status,
		Header:                 x.Header,
		Body:                   io.NopCloser(bytes.NewReader(x.Body)),
		Options:                &openapi3filter.Options{IncludeResponseStatus: true},
	})
	if err != nil {
		return fmt.Errorf("%s %s answered %d against the document: %v; body %.300s",
			req.Method, req.URL.Path, x.Status, err, x.Body)
	}
	return checkCode(x, ref.Value)
}

// checkCode checks an error answer's code against the codes that the documented
// response shows in its examples, when it shows any. An answer that is not an error
// passes where the response's examples show one that is not an error either.
func checkCode(x Exchange, response *openapi3.Response) error {
	media := response.Content.Get("application/json")
	if media == nil || len(media.Examples) == 0 {
		return nil
	}
	var codes []string
	for _, ex := range media.Examples {
		if ex.Value == nil {
			continue
		}
		if code := errorCode(ex.Value.Value); code != "" {
			codes = append(codes, code)
		}
	}
	if len(codes) == 0 {
		return nil
	}
	var answer any
	if err := json.Unmarshal(x.Body, &answer); err != nil {
		return fmt.Errorf("%s %s answered %d: %v", x.Request.Method, x.Request.URL.Path, x.Status, err)
	}
	if m, _ := answer.(map[string]any); m["error"] == nil && len(codes) < len(media.Examples) {
		return nil // not an error answer, and the response shows another kind (the schema checks it)
	}
	if code := errorCode(answer); !slices.Contains(codes, code) {
		slices.Sort(codes)
		return fmt.Errorf("%s %s answered %d with code %q; the document's %d response shows %v",
			x.Request.Method, x.Request.URL.Path, x.Status, code, x.Status, codes)
	}
	return nil
}

// errorCode returns error.code of a decoded error answer, or "".
func errorCode(v any) string {
	m, _ := v.(map[string]any)
	e, _ := m["error"].(map[string]any)
	code, _ := e["code"].(string)
	return code
}

func statuses(responses *openapi3.Responses) []string {
	var list []string
	for status := range responses.Map() {
		list = append(list, status)
	}
	slices.Sort(list)
	return list
}

func isContentTypeError(err error) bool {
	var re *openapi3filter.RequestError
	return errors.As(err, &re) && re.RequestBody != nil && strings.Contains(re.Error(), "Content-Type")
}

// Handler returns h wrapped so that every exchange through it is checked; a failure is
// reported with t.Errorf, so it fails the test without stopping it (handlers may run
// on other goroutines).
func Handler(t testing.TB, h http.Handler) http.Handler {
	v, err := Load()
	if err != nil {
		t.Fatal(err)
	}
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		var body []byte
		if r.Body != nil {
			var err error
			if body, err = io.ReadAll(r.Body); err != nil {
				t.Errorf("resttest: reading the request body of %s %s: %v", r.Method, r.URL.Path, err)
			}
			r.Body = io.NopCloser(bytes.NewReader(body))
		}
		rec := httptest.NewRecorder()
		h.ServeHTTP(rec, r)
		if err := v.Check(r.Context(), Exchange{Request: r, RequestBody: body, Status: rec.Code, Header: rec.Header(), Body: rec.Body.Bytes()}); err != nil {
			t.Errorf("resttest: %v", err)
		}
		for name, values := range rec.Header() {
			w.Header()[name] = values
		}
		w.WriteHeader(rec.Code)
		w.Write(rec.Body.Bytes())
	})
}

// Transport returns next (http.DefaultTransport if nil) wrapped so that every exchange
// the document covers is checked; RoundTrip fails with the check's error, so the
// client's caller sees it. The answer's body is read whole, and handed on unchanged.
func Transport(next http.RoundTripper) http.RoundTripper {
	if next == nil {
		next = http.DefaultTransport
	}
	return &transport{next: next}
}

type transport struct{ next http.RoundTripper }

// CloseIdleConnections closes the wrapped transport's idle connections, so that
// http.Client.CloseIdleConnections works through the wrapper.
func (t *transport) CloseIdleConnections() {
	if c, ok := t.next.(interface{ CloseIdleConnections() }); ok {
		c.CloseIdleConnections()
	}
}

func (t *transport) RoundTrip(req *http.Request) (*http.Response, error) {
	if !Covers(req.URL.Path) {
		return t.next.RoundTrip(req)
	}
	v, err := Load()
	if err != nil {
		return nil, err
	}
	var reqBody []byte
	if req.Body != nil && req.Body != http.NoBody {
		reqBody, err = io.ReadAll(req.Body)
		req.Body.Close()
		if err != nil {
			return nil, err
		}
		sent := *req // a RoundTripper must not modify the request it was given
		sent.Body = io.NopCloser(bytes.NewReader(reqBody))
		req = &sent
	}
	res, err := t.next.RoundTrip(req)
	if err != nil {
		return nil, err
	}
	body, err := io.ReadAll(res.Body)
	res.Body.Close()
	if err != nil {
		return nil, err
	}
	res.Body = io.NopCloser(bytes.NewReader(body))
	if err := v.Check(req.Context(), Exchange{Request: req, RequestBody: reqBody, Status: res.StatusCode, Header: res.Header, Body: body}); err != nil {
		return nil, fmt.Errorf("resttest: %w", err)
	}
	return res, nil
}
