// Package wire is what every transport (GraphQL over each of its protocols, and REST)
// writes the same way: the codes of errors and their HTTP statuses, and the text of
// instants and durations. A rule of how clients see keypool lives here once.
package wire

import (
	"bytes"
	"encoding/json"
	"errors"
	"mime"
	"net/http"
	"slices"
	"strings"
	"time"

	"github.com/keypool/keypool/keystore"
)

// Codes of requests refused before they reach the pool; the pool's own codes are
// keystore's.
const (
	// CodeBadRequest: not a request keypool can read (malformed JSON, a body of
	// another media type, a query that is not a string, JSON over the limits).
	CodeBadRequest keystore.Code = "BAD_REQUEST"
	// CodeMethodNotAllowed: a method the route does not serve, or a mutation over GET.
	CodeMethodNotAllowed keystore.Code = "METHOD_NOT_ALLOWED"
	// CodeTooLarge: a request body over the 1 MiB limit.
	CodeTooLarge keystore.Code = "REQUEST_TOO_LARGE"
	// CodeForbidden: a request a browser sent from a page of another origin, or one
	// that the token's role may not make (access control).
	CodeForbidden keystore.Code = "FORBIDDEN"
	// CodeUnauthenticated: with access control on, a request without a known token.
	CodeUnauthenticated keystore.Code = "UNAUTHENTICATED"
	// CodeUnsupportedMediaType: a request body not declared as JSON.
	CodeUnsupportedMediaType keystore.Code = "UNSUPPORTED_MEDIA_TYPE"
	// CodeOperationLimit: one websocket operation more than a socket may run at once.
	CodeOperationLimit keystore.Code = "OPERATION_LIMIT_EXCEEDED"
)

// statuses is the HTTP status of each code that has one; any other code is 500.
var statuses = map[keystore.Code]int{
	keystore.ENOTFOUND:       http.StatusNotFound,
	keystore.ENOTBLOCKED:     http.StatusConflict,
	keystore.ELEASEMISMATCH:  http.StatusConflict,
	keystore.EINVALID:        http.StatusBadRequest,
	keystore.EUNAVAILABLE:    http.StatusServiceUnavailable,
	keystore.ETOOMANYWAITERS: http.StatusTooManyRequests,
	keystore.ENOTHELDBACK:    http.StatusConflict,
	keystore.EALREADYEXISTS:  http.StatusConflict,
	keystore.ENOTCONFIGURED:  http.StatusBadRequest,
	CodeBadRequest:           http.StatusBadRequest,
	CodeMethodNotAllowed:     http.StatusMethodNotAllowed,
	CodeTooLarge:             http.StatusRequestEntityTooLarge,
	CodeForbidden:            http.StatusForbidden,
	CodeUnauthenticated:      http.StatusUnauthorized,
	CodeUnsupportedMediaType: http.StatusUnsupportedMediaType,
}

// Status is the HTTP status of an answer whose error has code.
func Status(code keystore.Code) int {
	if status, ok := statuses[code]; ok {
		return status
	}
	return http.StatusInternalServerError
}

// InternalMessage is all a client learns of an internal error.
const InternalMessage = "internal error"

// ParseDuration parses what a client sent as the duration called name, in Go syntax
// ("90s", "1m30s"); the pool checks its range.
func ParseDuration(name, s string) (time.Duration, error) {
	d, err := time.ParseDuration(s)
	if err != nil {
		return 0, keystore.Errorf(keystore.EINVALID, "%s must be a duration in Go syntax such as \"90s\" or \"1m30s\", got %.32q", name, s)
	}
	if strings.HasPrefix(s, "-") { // "-0s" too: no duration a client sends is negative
		return 0, keystore.Errorf(keystore.EINVALID, "%s must not be negative, got %.32q", name, s)
	}
	return d, nil
}

// MaxBodyBytes is the largest request body any transport reads (and the largest
// websocket message); a larger one is refused with CodeTooLarge.
const MaxBodyBytes = 1 << 20

// ReadBody reads r's body, at most MaxBodyBytes, into one buffer of its size. A body
// over the limit is an error of code CodeTooLarge; one that cannot be read, the
// reader's error.
func ReadBody(w http.ResponseWriter, r *http.Request) ([]byte, error) {
	if r.ContentLength > MaxBodyBytes {
		return nil, errTooLarge()
	}
	var buf bytes.Buffer
	if r.ContentLength > 0 {
		buf.Grow(int(r.ContentLength) + bytes.MinRead) // room for the read that finds the end
	}
	if _, err := buf.ReadFrom(http.MaxBytesReader(w, r.Body, MaxBodyBytes)); err != nil {
		if _, ok := errors.AsType[*http.MaxBytesError](err); ok {
			return nil, errTooLarge()
		}
		return nil, err
	}
	return buf.Bytes(), nil
}

