package graph

import (
	"bufio"
	"context"
	"encoding/binary"
	"encoding/json"
	"errors"
	"io"
	"log/slog"
	"net"
	"net/http"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/99designs/gqlgen/graphql"
	"github.com/gorilla/websocket"
	"github.com/vektah/gqlparser/v2/gqlerror"
)

// The websocket subprotocols: graphql-ws's graphql-transport-ws, and the legacy
// graphql-ws of subscriptions-transport-ws (also used when a client names neither).
const (
	protocolTransportWS = "graphql-transport-ws"
	protocolLegacyWS    = "graphql-ws"
)

// Close codes of graphql-transport-ws (graphql-ws's PROTOCOL.md), used for both.
const (
	closeInvalidMessage  = 4400
	closeUnauthorized    = 4401
	closeInitTimeout     = 4408
	closeDuplicateID     = 4409
	closeTooManyInits    = 4429
	closeGraceAfterClose = time.Second // how long the client may take to answer our close
)

// websocketTransport is GraphQL over a websocket, in both subprotocols, written for
// keypool rather than taken from gqlgen, whose transport sends complete after an
// operation's error (graphql-transport-ws forbids it, and graphql-ws clients then
// miscount their operations), answers the complexity limit with next and complete,
// lets a duplicate operation id replace the first, and bounds neither the operations
// of a socket nor how long it may stay idle. Here, as PROTOCOL.md has it:
//   - an operation refused before it runs (a bad payload, parse, validation,
//     variables, complexity, or one operation more than MaxSocketOperations) gets one
//     error message and nothing after it;
//   - an operation that runs gets next messages then complete, unless the client
//     completed it first: then nothing more;
//   - a subscribe whose id is live closes the socket with 4409, one before
//     connection_init with 4401, a second connection_init with 4429, an invalid
//     message with 4400 (binary ones with 1003), a missing connection_init after
//     WebsocketInitTimeout with 4408, and a socket with no operation for
//     WebsocketIdleTimeout with 1000;
//   - graphql-transport-ws clients are pinged and dropped when they stop answering,
//     legacy ones get keep-alive messages.
//
// Every frame reaches the connection through its outbox, gorilla's own (the
// handshake, pongs, closes) included: keyEvents subscriptions are delivered by the
// fan-out's workers, which queue frames and write without waiting for the client, and
// coalesce the frames of a subscriber that is behind into one write.
type websocketTransport struct {
	opts socketOptions
}

// socketOptions are the transport's timings (limits.go's, or shorter in tests).
type socketOptions struct {
	initTimeout  time.Duration
	idleTimeout  time.Duration
	writeTimeout time.Duration
	pingInterval time.Duration // graphql-transport-ws: ping, and drop after twice this
	keepAlive    time.Duration // legacy graphql-ws: ka messages
	logger       *slog.Logger
	fanout       *fanout
}

var _ graphql.Transport = websocketTransport{}

func (websocketTransport) Supports(r *http.Request) bool { return r.Header.Get("Upgrade") != "" }

func (t websocketTransport) Do(w http.ResponseWriter, r *http.Request, exec graphql.GraphExecutor) {
	upgrader := websocket.Upgrader{
		Subprotocols: []string{protocolTransportWS, protocolLegacyWS},
		CheckOrigin:  func(*http.Request) bool { return true }, // guard has checked it
		Error: func(w http.ResponseWriter, r *http.Request, status int, reason error) {
			refuse(w, r, status, coded(codeBadRequest, "websocket upgrade refused: %v", reason))
		},
	}
	ctx, cancel := context.WithCancel(r.Context())
	c := &socket{
		opts:   t.opts,
		exec:   exec,
		header: r.Header,
		ctx:    ctx,
		cancel: cancel,
		ops:    map[string]*socketOp{},
		idle:   time.NewTimer(time.Hour),
	}
	c.idle.Stop()
	// gorilla writes through the outbox, like everything else.
	hijack := hijackInto{ResponseWriter: w, wrap: func(raw net.Conn) net.Conn {
		c.raw = raw
		c.out = newOutbox(raw, c.opts.writeTimeout, c.writeFailed)
		return gorillaConn{Conn: raw, out: c.out}
	}}
	conn, err := upgrader.Upgrade(hijack, r, nil)
	if err != nil {
		cancel()
		return // Error has answered
	}
	conn.SetReadLimit(MaxBodyBytes)
	c.conn = conn
	c.legacy = conn.Subprotocol() != protocolTransportWS
	c.serve()
}

