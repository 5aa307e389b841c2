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

// sseTransport is GraphQL over server-sent events, as the GraphQL-over-SSE protocol's
// "distinct connections" mode has it (what the graphql-sse client speaks): a POST with
// Accept: text/event-stream is answered 200 with a stream of "next" events, each
// carrying one response as its data, then a "complete" event with an empty data
// line. A ":" comment opens the stream, and ": ping" comments keep an idle one open
// through proxies. It writes through the ResponseWriter alone (flushed after each
// write, each write under a deadline), so it is the same on HTTP/1.1 and HTTP/2.
type sseTransport struct {
	keepAlive    time.Duration
	writeTimeout time.Duration
	fanout       *fanout.Fanout
}

var _ graphql.Transport = sseTransport{}

// Supports takes a POST whose Accept header prefers an event stream: it names
// text/event-stream before any JSON media type (urql names every type it reads, an
// event stream last, and gets JSON).
func (sseTransport) Supports(r *http.Request) bool {
	return r.Method == http.MethodPost && isJSON(r) &&
		prefers(r, "text/event-stream", wire.MediaJSON, wire.MediaGraphQLResponse, "application/graphql+json")
}

func (t sseTransport) Do(w http.ResponseWriter, r *http.Request, exec graphql.GraphExecutor) {
	body, err := io.ReadAll(r.Body) // guard has bounded and checked it
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
	st := &sseStream{w: w, rc: http.NewResponseController(w), writeTimeout: t.writeTimeout, fail: cancel}
	if st.write([]byte(":\n\n")) != nil {
		return
	}
	stopPings := st.keepAlive(ctx, t.keepAlive)
	defer stopPings()

	if opErr != nil {
		if !st.event(exec.DispatchError(ctx, opErr)) {
			return
		}
	} else if !execute(ctx, exec, opCtx, t.fanout, st, st.event) {
		return
	}
	_ = st.write([]byte("event: complete\ndata:\n\n"))
}

// sseStream is one SSE response being written: every write whole, flushed, under the
// write timeout, one at a time.
type sseStream struct {
	w            http.ResponseWriter
	rc           *http.ResponseController
	writeTimeout time.Duration
	fail         context.CancelFunc // the client cannot be written to: stop

	mu      sync.Mutex
	last    time.Time // of the last write
	broken  bool
	pending []byte // events queued for the next Flush
}

// write writes b and flushes it, unless the stream has failed.
func (st *sseStream) write(b []byte) error {
	st.mu.Lock()
	defer st.mu.Unlock()
	return st.writeLocked(b)
}

var errStreamBroken = errors.New("the stream can no longer be written")

func (st *sseStream) writeLocked(b []byte) error {
	if st.broken {
		return errStreamBroken
	}
	st.last = time.Now()
	if err := st.rc.SetWriteDeadline(st.last.Add(st.writeTimeout)); err != nil && !errors.Is(err, http.ErrNotSupported) {
		return st.brokenLocked(err)
	}
	if _, err := st.w.Write(b); err != nil {
		return st.brokenLocked(err)
	}
	if err := st.rc.Flush(); err != nil {
		return st.brokenLocked(err)
	}
	return nil
}

func (st *sseStream) brokenLocked(err error) error {
	st.broken = true
	st.fail()
	return err
}

// event writes resp as a next event, and reports whether it did.
func (st *sseStream) event(resp *graphql.Response) bool {
	b, err := json.Marshal(resp)
	return err == nil && st.write(appendNextEvent(nil, b)) == nil
}

func appendNextEvent(b, payload []byte) []byte {
	b = append(b, "event: next\ndata: "...)
	b = append(b, payload...)
	return append(b, "\n\n"...)
}

// Queue implements fanout.Sink.
func (st *sseStream) Queue(payloads [][]byte) (int, error) {
	st.mu.Lock()
	defer st.mu.Unlock()
	before := len(st.pending)
	need := 0
	for _, p := range payloads {
		need += len("event: next\ndata: \n\n") + len(p)
	}
	st.pending = fanout.Grow(st.pending, need)
	for _, p := range payloads {
		st.pending = appendNextEvent(st.pending, p)
	}
	return len(st.pending) - before, nil
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

// keepAlive writes a ": ping" comment whenever nothing was written for interval,
// until ctx ends or the returned stop is called.
func (st *sseStream) keepAlive(ctx context.Context, interval time.Duration) (stop func()) {
	ctx, cancel := context.WithCancel(ctx)
	var wg sync.WaitGroup
	wg.Go(func() {
		timer := time.NewTimer(interval)
		defer timer.Stop()
		for {
			select {
			case <-ctx.Done():
				return
			case <-timer.C:
			}
			st.mu.Lock()
			idle := time.Since(st.last)
			var err error
			if idle >= interval {
				err, idle = st.writeLocked([]byte(": ping\n\n")), 0
			}
			st.mu.Unlock()
			if err != nil {
				return
			}
			timer.Reset(interval - idle)
		}
	})
	return func() { cancel(); wg.Wait() }
}
