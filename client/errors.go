package client

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"strings"

	"github.com/Khan/genqlient/graphql"
	"github.com/vektah/gqlparser/v2/gqlerror"
)

// Code is an error code as a keypool server sends it in extensions.code. A Code is
// also an error, so that errors.Is(err, client.ErrNotFound) tells whether err is an
// answer with that code.
type Code string

func (c Code) Error() string { return string(c) }

// The codes a keypool server answers with (see the "Errors" table of docs/api.md).
const (
	// ErrNotFound: no such key; or acquireKey found no free key.
	ErrNotFound Code = "NOT_FOUND"
	// ErrNotBlocked: unblockKey or renewLease on an AVAILABLE key.
	ErrNotBlocked Code = "NOT_BLOCKED"
	// ErrLeaseMismatch: the token is not the current lease's.
	ErrLeaseMismatch Code = "LEASE_MISMATCH"
	// ErrBadUserInput: an argument out of range or malformed.
	ErrBadUserInput Code = "BAD_USER_INPUT"
	// ErrUnavailable: the server's store cannot be reached; retry later.
	ErrUnavailable Code = "UNAVAILABLE"
	// ErrSlowConsumer: a keyEvents stream fell too far behind and was cut.
	ErrSlowConsumer Code = "SLOW_CONSUMER"
	// ErrStreamChanged: keyEvents was asked to resume a stream of events that has
	// started again from seq 1 since (the server restarted, a Redis pool was made
	// anew); Extensions["stream"] names the current one. Subscribe handles it.
	ErrStreamChanged Code = "STREAM_CHANGED"
	// ErrNotHeldBack: restoreKey of a key neither COOLING nor QUARANTINED.
	ErrNotHeldBack Code = "NOT_HELD_BACK"
	// ErrAlreadyExists: importKeys of a secret the pool holds already; Error.Index
	// names the first duplicate.
	ErrAlreadyExists Code = "ALREADY_EXISTS"
	// ErrNotConfigured: an operation the server is not set up for.
	ErrNotConfigured Code = "NOT_CONFIGURED"
	// ErrInternal: a failure inside the server.
	ErrInternal Code = "INTERNAL_SERVER_ERROR"
	// ErrParseFailed and ErrValidationFailed: the operation is not valid for the
	// server's schema (a client built for another version of it).
	ErrParseFailed      Code = "GRAPHQL_PARSE_FAILED"
	ErrValidationFailed Code = "GRAPHQL_VALIDATION_FAILED"
	// ErrComplexityLimit: the operation asks for too much at once.
	ErrComplexityLimit Code = "COMPLEXITY_LIMIT_EXCEEDED"
)

// Error is an error the server answered with. Code is its extensions.code (empty if
// the server gave none, for example a proxy's 502 page); match it with errors.Is
// against the Err* codes, or read it with errors.As.
type Error struct {
	Code    Code
	Message string
	// Extensions holds the error's extensions as sent, code included, for details
	// that only some codes carry.
	Extensions map[string]any
	// StatusCode is the HTTP status when it was not 200; zero otherwise (and over
	// WebSocket).
	StatusCode int
}

func (e *Error) Error() string {
	switch {
	case e.Code != "":
		return fmt.Sprintf("%s: %s", e.Code, e.Message)
	case e.StatusCode != 0:
		return fmt.Sprintf("HTTP %d: %s", e.StatusCode, e.Message)
	default:
		return e.Message
	}
}

// Is reports whether target is e's code, so that errors.Is(err, ErrNotFound) works.
func (e *Error) Is(target error) bool {
	c, ok := target.(Code)
	return ok && c != "" && c == e.Code
}

// Index is the position of the first duplicate secret of an ErrAlreadyExists, and
// -1 for any other error.
func (e *Error) Index() int {
	if i, ok := e.Extensions["index"].(float64); ok && e.Code == ErrAlreadyExists {
		return int(i)
	}
	if i, ok := e.Extensions["index"].(json.Number); ok && e.Code == ErrAlreadyExists {
		if n, err := i.Int64(); err == nil {
			return int(n)
		}
	}
	return -1
}

// ErrorCode returns the code of the server's answer in err's chain, or "" if there
// is none (nil, a network failure, a cancelled context).
func ErrorCode(err error) Code {
	var e *Error
	if errors.As(err, &e) {
		return e.Code
	}
	return ""
}

// maxErrorBody bounds how much of a non-GraphQL error body ends up in a message.
const maxErrorBody = 200

// fromGraphQL turns what genqlient returns into the package's errors: the first
// error of a GraphQL answer (one operation is sent at a time, so there is rarely
// more) becomes an *Error; anything else (network, context) is kept as it is.
func fromGraphQL(err error) error {
	if err == nil {
		return nil
	}
	var list gqlerror.List
	if errors.As(err, &list) && len(list) > 0 {
		return fromGQLError(list[0], 0)
	}
	var httpErr *graphql.HTTPError
	if errors.As(err, &httpErr) {
		status := httpErr.StatusCode
		if errs := httpErr.Response.Errors; len(errs) > 0 {
			if e := fromGQLError(errs[0], status); e.Code != "" {
				return e
			}
			// Not a GraphQL answer: genqlient put the raw body in the message.
			msg := strings.TrimSpace(errs[0].Message)
			if len(msg) > maxErrorBody {
				msg = msg[:maxErrorBody] + "…"
			}
			if msg == "" {
				msg = http.StatusText(status)
			}
			return &Error{Message: msg, StatusCode: status}
		}
		return &Error{Message: http.StatusText(status), StatusCode: status}
	}
	return err
}

func fromGQLError(g *gqlerror.Error, status int) *Error {
	e := &Error{Message: g.Message, Extensions: g.Extensions, StatusCode: status}
	if code, ok := g.Extensions["code"].(string); ok {
		e.Code = Code(code)
	}
	return e
}

// transient reports whether err may go away by itself, so that the same request is
// worth sending again: the store unavailable, a failure in or before the server,
// a network error. A definite answer about the key (NOT_FOUND, LEASE_MISMATCH,
// NOT_BLOCKED), a refused argument and a cancelled context are not.
func transient(err error) bool {
	if err == nil || errors.Is(err, context.Canceled) {
		return false
	}
	var e *Error
	if !errors.As(err, &e) {
		return true // network, timeout, a body cut short
	}
	switch e.Code {
	case ErrUnavailable, ErrInternal:
		return true
	case "":
		return e.StatusCode >= 500 || e.StatusCode == http.StatusTooManyRequests
	}
	return false
}

// leaseGone reports whether err says for sure that a lease is no longer held.
func leaseGone(err error) bool {
	return errors.Is(err, ErrNotFound) || errors.Is(err, ErrLeaseMismatch) || errors.Is(err, ErrNotBlocked)
}
