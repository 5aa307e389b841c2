package graph

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"io"
	"log/slog"
	"mime"
	"net"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/99designs/gqlgen/graphql"
)

// sseTransport is GraphQL over server-sent events (a POST with Accept:
// text/event-stream), on the wire as gqlgen's transport.SSE writes it: a ":" comment
// first, then "event: next" with each response as data, ": ping" comments when
// nothing was sent for keepAlive, and "event: complete" at the end. It is keypool's
// own so that keyEvents goes through the fan-out, as over a websocket: when the
// connection can be taken over (HTTP/1.x), the response is written on it directly,
// chunked, through an outbox, so that delivery never waits for a client and the
// events of a subscriber that is behind go out in one chunk; otherwise (HTTP/2, or a
// ResponseWriter that cannot be hijacked) through the ResponseWriter, flushed after
// each write by the outbox's flusher. A response whose connection is taken over is
// the connection's last (Connection: close).
type sseTransport struct {
	keepAlive    time.Duration
	writeTimeout time.Duration
	fanout       *fanout
	logger       *slog.Logger
}

var _ graphql.Transport = sseTransport{}

func (sseTransport) Supports(r *http.Request) bool {
	if !strings.Contains(r.Header.Get("Accept"), "text/event-stream") {
		return false
	}
	mediaType, _, err := mime.ParseMediaType(r.Header.Get("Content-Type"))
	return err == nil && r.Method == http.MethodPost && mediaType == mediaJSON
}

func (t sseTransport) Do(w http.ResponseWriter, r *http.Request, exec graphql.GraphExecutor) {
	params, _ := r.Context().Value(requestParamsKey{}).(*graphql.RawParams)
	if params == nil {
		refuse(w, r, http.StatusBadRequest, coded(codeBadRequest, "the request has no body"))
		return
	}
	params.Headers = r.Header
	params.ReadTime = graphql.TraceTiming{Start: graphql.Now(), End: graphql.Now()}

	ctx, cancel := context.WithCancel(r.Context())
	defer cancel()
	opCtx, opErr := exec.CreateOperationContext(ctx, params)
	ctx = graphql.WithOperationContext(ctx, opCtx)

	st := openSSEResponse(w, r, t.writeTimeout, cancel)
	if st == nil {
		return
	}
	defer st.finish()
	if st.send([]byte(":\n\n")) != nil {
		return
	}
	if t.keepAlive > 0 {
		st.keepAlive(ctx, t.keepAlive)
	}

	if opErr != nil {
		if st.event(exec.DispatchError(ctx, opErr)) != nil {
			return
		}
	} else {
		ctx, slot := withFanoutSlot(ctx, t.fanout)
		responses, dispatchCtx := exec.DispatchOperation(ctx, opCtx)
		if slot.sub != nil {
			// keyEvents: the fan-out delivers the events; then gqlgen's stream ends
			// as it would (with the subscription's error, if any).
			if t.fanout.start(dispatchCtx, slot.sub, slot.plan, st).wait() == endSink {
				return
			}
		}
		for {
			resp := responses(dispatchCtx)
			if resp == nil {
				break
			}
			if st.event(resp) != nil {
				return
			}
		}
	}
	_ = st.send([]byte("event: complete\n\n"))
}

// sseResponse is one SSE response being written.
type sseResponse struct {
	out     *outbox
	chunked bool          // every write is an HTTP/1.1 chunk (on a connection taken over)
	conn    net.Conn      // the connection taken over; nil when writing through the ResponseWriter
	stop    func()        // stops a write that waits for the client
	read    chan struct{} // closed when the client's side of a taken-over connection ends
	last    atomic.Int64  // unix nanoseconds of the last write queued
	pinging sync.WaitGroup
	noPing  context.CancelFunc
}

// openSSEResponse answers r with 200 and an event stream, on the connection itself
// if it can be taken over. cancel is called when the client goes away or a write
// fails. nil: the response could not start.
func openSSEResponse(w http.ResponseWriter, r *http.Request, stallTimeout time.Duration, cancel context.CancelFunc) *sseResponse {
	header := w.Header()
	header.Set("Cache-Control", "no-cache")
	header.Set("Content-Type", "text/event-stream")
	onFail := func(error) { cancel() }
	st := &sseResponse{}
	if r.ProtoMajor == 1 {
		if conn, rw, err := http.NewResponseController(w).Hijack(); err == nil {
			st.conn, st.chunked = conn, r.ProtoAtLeast(1, 1)
			st.out = newOutbox(conn, stallTimeout, onFail)
			st.stop = func() { _ = conn.Close() }
			st.read = make(chan struct{})
			go func() { // the client's end of the connection: it leaves when it closes
				defer close(st.read)
				defer cancel()
				_, _ = io.Copy(io.Discard, rw.Reader)
			}()
			head := st.head(header)
			if st.out.post(head) != nil {
				st.finish()
				return nil
			}
			return st
		}
	}
	header.Set("Connection", "keep-alive") // as gqlgen's SSE says it
	w.WriteHeader(http.StatusOK)
	rc := http.NewResponseController(w)
	st.out = newOutbox(responseConn{w: w, rc: rc}, stallTimeout, onFail)
	st.stop = func() { _ = rc.SetWriteDeadline(time.Now()) }
	return st
}