// hijackInto hands the connection that Hijack takes over to wrap first.
type hijackInto struct {
	http.ResponseWriter
	wrap func(net.Conn) net.Conn
}

func (h hijackInto) Hijack() (net.Conn, *bufio.ReadWriter, error) {
	conn, rw, err := http.NewResponseController(h.ResponseWriter).Hijack()
	if err != nil {
		return nil, nil, err
	}
	return h.wrap(conn), rw, nil
}

// gorillaConn is the connection as gorilla sees it: it reads the socket, and what it
// writes itself (the handshake's answer, pongs, closes) is posted to the outbox,
// behind what is queued already; the outbox keeps its own deadlines.
type gorillaConn struct {
	net.Conn
	out *outbox
}

func (c gorillaConn) Write(p []byte) (int, error) {
	if err := c.out.post(p); err != nil {
		return 0, err
	}
	return len(p), nil
}

func (c gorillaConn) SetWriteDeadline(time.Time) error { return nil }
func (c gorillaConn) SetDeadline(t time.Time) error    { return c.Conn.SetReadDeadline(t) }

// socket is one websocket connection.
type socket struct {
	opts   socketOptions
	conn   *websocket.Conn
	raw    net.Conn // the connection under gorilla
	out    *outbox  // every write to raw
	legacy bool
	exec   graphql.GraphExecutor
	header http.Header
	ctx    context.Context // ends when the socket closes or the server shuts down
	cancel context.CancelFunc

	closing  atomic.Bool  // a close has begun: nothing more is written but the close
	lastPong atomic.Int64 // unix nanoseconds of the last pong (or of the ack)
	acked    atomic.Bool
	idle     *time.Timer // runs while no operation does
	wg       sync.WaitGroup

	mu  sync.Mutex // orders what is queued on out, and guards ops
	ops map[string]*socketOp
}

// socketOp is one running operation.
type socketOp struct {
	cancel   context.CancelFunc
	silenced bool // the client completed it: nothing more is sent for it
}

// inbound is a client's message, in either subprotocol.
type inbound struct {
	ID      string          `json:"id"`
	Type    string          `json:"type"`
	Payload json.RawMessage `json:"payload"`
}

// outbound is a server's message (fields in gqlgen's order, which some readers of
// the stream rely on).
type outbound struct {
	Payload any    `json:"payload,omitempty"`
	ID      string `json:"id,omitempty"`
	Type    string `json:"type"`
}

func (c *socket) serve() {
	c.wg.Add(1)
	go c.supervise()
	defer func() {
		c.closing.Store(true)
		c.cancel()
		c.lingeringClose()
		c.wg.Wait()
	}()
	_ = c.conn.SetReadDeadline(time.Now().Add(c.opts.initTimeout))
	for {
		typ, data, err := c.conn.ReadMessage()
		if err != nil {
			if isTimeout(err) && !c.acked.Load() && !c.closing.Load() {
				c.closeWith(closeInitTimeout, "Connection initialisation timeout")
			}
			return
		}
		if c.closing.Load() {
			continue // waiting for the client's close
		}
		if typ != websocket.TextMessage {
			c.closeWith(websocket.CloseUnsupportedData, "binary messages are not supported")
			continue
		}
		var msg inbound
		if err := json.Unmarshal(data, &msg); err != nil {
			c.closeWith(closeInvalidMessage, "Invalid message received")
			continue
		}
		c.handle(msg)
	}
}

