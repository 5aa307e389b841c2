package middleware

import (
	"net/http"
	"strings"
)

// IsStream reports whether r opens a long-lived stream: a websocket or an SSE stream.
func IsStream(r *http.Request) bool {
	return r.Header.Get("Upgrade") != "" || strings.Contains(r.Header.Get("Accept"), "text/event-stream")
}
