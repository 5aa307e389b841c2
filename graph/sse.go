package graph

import (
	"context"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"sync"
	"time"

	"github.com/99designs/gqlgen/graphql"

	"github.com/keypool/keypool/graph/fanout"
	"github.com/keypool/keypool/wire"
)

// sseTransport is GraphQL over server-sent events in the GraphQL-over-SSE protocol's
// "distinct connections" mode (graphql-sse's): a POST with Accept: text/event-stream
// is answered 200 with "next" events, a response each, then a "complete" event. A ":"
// comment opens the stream, ": ping" comments keep an idle one open through proxies.
// It writes through the ResponseWriter alone (each write flushed, under a deadline),
// so it is the same on HTTP/1.1 and HTTP/2.
type sseTransport struct {
	fanout *fanout.Fanout
}

// Supports takes a POST whose Accept header prefers an event stream: it names
// text/event-stream before any JSON media type (urql names every type it reads, an
// event stream last, and gets JSON).
func (sseTransport) Supports(r *http.Request) bool {
	return r.Method == http.MethodPost && isJSON(r) &&
		wire.Prefers(r.Header, "text/event-stream", wire.MediaJSON, wire.MediaGraphQLResponse, "application/graphql+json")
}

func (t sseTransport) Do(w http.ResponseWriter, r *http.Request, exec graphql.GraphExecutor) {
	body, err := io.ReadAll(r.Body) // endpoint has bounded and checked it
	if err != nil {
		return
	}
	params, perr := decodeRequest(body, r.Header)
	if perr != nil {
		refuse(w, r, perr)
		return
	}

	ctx, cancel := context.WithCancel(r.Context())
	defer cancel()
	opCtx, opErr := exec.CreateOperationContext(ctx, params)
	ctx = graphql.WithOperationContext(ctx, opCtx)

	header := w.Header()
	header.Set("Content-Type", "text/event-stream")
	header.Set("Cache-Control", "no-cache")
	w.WriteHeader(http.StatusOK)
	st := &sseStream{w: w, rc: http.NewResponseController(w), fail: cancel}
	if st.write([]byte(":\n\n")) != nil {
		return
	}
	defer st.keepAlive(KeepAlivePingInterval)()

	if opErr != nil {
		if !st.event(exec.DispatchError(ctx, opErr)) {
			return
		}
	} else if !execute(ctx, exec, opCtx, t.fanout, st, st.event) {
		return
	}
	_ = st.write([]byte("event: complete\ndata:\n\n"))
}

// sseStream is one SSE response being written: every write whole, flushed, under
// WebsocketWriteTimeout, one at a time.
type sseStream struct {
	w    http.ResponseWriter
	rc   *http.ResponseController
	fail context.CancelFunc // the client cannot be written to: stop

	mu      sync.Mutex
	last    time.Time // of the last write
	over    bool      // nothing more is written: a write failed, or the stream ended
	pending []byte    // events queued for the next Flush
}

var errStreamOver = errors.New("the stream can no longer be written")

// write writes b and flushes it, unless the stream is over.
func (st *sseStream) write(b []byte) error {
	st.mu.Lock()
	defer st.mu.Unlock()
	return st.writeLocked(b)
}

func (st *sseStream) writeLocked(b []byte) error {
	if st.over {
		return errStreamOver
	}
	st.last = time.Now()
	err := st.rc.SetWriteDeadline(st.last.Add(WebsocketWriteTimeout))
	if errors.Is(err, http.ErrNotSupported) {
		err = nil
	}
	if err == nil {
		_, err = st.w.Write(b)
	}
	if err == nil {
		err = st.rc.Flush()
	}
	if err != nil {
		st.over = true
		st.fail()
	}
	return err
}

// event writes resp as a next event, and reports whether it did.
func (st *sseStream) event(resp *graphql.Response) bool {
	b, err := json.Marshal(resp)
	if err != nil {
		return false
	}
	st.Queue([][]byte{b})
	return st.Flush(nil, nil) == nil
}

// Queue implements fanout.Sink.
func (st *sseStream) Queue(payloads [][]byte) int {
	const next, end = "event: next\ndata: ", "\n\n"
	st.mu.Lock()
	defer st.mu.Unlock()
	before := len(st.pending)
	need := 0
	for _, p := range payloads {
		need += len(next) + len(p) + len(end)
	}
	st.pending = fanout.Grow(st.pending, need)
	for _, p := range payloads {
		st.pending = append(append(append(st.pending, next...), p...), end...)
	}
	return len(st.pending) - before
}

// Flush implements fanout.Sink: the events go out in one write. An HTTP response cannot
// be written on after a write timed out, so it waits for its client in one go,
// without calling stalled.
func (st *sseStream) Flush(_ func(func()), _ func()) error {
	st.mu.Lock()
	defer st.mu.Unlock()
	err := st.writeLocked(st.pending)
	st.pending = fanout.Recycle(st.pending)
	return err
}

// keepAlive writes a ": ping" comment whenever nothing was written for interval, until
// the stop it returns ends the stream.
func (st *sseStream) keepAlive(interval time.Duration) (stop func()) {
	st.mu.Lock() // the timer is set before its function reads it
	defer st.mu.Unlock()
	var timer *time.Timer
	timer = time.AfterFunc(interval, func() {
		st.mu.Lock()
		defer st.mu.Unlock()
		idle := time.Since(st.last)
		if idle >= interval {
			if st.writeLocked([]byte(": ping\n\n")) != nil {
				return
			}
			idle = 0
		}
		timer.Reset(interval - idle)
	})
	return func() {
		st.mu.Lock()
		defer st.mu.Unlock()
		st.over = true
		timer.Stop()
	}
}
