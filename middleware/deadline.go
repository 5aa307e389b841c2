package middleware

import (
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"time"
)

// BodyDeadline gives each request's body timeout to arrive, counted from the end of
// its headers, so that a client sending a byte a second cannot hold a connection:
// reading past the deadline fails with a *BodyTimeoutError, and the server closes the
// connection. Once the body has been read to its end the deadline is lifted, so that
// what follows (an SSE stream, a waiting acquire) reads for as long as it likes; a
// request without a body (a websocket upgrade, a GET) gets no deadline at all. Where
// the connection cannot take a deadline (HTTP/2 streams can, tests' recorders not),
// requests pass unchanged.
//
// The headers themselves, and idle connections between requests, are bounded by the
// http.Server's ReadHeaderTimeout and IdleTimeout.
func BodyDeadline(timeout time.Duration, next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Body == nil || r.Body == http.NoBody {
			next.ServeHTTP(w, r)
			return
		}
		rc := http.NewResponseController(w)
		if err := rc.SetReadDeadline(time.Now().Add(timeout)); err != nil {
			next.ServeHTTP(w, r)
			return
		}
		r.Body = &deadlineBody{ReadCloser: r.Body, rc: rc, timeout: timeout}
		next.ServeHTTP(w, r)
	})
}

// BodyTimeoutError is the error of reading a body that did not arrive in time.
type BodyTimeoutError struct{ Timeout time.Duration }

func (e *BodyTimeoutError) Error() string {
	return fmt.Sprintf("the request body did not arrive within %v", e.Timeout)
}

// deadlineBody lifts its connection's read deadline when the body ends.
type deadlineBody struct {
	io.ReadCloser
	rc      *http.ResponseController
	timeout time.Duration
	ended   bool
}

func (b *deadlineBody) Read(p []byte) (int, error) {
	n, err := b.ReadCloser.Read(p)
	switch {
	case err == io.EOF && !b.ended:
		b.ended = true
		_ = b.rc.SetReadDeadline(time.Time{})
	case errors.Is(err, os.ErrDeadlineExceeded):
		err = &BodyTimeoutError{Timeout: b.timeout}
	}
	return n, err
}