func errTooLarge() error {
	return keystore.Errorf(CodeTooLarge, "the request body is larger than %d bytes", MaxBodyBytes)
}

// Prefers reports whether h's Accept header names want before any of others (a
// media type of q=0 is not named).
func Prefers(h http.Header, want string, others ...string) bool {
	for part := range strings.SplitSeq(h.Get("Accept"), ",") {
		mediaType, params, err := mime.ParseMediaType(strings.TrimSpace(part))
		switch {
		case err != nil || params["q"] == "0":
		case mediaType == want:
			return true
		case slices.Contains(others, mediaType):
			return false
		}
	}
	return false
}

// ParseTime parses what a client sent as the instant called name: RFC 3339, as
// AppendTime writes it (any offset).
func ParseTime(name, s string) (time.Time, error) {
	t, err := time.Parse(time.RFC3339Nano, s)
	if err != nil {
		return time.Time{}, keystore.Errorf(keystore.EINVALID, "%s must be RFC 3339, got %.40q", name, s)
	}
	return t.UTC(), nil
}

// AppendTime appends t as every transport writes an instant: a JSON string in RFC 3339
// with fractional seconds (trailing zeros trimmed), in UTC.
func AppendTime(b []byte, t time.Time) []byte {
	b = append(b, '"')
	b = t.UTC().AppendFormat(b, time.RFC3339Nano)
	return append(b, '"')
}

// WriteRESTError answers in REST's error shape: {"error":{"code":…,"message":…}}.
func WriteRESTError(w http.ResponseWriter, status int, code keystore.Code, message string) {
	WriteJSON(w, MediaJSON, status, restErrorOf(code, message))
}

// RESTErrorBody is the body WriteRESTError writes, for an answer written without an
// http.ResponseWriter.
func RESTErrorBody(code keystore.Code, message string) []byte {
	return marshal(restErrorOf(code, message))
}

type restError struct {
	Error restErrorFields `json:"error"`
}

type restErrorFields struct {
	Code    keystore.Code `json:"code"`
	Message string        `json:"message"`
	// Index is ALREADY_EXISTS's position of the first duplicate.
	Index *int `json:"index,omitempty"`
}

// WriteRESTDuplicate answers an ALREADY_EXISTS error: as WriteRESTError, with the
// error's "index".
func WriteRESTDuplicate(w http.ResponseWriter, message string, index int) {
	body := restErrorOf(keystore.EALREADYEXISTS, message)
	body.Error.Index = &index
	WriteJSON(w, MediaJSON, Status(keystore.EALREADYEXISTS), body)
}

func restErrorOf(code keystore.Code, message string) restError {
	return restError{restErrorFields{Code: code, Message: message}}
}

// WriteGraphQLError answers a GraphQL request refused before it ran, in mediaType
// (MediaJSON or MediaGraphQLResponse): {"errors":[{"message":…,"extensions":{"code":…}}]},
// with no data entry, as GraphQL-over-HTTP has a request error.
func WriteGraphQLError(w http.ResponseWriter, mediaType string, status int, code keystore.Code, message string) {
	type extensions struct {
		Code keystore.Code `json:"code"`
	}
	type gqlError struct {
		Message    string     `json:"message"`
		Extensions extensions `json:"extensions"`
	}
	WriteJSON(w, mediaType+"; charset=utf-8", status, struct {
		Errors []gqlError `json:"errors"`
	}{[]gqlError{{message, extensions{code}}}})
}

// The media types of JSON answers.
const (
	MediaJSON            = "application/json"
	MediaGraphQLResponse = "application/graphql-response+json"
)

// WriteJSON writes body, an error answer, as JSON in contentType: the one writer of
// error bodies, whatever their shape.
func WriteJSON(w http.ResponseWriter, contentType string, status int, body any) {
	data := marshal(body)
	h := w.Header()
	h.Set("Content-Type", contentType)
	h.Set("X-Content-Type-Options", "nosniff")
	w.WriteHeader(status)
	_, _ = w.Write(data)
}

// marshal is body in JSON, with a newline.
func marshal(body any) []byte {
	data, err := json.Marshal(body)
	if err != nil { // error bodies hold strings and maps of them: cannot happen
		panic(err)
	}
	return append(data, '\n')
}
