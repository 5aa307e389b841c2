package keystore

import (
	"errors"
	"fmt"
)

// Code classifies an error for clients. Transports map codes to GraphQL
// extensions.code and HTTP statuses in one place each.
type Code string

// The codes a Store returns. Their strings are the ones clients see.
const (
	ENOTFOUND      Code = "NOT_FOUND"
	ENOTBLOCKED    Code = "NOT_BLOCKED"
	ELEASEMISMATCH Code = "LEASE_MISMATCH"
	EINVALID       Code = "BAD_USER_INPUT"
	EUNAVAILABLE   Code = "UNAVAILABLE"
	// ENOTHELDBACK: Restore of a key that is neither COOLING nor QUARANTINED.
	ENOTHELDBACK Code = "NOT_HELD_BACK"
	// EALREADYEXISTS: an Import of a secret the pool holds already; Error.Index names
	// the position of the first duplicate in the request.
	EALREADYEXISTS Code = "ALREADY_EXISTS"
	// ENOTCONFIGURED: an operation the server is not set up for (a flag names what
	// is missing).
	ENOTCONFIGURED Code = "NOT_CONFIGURED"
	// ETOOMANYWAITERS: an Acquire that would wait, refused at once because
	// Options.MaxWaiters Acquires wait already; nothing changed.
	ETOOMANYWAITERS Code = "TOO_MANY_WAITERS"
	ESLOWCONSUMER   Code = "SLOW_CONSUMER"
	// ECOMPACTED: a subscription asked to resume after events that the pool no longer
	// retains; Error.OldestSeq names the oldest it does.
	ECOMPACTED Code = "EVENTS_COMPACTED"
	// ESTREAMCHANGED: a subscription asked to resume a stream of events that has
	// started again from seq 1 since; Error.Stream names the current one.
	ESTREAMCHANGED Code = "STREAM_CHANGED"
	EINTERNAL      Code = "INTERNAL_SERVER_ERROR"
)

// Error is an error with a code and a message fit for clients.
type Error struct {
	Code    Code
	Message string
	// Err is the cause, for logs; never shown to clients.
	Err error
	// OldestSeq is the oldest retained event's seq, with ECOMPACTED.
	OldestSeq int64
	// Stream is the current stream's id, with ESTREAMCHANGED.
	Stream string
	// Index is the position of the first duplicate, with EALREADYEXISTS.
	Index int
}

func (e *Error) Error() string {
	if e.Err != nil {
		return fmt.Sprintf("%s: %s: %v", e.Code, e.Message, e.Err)
	}
	return fmt.Sprintf("%s: %s", e.Code, e.Message)
}

func (e *Error) Unwrap() error { return e.Err }

// Errorf returns an *Error with code and a formatted message.
func Errorf(code Code, format string, args ...any) *Error {
	return &Error{Code: code, Message: fmt.Sprintf(format, args...)}
}

// ErrorCode returns the code of err: its *Error's code, or EINTERNAL for any other
// non-nil error, or "" for nil.
func ErrorCode(err error) Code {
	if err == nil {
		return ""
	}
	var e *Error
	if errors.As(err, &e) {
		return e.Code
	}
	return EINTERNAL
}

// ErrorMessage returns the client-facing message of err; errors without a code hide
// their text behind a generic message.
func ErrorMessage(err error) string {
	var e *Error
	if errors.As(err, &e) {
		return e.Message
	}
	return "internal error"
}
