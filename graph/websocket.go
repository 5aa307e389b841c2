package graph

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"log/slog"
	"net"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/99designs/gqlgen/graphql"
	"github.com/99designs/gqlgen/graphql/handler/transport"
	"github.com/coder/websocket"
	"github.com/vektah/gqlparser/v2/gqlerror"

	"github.com/keypool/keypool/graph/fanout"
	"github.com/keypool/keypool/keystore"
	"github.com/keypool/keypool/wire"
)

// The subprotocols: graphql-ws's graphql-transport-ws, and subscriptions-transport-ws'
// legacy graphql-ws (also when a client names neither).
const (
	protocolTransportWS = "graphql-transport-ws"
	protocolLegacyWS    = "graphql-ws"
)

// Close codes of graphql-transport-ws (graphql-ws's PROTOCOL.md), used for both.
const (
	closeInvalidMessage websocket.StatusCode = 4400
	closeUnauthorized   websocket.StatusCode = 4401
	closeForbidden      websocket.StatusCode = 4403
	closeInitTimeout    websocket.StatusCode = 4408
	closeDuplicateID    websocket.StatusCode = 4409
	closeTooManyInits   websocket.StatusCode = 4429
)

// websocketTransport is GraphQL over a websocket, in both subprotocols: a state
// machine of the protocol on coder/websocket, every operation through the executor.
// It is keypool's, not gqlgen's, whose transport sends complete after an operation's
// error (graphql-transport-ws forbids it; graphql-ws clients then miscount), lets a
// duplicate id replace an operation, and bounds neither a socket's operations nor its
// idle time. Here, as PROTOCOL.md has it:
//   - an operation refused before it runs (bad payload, parse, validation, variables,
//     complexity, one more than MaxSocketOperations) gets one error message, no more;
//   - one that runs gets next messages then complete, unless the client completed it;
//   - the socket closes with 4409 for a subscribe whose id is live, 4401 for one
//     before connection_init, 4429 for a second connection_init, 4400 for an invalid
//     message (1003 a binary one, 1009 one over MaxBodyBytes), 4408 without
//     connection_init after WebsocketInitTimeout, 1000 after WebsocketIdleTimeout
//     without an operation;
//   - graphql-transport-ws clients are pinged and dropped when they stop answering,
//     legacy ones get keep-alive messages.
//
// Its timings are limits.go's, the first three shorter in tests.
type websocketTransport struct {
	initTimeout  time.Duration
	idleTimeout  time.Duration
	pingInterval time.Duration // graphql-transport-ws: ping, and drop after twice this
	logger       *slog.Logger
	fanout       *fanout.Fanout
	// init, if set, decides on connection_init's payload (access control): an error
	// closes the socket with 4403; its context is the operations' and, when it ends
	// before the socket (a token removed), closes the socket with 4403 too.
	init transport.WebsocketInitFunc
}

func (t websocketTransport) Do(w http.ResponseWriter, r *http.Request, exec graphql.GraphExecutor) {
	// A handshake the library would refuse is refused with a coded JSON error rather
	// than the library's text.
	problem := ""
	switch {
	case r.Method != http.MethodGet:
		problem = "the handshake must be a GET"
	case !hasToken(r.Header, "Connection", "upgrade"):
		problem = "Connection: upgrade is missing"
	case r.Header.Get("Sec-WebSocket-Version") != "13":
		problem = "Sec-WebSocket-Version must be 13"
	case r.Header.Get("Sec-WebSocket-Key") == "":
		problem = "Sec-WebSocket-Key is missing"
	}
	if problem != "" {
		refuse(w, r, coded(wire.CodeBadRequest, "websocket upgrade refused: %s", problem))
		return
	}
	held := &heldConn{}
	conn, err := websocket.Accept(hijackInto{ResponseWriter: w, held: held}, r, &websocket.AcceptOptions{
		Subprotocols:       []string{protocolTransportWS, protocolLegacyWS},
		InsecureSkipVerify: true, // endpoint has checked the origin
		CompressionMode:    websocket.CompressionDisabled,
	})
	if err != nil {
		return // the connection could not be taken over; Accept has answered
	}
	conn.SetReadLimit(MaxBodyBytes)
	ctx, cancel := context.WithCancel(r.Context())
	c := &socket{
		opts:     t,
		conn:     conn,
		held:     held,
		legacy:   conn.Subprotocol() != protocolTransportWS,
		exec:     exec,
		header:   r.Header,
		ctx:      ctx,
		cancel:   cancel,
		opBase:   ctx,
		ops:      map[string]*socketOp{},
		idleFrom: time.Now(),
	}
	c.serve()
}