func (c *socket) handle(msg inbound) {
	subscribe, complete := "subscribe", "complete"
	if c.legacy {
		subscribe, complete = "start", "stop"
	}
	switch msg.Type {
	case "connection_init":
		if c.acked.Load() {
			c.closeWith(closeTooManyInits, "Too many initialisation requests")
			return
		}
		if !isObjectOrNull(msg.Payload) {
			c.closeWith(closeInvalidMessage, "connection_init payload must be an object")
			return
		}
		_ = c.conn.SetReadDeadline(time.Time{})
		c.lastPong.Store(time.Now().UnixNano())
		c.acked.Store(true)
		c.write(nil, outbound{Type: "connection_ack"})
		if c.legacy {
			c.write(nil, outbound{Type: "ka"})
		}
		c.idle.Reset(c.opts.idleTimeout)
	case subscribe:
		c.subscribe(msg.ID, msg.Payload)
	case complete:
		c.mu.Lock()
		if op := c.ops[msg.ID]; op != nil {
			op.silenced = true
			op.cancel()
			c.removeLocked(msg.ID, op)
		}
		c.mu.Unlock()
	case "ping":
		if !c.legacy {
			c.write(nil, outbound{Type: "pong"})
			return
		}
		c.closeWith(closeInvalidMessage, "Invalid message received")
	case "pong":
		if !c.legacy {
			c.lastPong.Store(time.Now().UnixNano())
			return
		}
		c.closeWith(closeInvalidMessage, "Invalid message received")
	case "connection_terminate":
		if c.legacy {
			c.closeWith(websocket.CloseNormalClosure, "terminated")
			return
		}
		c.closeWith(closeInvalidMessage, "Invalid message received")
	default:
		c.closeWith(closeInvalidMessage, "Invalid message received")
	}
}

// subscribe starts an operation, or refuses it with one error message. It runs on
// the reading goroutine, so that one socket's documents are checked one at a time.
func (c *socket) subscribe(id string, payload json.RawMessage) {
	if !c.acked.Load() {
		c.closeWith(closeUnauthorized, "Unauthorized")
		return
	}
	if id == "" {
		c.closeWith(closeInvalidMessage, "subscribe without an id")
		return
	}
	c.mu.Lock()
	_, live := c.ops[id]
	running := len(c.ops)
	c.mu.Unlock()
	if live {
		c.closeWith(closeDuplicateID, closeReason("Subscriber for "+id+" already exists"))
		return
	}
	if running >= MaxSocketOperations {
		c.sendError(id, gqlerror.List{coded(codeOperationLimit,
			"this socket runs %d operations already, the most it may", MaxSocketOperations)})
		return
	}
	params, perr := decodeRequest(payload)
	if perr != nil {
		c.sendError(id, gqlerror.List{perr})
		return
	}
	params.Headers = c.header
	now := graphql.Now()
	params.ReadTime = graphql.TraceTiming{Start: now, End: now}

	ctx := graphql.StartOperationTrace(c.ctx)
	opCtx, errs := c.exec.CreateOperationContext(ctx, params)
	if errs != nil {
		resp := c.exec.DispatchError(graphql.WithOperationContext(ctx, opCtx), errs)
		c.sendError(id, resp.Errors)
		return
	}
	ctx, cancel := context.WithCancel(graphql.WithOperationContext(ctx, opCtx))
	op := &socketOp{cancel: cancel}
	c.mu.Lock()
	c.ops[id] = op
	c.idle.Stop()
	c.mu.Unlock()
	c.wg.Add(1)
	go c.run(ctx, id, op, opCtx)
}

// run executes one operation and sends its results, then complete.
func (c *socket) run(ctx context.Context, id string, op *socketOp, opCtx *graphql.OperationContext) {
	defer c.wg.Done()
	defer func() {
		c.mu.Lock()
		c.removeLocked(id, op)
		c.mu.Unlock()
		op.cancel()
	}()
	defer func() {
		if p := recover(); p != nil {
			err := opCtx.Recover(ctx, p)
			var gqlErr *gqlerror.Error
			if !errors.As(err, &gqlErr) {
				gqlErr = coded("INTERNAL_SERVER_ERROR", internalMessage)
			}
			c.sendError(id, gqlerror.List{gqlErr}, op)
		}
	}()
	ctx, slot := withFanoutSlot(ctx, c.opts.fanout)
	responses, ctx := c.exec.DispatchOperation(ctx, opCtx)
	next := "next"
	if c.legacy {
		next = "data"
	}
	if slot.sub != nil {
		// keyEvents: the fan-out delivers the events; then gqlgen's stream ends as
		// it would (with the subscription's error, if any).
		delivery := c.opts.fanout.start(ctx, slot.sub, slot.plan, newSocketSink(c, op, id, next))
		if delivery.wait() == endSink {
			op.cancel()
		}
	}
	for {
		resp := responses(ctx)
		if resp == nil {
			break
		}
		if !c.write(op, outbound{ID: id, Type: next, Payload: resp}) {
			return
		}
	}
	// Unless the client completed the operation, or the socket is closing (write
	// sends nothing then).
	c.write(op, outbound{ID: id, Type: "complete"})
}