// head is the response's status line and header, on a connection taken over.
func (st *sseResponse) head(header http.Header) []byte {
	h := header.Clone()
	h.Set("Connection", "close")
	h.Set("Date", time.Now().UTC().Format(http.TimeFormat))
	if st.chunked {
		h.Set("Transfer-Encoding", "chunked")
	}
	var b bytes.Buffer
	b.WriteString("HTTP/1.1 200 OK\r\n")
	_ = h.Write(&b)
	b.WriteString("\r\n")
	return b.Bytes()
}

// send queues text as the stream's next bytes and waits until it is written.
func (st *sseResponse) send(text []byte) error {
	end, err := st.out.queue(func(b []byte) []byte { return st.appendChunk(b, len(text), text) })
	st.last.Store(time.Now().UnixNano())
	if err != nil {
		return err
	}
	return st.out.wait(end)
}

// event sends resp as a next event, marshalled as gqlgen's SSE does.
func (st *sseResponse) event(resp *graphql.Response) error {
	b, err := json.Marshal(resp)
	if err != nil {
		return err
	}
	return st.send(appendNextEvent(nil, b))
}

var (
	sseNextPrefix = []byte("event: next\ndata: ")
	sseNextSuffix = []byte("\n\n")
)

func appendNextEvent(b, payload []byte) []byte {
	b = append(b, sseNextPrefix...)
	b = append(b, payload...)
	return append(b, sseNextSuffix...)
}

// appendChunk appends parts, size bytes in all, as one chunk if the stream is chunked.
func (st *sseResponse) appendChunk(b []byte, size int, parts ...[]byte) []byte {
	if st.chunked {
		b = strconv.AppendInt(b, int64(size), 16)
		b = append(b, "\r\n"...)
	}
	for _, p := range parts {
		b = append(b, p...)
	}
	if st.chunked {
		b = append(b, "\r\n"...)
	}
	return b
}

func (st *sseResponse) backedUp(w outboxWaiter) bool { return st.out.backedUp(maxBacklog, w) }

// deliver implements sink: the events go out in one chunk.
func (st *sseResponse) deliver(payloads [][]byte, w outboxWaiter) (drained bool, size int, err error) {
	_, err = st.out.queue(func(b []byte) []byte {
		before := len(b)
		events := 0
		for _, p := range payloads {
			events += len(sseNextPrefix) + len(p) + len(sseNextSuffix)
		}
		b = slices.Grow(b, events+16)
		if st.chunked {
			b = strconv.AppendInt(b, int64(events), 16)
			b = append(b, "\r\n"...)
		}
		for _, p := range payloads {
			b = appendNextEvent(b, p)
		}
		if st.chunked {
			b = append(b, "\r\n"...)
		}
		size = len(b) - before
		return b
	})
	st.last.Store(time.Now().UnixNano())
	if err != nil {
		return false, 0, err
	}
	drained, err = st.out.kick(w)
	return drained, size, err
}

// keepAlive sends a ": ping" comment whenever nothing was written for interval,
// until ctx ends.
func (st *sseResponse) keepAlive(ctx context.Context, interval time.Duration) {
	ctx, st.noPing = context.WithCancel(ctx)
	st.pinging.Go(func() {
		timer := time.NewTimer(interval)
		defer timer.Stop()
		for {
			select {
			case <-ctx.Done():
				return
			case <-timer.C:
			}
			if since := time.Duration(time.Now().UnixNano() - st.last.Load()); since < interval {
				timer.Reset(interval - since)
				continue
			}
			st.last.Store(time.Now().UnixNano())
			if st.out.post(st.appendChunk(nil, len(ssePing), ssePing)) != nil {
				return
			}
			timer.Reset(interval)
		}
	})
}

var ssePing = []byte(": ping\n\n")

// finish ends the response: what is queued goes out (for a moment at most), the
// chunked body is ended, and the connection taken over is closed.
func (st *sseResponse) finish() {
	if st.noPing != nil {
		st.noPing()
		st.pinging.Wait()
	}
	if st.chunked {
		_ = st.out.post([]byte("0\r\n\r\n"))
	}
	st.out.drain(time.Now().Add(closeGraceAfterClose))
	if tcp, ok := st.conn.(*net.TCPConn); ok {
		_ = tcp.CloseWrite()
		select { // the client closes its end once it has read ours
		case <-st.read:
		case <-time.After(closeGraceAfterClose):
		}
	}
	st.stop()
	st.out.close()
}

// responseConn writes an outbox to an HTTP response, flushing each write.
type responseConn struct {
	w  http.ResponseWriter
	rc *http.ResponseController
}

func (c responseConn) Write(p []byte) (int, error) {
	n, err := c.w.Write(p)
	if err == nil {
		err = c.rc.Flush()
	}
	return n, err
}

func (c responseConn) SetWriteDeadline(t time.Time) error {
	if err := c.rc.SetWriteDeadline(t); err != nil && !errors.Is(err, http.ErrNotSupported) {
		return err
	}
	return nil
}