// hijackInto hands the library the hijacked connection as a heldConn.
type hijackInto struct {
	http.ResponseWriter
	held *heldConn
}

func (h hijackInto) Hijack() (net.Conn, *bufio.ReadWriter, error) {
	conn, rw, err := http.NewResponseController(h.ResponseWriter).Hijack()
	if err != nil {
		return nil, nil, err
	}
	h.held.Conn = conn
	return h.held, bufio.NewReadWriter(rw.Reader, bufio.NewWriter(h.held)), nil
}

// heldConn is the connection under the websocket library. What the library writes
// between hold and release is gathered, and release sends it in one write: the events
// of a subscriber that is behind go out together.
type heldConn struct {
	net.Conn
	mu      sync.Mutex
	holding bool
	buf     []byte
}

func (c *heldConn) Write(p []byte) (int, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.holding {
		c.buf = append(c.buf, p...)
		return len(p), nil
	}
	return c.Conn.Write(p)
}

// hold gathers what the library writes from now on, about size bytes.
func (c *heldConn) hold(size int) {
	c.mu.Lock()
	c.holding = true
	c.buf = fanout.Grow(c.buf, size)
	c.mu.Unlock()
}

// abandon drops what was held: the connection is being given up.
func (c *heldConn) abandon() {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.holding = false
	c.buf = fanout.Recycle(c.buf)
}

// stallCheck is how often a release that waits for its client calls stalled.
const stallCheck = 250 * time.Millisecond

// release writes what was held, and gives up once the client has taken nothing for
// timeout. On a TCP connection, which a write that timed out leaves usable, it waits
// in slices of stallCheck and calls stalled after each.
func (c *heldConn) release(timeout time.Duration, stalled func()) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.holding = false
	defer func() { c.buf = fanout.Recycle(c.buf) }()
	defer c.Conn.SetWriteDeadline(time.Time{})
	_, sliced := c.Conn.(*net.TCPConn)
	lastProgress := time.Now()
	for written := 0; written < len(c.buf); {
		deadline := lastProgress.Add(timeout)
		if next := time.Now().Add(stallCheck); sliced && next.Before(deadline) {
			deadline = next
		}
		_ = c.Conn.SetWriteDeadline(deadline)
		n, err := c.Conn.Write(c.buf[written:])
		written += n
		if n > 0 {
			lastProgress = time.Now()
		}
		if err == nil {
			continue
		}
		if ne, ok := errors.AsType[net.Error](err); sliced && ok && ne.Timeout() && time.Since(lastProgress) < timeout {
			stalled()
			continue
		}
		return err
	}
	return nil
}

type socket struct {
	opts   websocketTransport
	conn   *websocket.Conn
	held   *heldConn
	legacy bool
	exec   graphql.GraphExecutor
	header http.Header
	ctx    context.Context // ends when the socket closes or the server shuts down
	cancel context.CancelFunc
	opBase context.Context // the operations' context: ctx, or what init made of it

	closing  atomic.Bool  // a close has begun: nothing more is written but the close
	acked    atomic.Bool  // connection_init was answered
	lastPong atomic.Int64 // unix nanoseconds of the last pong (or of the ack)
	wg       sync.WaitGroup

	writing sync.Mutex // one message (or one fan-out flush) at a time

	mu       sync.Mutex // guards ops and idleFrom
	ops      map[string]*socketOp
	idleFrom time.Time // when the last operation ended; zero while one runs
}