// removeLocked forgets op, if it is still the one under id, and starts the idle
// clock when no operation is left.
func (c *socket) removeLocked(id string, op *socketOp) {
	if c.ops[id] != op {
		return
	}
	delete(c.ops, id)
	if len(c.ops) == 0 && !c.closing.Load() {
		c.idle.Reset(c.opts.idleTimeout)
	}
}

// sendError sends an operation's one error message: nothing follows it.
func (c *socket) sendError(id string, errs gqlerror.List, op ...*socketOp) {
	var o *socketOp
	if len(op) > 0 {
		o = op[0]
	}
	c.write(o, outbound{ID: id, Type: "error", Payload: errs})
}

// write sends msg unless the socket is closing or op (if any) was completed by the
// client, and reports whether it did. It waits until msg is written, as long as the
// client takes something within the write timeout.
func (c *socket) write(op *socketOp, msg outbound) bool {
	data, err := json.Marshal(msg)
	if err != nil {
		c.opts.logger.Error("websocket message not encodable", "err", err)
		return false
	}
	c.mu.Lock()
	if c.closing.Load() || op != nil && op.silenced {
		c.mu.Unlock()
		return false
	}
	end, err := c.out.queue(func(b []byte) []byte {
		return append(appendFrameHeader(b, websocket.TextMessage, len(data)), data...)
	})
	c.mu.Unlock()
	if err == nil {
		err = c.out.wait(end)
	}
	if err != nil {
		c.writeFailed(err)
		return false
	}
	return true
}

// writeFailed gives up a socket whose writes failed, or whose client took nothing for
// the write timeout: no close message could reach it, so the connection is closed.
func (c *socket) writeFailed(err error) {
	c.opts.logger.Debug("websocket write", "err", err)
	c.closing.Store(true)
	c.cancel()
	_ = c.raw.Close()
}

// socketSink delivers a keyEvents operation's frames to its socket.
type socketSink struct {
	c      *socket
	op     *socketOp
	suffix []byte // after the payload: ,"id":…,"type":"next"}
}

// socketNextPrefix opens a next (or legacy data) message, as outbound is marshalled.
var socketNextPrefix = []byte(`{"payload":`)

func newSocketSink(c *socket, op *socketOp, id, next string) *socketSink {
	quotedID, _ := json.Marshal(id)
	suffix := append([]byte(`,"id":`), quotedID...)
	suffix = append(suffix, `,"type":"`...)
	suffix = append(suffix, next...)
	suffix = append(suffix, `"}`...)
	return &socketSink{c: c, op: op, suffix: suffix}
}

func (k *socketSink) backedUp(w outboxWaiter) bool { return k.c.out.backedUp(maxBacklog, w) }

func (k *socketSink) deliver(payloads [][]byte, w outboxWaiter) (drained bool, size int, err error) {
	c := k.c
	c.mu.Lock()
	if c.closing.Load() || k.op.silenced {
		c.mu.Unlock()
		return false, 0, errSinkClosed
	}
	_, err = c.out.queue(func(b []byte) []byte {
		before := len(b)
		need := 0
		for _, p := range payloads {
			need += 10 + len(socketNextPrefix) + len(p) + len(k.suffix)
		}
		b = slices.Grow(b, need)
		for _, p := range payloads {
			b = appendFrameHeader(b, websocket.TextMessage, len(socketNextPrefix)+len(p)+len(k.suffix))
			b = append(b, socketNextPrefix...)
			b = append(b, p...)
			b = append(b, k.suffix...)
		}
		size = len(b) - before
		return b
	})
	c.mu.Unlock()
	if err != nil {
		return false, 0, err
	}
	drained, err = c.out.kick(w)
	return drained, size, err
}

