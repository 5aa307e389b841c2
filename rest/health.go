package rest

import (
	"context"
	"log/slog"
	"net/http"
	"strconv"
	"time"

	"github.com/keypool/keypool/keystore"
	"github.com/keypool/keypool/wire"
)

// Healthz answers 200 "ok" for as long as the process serves HTTP (liveness). It
// serves GET and HEAD; other methods get 405 in the JSON error shape, so mount it
// without a method in its pattern (ServeMux's own 405 is plain text).
func Healthz() http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if !readOnly(w, r) {
			return
		}
		w.Header().Set("Content-Type", "text/plain; charset=utf-8")
		w.Write([]byte("ok\n"))
	})
}

// readyTimeout bounds one readiness probe, so a hung store answers 503, not never.
const readyTimeout = 2 * time.Second

// Readyz answers 200 "ok" when store.Ready succeeds, else 503 with the JSON error shape
// (code UNAVAILABLE, or INTERNAL_SERVER_ERROR for an error without a code). Asked for
// JSON (Accept: application/json), it answers {"ready":…,"store":kind,"reason":…}
// instead, at the same status, for pages and tools that show the reason. Like
// Healthz, it answers methods other than GET and HEAD itself.
func Readyz(store keystore.Store, kind string, logger *slog.Logger) http.Handler {
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if !readOnly(w, r) {
			return
		}
		ctx, cancel := context.WithTimeout(r.Context(), readyTimeout)
		defer cancel()
		err := store.Ready(ctx)
		var code keystore.Code
		var message string
		if err != nil {
			code, message = keystore.ErrorCode(err), keystore.ErrorMessage(err)
			if code != keystore.EUNAVAILABLE {
				logger.Error("readiness check failed", "err", err)
				code, message = keystore.EINTERNAL, wire.InternalMessage
			}
			if ctx.Err() != nil && r.Context().Err() == nil {
				code, message = keystore.EUNAVAILABLE, "store did not answer within "+readyTimeout.String()
			}
		}
		switch {
		case wire.Prefers(r.Header, wire.MediaJSON):
			status := http.StatusOK
			if err != nil {
				status = http.StatusServiceUnavailable
			}
			replicas := 0
			if err == nil {
				replicas, _ = store.Replicas(ctx) // 0, left out, if it cannot be counted
			}
			writeJSON(w, status, func(b []byte) []byte {
				b = strconv.AppendBool(append(b, `{"ready":`...), err == nil)
				b = appendString(append(b, `,"store":`...), kind)
				b = appendString(append(b, `,"reason":`...), message)
				if replicas > 0 {
					b = strconv.AppendInt(append(b, `,"replicas":`...), int64(replicas), 10)
				}
				return append(b, '}')
			})
		case err == nil:
			w.Header().Set("Content-Type", "text/plain; charset=utf-8")
			w.Write([]byte("ok\n"))
		default:
			writeErrorStatus(w, http.StatusServiceUnavailable, code, message)
		}
	})
}

// readOnly reports whether r is a GET or HEAD; it answers any other method with 405.
func readOnly(w http.ResponseWriter, r *http.Request) bool {
	if r.Method == http.MethodGet || r.Method == http.MethodHead {
		return true
	}
	methodNotAllowed("GET, HEAD").ServeHTTP(w, r)
	return false
}