type socketOp struct {
	cancel   context.CancelFunc
	silenced atomic.Bool // the client completed it: nothing more is sent for it
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
	c.wg.Go(c.supervise)
	defer func() {
		c.closing.Store(true)
		c.cancel()
		c.wg.Wait()
		_ = c.conn.CloseNow()
	}()
	for {
		// The read ends when the connection does: the library closes it on a protocol
		// error or a message over the limit, and closeWith on ours.
		typ, data, err := c.conn.Read(context.Background())
		if err != nil {
			return
		}
		var msg inbound
		switch {
		case c.closing.Load(): // waiting for the client's close
		case typ != websocket.MessageText:
			c.closeWith(websocket.StatusUnsupportedData, "binary messages are not supported")
		case json.Unmarshal(data, &msg) != nil:
			c.closeWith(closeInvalidMessage, "Invalid message received")
		default:
			c.handle(msg)
		}
	}
}

func (c *socket) handle(msg inbound) {
	subscribe, complete := "subscribe", "complete"
	if c.legacy {
		subscribe, complete = "start", "stop"
	}
	switch t := msg.Type; {
	case t == "connection_init":
		var payload map[string]json.RawMessage
		switch {
		case c.acked.Load():
			c.closeWith(closeTooManyInits, "Too many initialisation requests")
		case len(msg.Payload) > 0 && json.Unmarshal(msg.Payload, &payload) != nil:
			c.closeWith(closeInvalidMessage, "connection_init payload must be an object")
		case c.opts.init != nil && !c.initialise(msg.Payload):
		default:
			c.lastPong.Store(time.Now().UnixNano())
			c.acked.Store(true)
			c.write(nil, outbound{Type: "connection_ack"})
			if c.legacy {
				c.write(nil, outbound{Type: "ka"})
			}
		}
	case t == subscribe:
		c.subscribe(msg.ID, msg.Payload)
	case t == complete:
		c.mu.Lock()
		if op := c.ops[msg.ID]; op != nil {
			op.silenced.Store(true)
			op.cancel()
			c.removeLocked(msg.ID, op)
		}
		c.mu.Unlock()
	case t == "ping" && !c.legacy:
		c.write(nil, outbound{Type: "pong"})
	case t == "pong" && !c.legacy:
		c.lastPong.Store(time.Now().UnixNano())
	case t == "connection_terminate" && c.legacy:
		c.closeWith(websocket.StatusNormalClosure, "terminated")
	default:
		c.closeWith(closeInvalidMessage, "Invalid message received")
	}
}

// initialise runs the transport's init on connection_init's payload, and reports
// whether the socket may go on (else it is closing with 4403).
func (c *socket) initialise(raw json.RawMessage) bool {
	var payload transport.InitPayload
	_ = json.Unmarshal(raw, &payload) // handle has checked it is an object, or nothing
	ctx, _, err := c.opts.init(c.ctx, payload)
	if err != nil {
		c.closeWith(closeForbidden, "Forbidden: "+err.Error())
		return false
	}
	c.opBase = ctx
	context.AfterFunc(ctx, func() {
		if c.ctx.Err() == nil { // not the socket's own end, but the token's
			c.closeWith(closeForbidden, "Forbidden: the token was removed")
		}
	})
	return true
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
		reason := "Subscriber for " + id + " already exists"
		if len(reason) > 123 { // what a close frame holds
			reason = strings.ToValidUTF8(reason[:120], "") + "..."
		}
		c.closeWith(closeDuplicateID, reason)
		return
	}
	if running >= MaxSocketOperations {
		c.sendError(nil, id, gqlerror.List{coded(wire.CodeOperationLimit,
			"this socket runs %d operations already, the most it may", MaxSocketOperations)})
		return
	}
	params, perr := decodeRequest(payload, c.header)
	if perr != nil {
		c.sendError(nil, id, gqlerror.List{perr})
		return
	}

	ctx := graphql.StartOperationTrace(c.opBase)
	opCtx, errs := c.exec.CreateOperationContext(ctx, params)
	if errs != nil {
		resp := c.exec.DispatchError(graphql.WithOperationContext(ctx, opCtx), errs)
		c.sendError(nil, id, resp.Errors)
		return
	}
	ctx, cancel := context.WithCancel(graphql.WithOperationContext(ctx, opCtx))
	op := &socketOp{cancel: cancel}
	c.mu.Lock()
	c.ops[id] = op
	c.idleFrom = time.Time{}
	c.mu.Unlock()
	c.wg.Go(func() { c.run(ctx, id, op, opCtx) })
}