// errSinkClosed: the operation or its connection is over.
var errSinkClosed = errors.New("the stream is closed")

// appendFrameHeader appends the header of an unmasked, final websocket frame (RFC
// 6455, 5.2) of opcode carrying n bytes: what a server sends.
func appendFrameHeader(b []byte, opcode int, n int) []byte {
	b = append(b, 0x80|byte(opcode))
	switch {
	case n <= 125:
		return append(b, byte(n))
	case n <= 0xffff:
		return binary.BigEndian.AppendUint16(append(b, 126), uint16(n))
	default:
		return binary.BigEndian.AppendUint64(append(b, 127), uint64(n))
	}
}

// closeWith begins closing the socket with code: operations stop silently, the close
// message goes out (at once, whatever a stalled write holds), and the reader waits a
// moment for the client's answer.
func (c *socket) closeWith(code int, reason string) {
	if c.closing.Swap(true) {
		return
	}
	c.cancel()
	err := c.conn.WriteControl(websocket.CloseMessage, websocket.FormatCloseMessage(code, reason),
		time.Now().Add(closeGraceAfterClose))
	if err != nil {
		_ = c.conn.Close() // the client cannot be told: no use waiting for it
		return
	}
	_ = c.conn.SetReadDeadline(time.Now().Add(closeGraceAfterClose))
}

// lingeringClose ends the connection without resetting it: it half-closes, then
// reads what the client still sends (a message in flight, its close) for a moment,
// so that the client gets our close message rather than a reset.
func (c *socket) lingeringClose() {
	c.out.drain(time.Now().Add(closeGraceAfterClose)) // the close message, and what is before it
	if tcp, ok := c.raw.(*net.TCPConn); ok {
		_ = tcp.CloseWrite()
		_ = tcp.SetReadDeadline(time.Now().Add(closeGraceAfterClose))
		_, _ = io.Copy(io.Discard, io.LimitReader(tcp, 4*MaxBodyBytes))
	}
	_ = c.conn.Close()
}

// supervise keeps the socket's clocks: it pings graphql-transport-ws clients (and
// drops one that stops answering), sends legacy clients keep-alives, closes an idle
// socket, and closes every socket when the server shuts down.
func (c *socket) supervise() {
	defer c.wg.Done()
	interval := c.opts.pingInterval
	if c.legacy {
		interval = c.opts.keepAlive
	}
	ticker := time.NewTicker(interval)
	defer ticker.Stop()
	for {
		select {
		case <-c.ctx.Done():
			c.closeWith(websocket.CloseNormalClosure, "terminated")
			return
		case <-c.idle.C:
			c.mu.Lock()
			idle := len(c.ops) == 0
			c.mu.Unlock()
			if idle {
				c.closeWith(websocket.CloseNormalClosure, "idle for too long")
				return
			}
		case <-ticker.C:
			switch {
			case !c.acked.Load():
			case c.legacy:
				c.write(nil, outbound{Type: "ka"})
			case time.Since(time.Unix(0, c.lastPong.Load())) > 2*interval:
				c.closeWith(websocket.CloseGoingAway, "ping not answered")
				return
			default:
				c.write(nil, outbound{Type: "ping"})
			}
		}
	}
}

func isObjectOrNull(raw json.RawMessage) bool {
	var obj map[string]json.RawMessage
	return len(raw) == 0 || json.Unmarshal(raw, &obj) == nil
}

// closeReason cuts a close reason to the 123 bytes a close frame holds.
func closeReason(s string) string {
	if len(s) > 123 {
		return strings.ToValidUTF8(s[:120], "") + "..."
	}
	return s
}

func isTimeout(err error) bool {
	var ne net.Error
	return errors.As(err, &ne) && ne.Timeout()
}