func (c *socket) run(ctx context.Context, id string, op *socketOp, opCtx *graphql.OperationContext) {
	defer func() {
		c.mu.Lock()
		c.removeLocked(id, op)
		c.mu.Unlock()
		op.cancel()
	}()
	defer func() {
		if p := recover(); p != nil {
			gqlErr, ok := opCtx.Recover(ctx, p).(*gqlerror.Error) // recoverFunc's
			if !ok {
				gqlErr = coded(keystore.EINTERNAL, wire.InternalMessage)
			}
			c.sendError(op, id, gqlerror.List{gqlErr})
		}
	}()
	next := "next"
	if c.legacy {
		next = "data"
	}
	quotedID, _ := json.Marshal(id)
	sink := &socketSink{c: c, op: op, suffix: []byte(`,"id":` + string(quotedID) + `,"type":"` + next + `"}`)}
	if execute(ctx, c.exec, opCtx, c.opts.fanout, sink, func(resp *graphql.Response) bool {
		return c.write(op, outbound{ID: id, Type: next, Payload: resp})
	}) {
		// Unless the client completed it or the socket is closing: write sends nothing.
		c.write(op, outbound{ID: id, Type: "complete"})
	}
}

// removeLocked forgets op, if it is still the one under id, and starts the idle
// clock when no operation is left.
func (c *socket) removeLocked(id string, op *socketOp) {
	if c.ops[id] == op {
		delete(c.ops, id)
		if len(c.ops) == 0 {
			c.idleFrom = time.Now()
		}
	}
}

// sendError sends an operation's one error message: nothing follows it.
func (c *socket) sendError(op *socketOp, id string, errs gqlerror.List) {
	c.write(op, outbound{ID: id, Type: "error", Payload: errs})
}

// write sends msg for op (nil: for the socket), and reports whether it did.
func (c *socket) write(op *socketOp, msg outbound) bool {
	data, err := json.Marshal(msg)
	if err != nil {
		c.opts.logger.Error("websocket message not encodable", "err", err)
		return false
	}
	return c.send(op, func(ctx context.Context) error {
		return c.conn.Write(ctx, websocket.MessageText, data)
	}) == nil
}

// errSilenced: the operation or its socket is over; nothing more is sent for it.
var errSilenced = errors.New("the operation is over")

// send runs write (through the library), one at a time, unless the socket is closing
// or op was completed by the client. A write that fails, or that the client does not
// take within the write timeout, loses the connection: it is given up.
func (c *socket) send(op *socketOp, write func(ctx context.Context) error) error {
	c.writing.Lock()
	defer c.writing.Unlock()
	if c.closing.Load() || op != nil && op.silenced.Load() {
		return errSilenced
	}
	ctx, cancel := context.WithTimeout(context.Background(), WebsocketWriteTimeout)
	defer cancel()
	if err := write(ctx); err != nil {
		c.opts.logger.Debug("websocket write", "err", err)
		c.closing.Store(true)
		c.cancel()
		_ = c.conn.CloseNow()
		return err
	}
	return nil
}

type socketSink struct {
	c       *socket
	op      *socketOp
	suffix  []byte // after the payload: ,"id":…,"type":"next"}
	pending []byte // the queued messages, back to back
	ends    []int  // where each queued message ends in pending
}

// socketNextPrefix opens a next (or legacy data) message, as outbound is marshalled.
var socketNextPrefix = []byte(`{"payload":`)

// Queue implements fanout.Sink: each payload becomes one message, written at Flush.
func (k *socketSink) Queue(payloads [][]byte) int {
	before := len(k.pending)
	need := 0
	for _, p := range payloads {
		need += len(socketNextPrefix) + len(p) + len(k.suffix)
	}
	k.pending = fanout.Grow(k.pending, need)
	for _, p := range payloads {
		k.pending = append(k.pending, socketNextPrefix...)
		k.pending = append(k.pending, p...)
		k.pending = append(k.pending, k.suffix...)
		k.ends = append(k.ends, len(k.pending))
	}
	return len(k.pending) - before
}

// Flush implements fanout.Sink: the library frames each message, in a turn, into the
// held connection, and the frames go out in one write.
func (k *socketSink) Flush(inTurn func(func()), stalled func()) error {
	defer func() {
		k.pending = fanout.Recycle(k.pending)
		k.ends = k.ends[:0]
	}()
	return k.c.send(k.op, func(context.Context) error {
		var err error
		inTurn(func() {
			k.c.held.hold(len(k.pending) + 10*len(k.ends)) // and a frame header each
			start := 0
			for _, end := range k.ends {
				// Held: the write reaches no network, so it needs no deadline (a
				// context without one spares the library a timer per message).
				if err = k.c.conn.Write(context.Background(), websocket.MessageText, k.pending[start:end]); err != nil {
					return
				}
				start = end
			}
		})
		if err != nil {
			k.c.held.abandon()
			return err
		}
		return k.c.held.release(WebsocketWriteTimeout, stalled)
	})
}

// closeWith begins closing the socket with code: operations stop silently, the close
// message goes out, and the reader waits a few seconds for the client's answer.
func (c *socket) closeWith(code websocket.StatusCode, reason string) {
	if c.closing.Swap(true) {
		return
	}
	c.cancel()
	c.wg.Go(func() { _ = c.conn.Close(code, reason) })
}

// supervise keeps the socket's clocks (connection_init, pings or keep-alives, idle),
// and closes the socket when the server shuts down.
func (c *socket) supervise() {
	interval, beat := c.opts.pingInterval, "ping"
	if c.legacy {
		interval, beat = KeepAlivePingInterval, "ka"
	}
	// Each clock is looked at four times within its span: none runs late by more than
	// a quarter of it.
	ticker := time.NewTicker(max(min(interval, c.opts.initTimeout, c.opts.idleTimeout)/4, 10*time.Millisecond))
	defer ticker.Stop()
	started := time.Now()
	nextBeat := started.Add(interval)
	for {
		select {
		case <-c.ctx.Done(): // closeWith cancels it too: the first close stands
			c.closeWith(websocket.StatusNormalClosure, "terminated")
			return
		case now := <-ticker.C:
			c.mu.Lock()
			idleFrom := c.idleFrom
			c.mu.Unlock()
			switch acked := c.acked.Load(); {
			case !acked && now.Sub(started) >= c.opts.initTimeout:
				c.closeWith(closeInitTimeout, "Connection initialisation timeout")
			case !acked:
			case !idleFrom.IsZero() && now.Sub(idleFrom) >= c.opts.idleTimeout:
				c.closeWith(websocket.StatusNormalClosure, "idle for too long")
			case !c.legacy && now.Sub(time.Unix(0, c.lastPong.Load())) > 2*interval:
				c.closeWith(websocket.StatusGoingAway, "ping not answered")
			case !now.Before(nextBeat):
				nextBeat = now.Add(interval)
				c.write(nil, outbound{Type: beat})
			}
		}
	}
}
