package client

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"sync"
	"time"

	"github.com/Khan/genqlient/graphql"
	"github.com/coder/websocket"
	"github.com/coder/websocket/wsjson"
	"github.com/vektah/gqlparser/v2/gqlerror"

	"github.com/keypool/keypool/client/internal/gen"
)

// Bounds of a keyEvents subscription.
const (
	// DefaultIdleTimeout is how long a subscription's connection may stay silent
	// before it is taken for dead and replaced: the server pings every 15s.
	DefaultIdleTimeout = 45 * time.Second
	// handshakeTimeout bounds dialling and the connection_init/connection_ack
	// exchange of one connection.
	handshakeTimeout = 10 * time.Second
	// writeTimeout bounds sending one message.
	writeTimeout = 10 * time.Second
	// Reconnection waits double from reconnectMin up to reconnectMax, and start
	// again from reconnectMin once a connection has delivered an event.
	reconnectMin = 100 * time.Millisecond
	reconnectMax = 5 * time.Second
	// maxMessageBytes bounds one incoming message, far above what an event takes.
	maxMessageBytes = 1 << 20
)

// The graphql-transport-ws protocol, as gqlgen serves it.
const (
	subprotocol  = "graphql-transport-ws"
	operationID  = "1" // one operation per connection
	msgInit      = "connection_init"
	msgAck       = "connection_ack"
	msgSubscribe = "subscribe"
	msgNext      = "next"
	msgError     = "error"
	msgComplete  = "complete"
	msgPing      = "ping"
	msgPong      = "pong"
	opNameEvents = "KeyEvents"
)

// SubscribeOptions select the events of a subscription and tune its reconnection.
type SubscribeOptions struct {
	// Pool is the pool whose events to follow; "" is the default pool.
	Pool string
	// Types keeps only events of these types; empty means all.
	Types []EventType
	// Keys keeps only events of these keys (by id, at most 100); empty means all.
	Keys []string
	// After, when set, first replays the retained events whose Seq is larger, then
	// goes live; nil means live events only.
	After *int64
	// Stream, when set, is the stream After counts in (Event.Stream): if the server's
	// events have started again since, the subscription starts over from the new
	// stream's first retained event rather than skipping up to After.
	Stream string
	// OnRestart, if set, is called from the subscription's goroutine when the
	// server's stream of events has started again (it restarted, or its Redis pool
	// was made anew), with the new stream's id, before the new stream's first event:
	// the subscription then delivers the new stream from its first retained event.
	OnRestart func(stream string)
	// IdleTimeout is how long a connection may stay silent before it is replaced;
	// zero means DefaultIdleTimeout.
	IdleTimeout time.Duration
	// OnReconnect, if set, is called from the subscription's goroutine each time a
	// connection has ended and another will be tried after delay, with the reason
	// and the seq the next one resumes after (nil if no event has been seen and
	// After was nil: that one goes live, and events in between are not replayed).
	OnReconnect func(err error, after *int64, delay time.Duration)
}

// Subscription is a stream of keyEvents that survives the loss of its connection:
// it reconnects, with backoff, and resumes with after set to the last seq it
// delivered, so that no event is missed or repeated. SLOW_CONSUMER and UNAVAILABLE
// end only a connection. Any other coded error ends the subscription.
type Subscription struct {
	events    chan Event
	done      chan struct{}
	cancel    context.CancelFunc
	onRestart func(stream string)

	mu     sync.Mutex
	err    error
	stream string // of the last event delivered, or as asked for
	last   int64
	seen   bool
	closed bool
}

// Events returns the channel of events, in seq order. It is closed when the
// subscription ends; Err then says why.
func (s *Subscription) Events() <-chan Event { return s.events }

// Err returns nil while the subscription runs, and after Events is closed: nil if
// Close ended it, the context's error if its context did, or the error that ended
// it (an *Error for an answer of the server, such as a refused argument).
func (s *Subscription) Err() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.err
}

// Last returns the seq of the last event delivered, and false if there was none.
func (s *Subscription) Last() (int64, bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.last, s.seen
}

// Close ends the subscription and returns once its goroutine has.
func (s *Subscription) Close() {
	s.mu.Lock()
	s.closed = true
	s.mu.Unlock()
	s.cancel()
	<-s.done
}

// Subscribe opens a keyEvents stream over graphql-transport-ws. It returns an
// error if the first connection cannot be made; later ones are retried until ctx
// ends or Close is called.
func (c *Client) Subscribe(ctx context.Context, opts SubscribeOptions) (*Subscription, error) {
	if opts.IdleTimeout <= 0 {
		opts.IdleTimeout = DefaultIdleTimeout
	}
	ctx, cancel := context.WithCancel(ctx)
	s := &Subscription{events: make(chan Event), done: make(chan struct{}), cancel: cancel, onRestart: opts.OnRestart, stream: opts.Stream}
	if opts.After != nil {
		s.last, s.seen = *opts.After, true
	}
	conn, err := c.dialEvents(ctx, opts, opts.After, opts.Stream)
	if err != nil {
		cancel()
		return nil, err
	}
	go s.run(ctx, c, opts, conn)
	return s, nil
}

func (s *Subscription) run(ctx context.Context, c *Client, opts SubscribeOptions, conn *websocket.Conn) {
	var err error
	defer func() {
		s.mu.Lock()
		switch {
		case s.closed:
			s.err = nil
		case ctx.Err() != nil:
			s.err = ctx.Err()
		default:
			s.err = err
		}
		s.mu.Unlock()
		close(s.events)
		close(s.done)
	}()

	delay := reconnectMin
	for {
		var delivered bool
		delivered, err = s.follow(ctx, conn, opts.IdleTimeout)
		_ = conn.CloseNow()
		if ctx.Err() != nil || !resumable(err) {
			return
		}
		if delivered {
			delay = reconnectMin
		}
		for {
			if e, ok := errors.AsType[*Error](err); ok && e.Code == ErrStreamChanged {
				// The server's events started again: its first retained event on,
				// at once.
				if conn, err = c.dialEvents(ctx, opts, s.restart(e), ""); err == nil {
					break
				}
				if ctx.Err() != nil || !resumable(err) {
					return
				}
			}
			after, stream := s.resumeAfter()
			if opts.OnReconnect != nil {
				opts.OnReconnect(err, after, delay)
			}
			timer := time.NewTimer(delay)
			select {
			case <-ctx.Done():
				timer.Stop()
				return
			case <-timer.C:
			}
			delay = min(2*delay, reconnectMax)
			conn, err = c.dialEvents(ctx, opts, after, stream)
			if err == nil {
				break
			}
			if ctx.Err() != nil || !resumable(err) {
				return
			}
		}
	}
}

// resumeAfter returns where a new connection resumes: after the last seq delivered
// (nil if none was), in the stream it was delivered from.
func (s *Subscription) resumeAfter() (*int64, string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if !s.seen {
		return nil, s.stream
	}
	after := s.last
	return &after, s.stream
}

// restart follows the stream that e names from its first retained event: it forgets
// the last seq of the old stream, tells OnRestart, and returns the after to resume
// with.
func (s *Subscription) restart(e *Error) *int64 {
	stream, _ := e.Extensions["stream"].(string)
	s.mu.Lock()
	s.stream, s.last, s.seen = stream, 0, true
	s.mu.Unlock()
	if s.onRestart != nil {
		s.onRestart(stream)
	}
	zero := int64(0)
	return &zero
}

// resumable reports whether the subscription should outlive the error that ended a
// connection.
func resumable(err error) bool {
	var e *Error
	if errors.As(err, &e) {
		return e.Code == ErrSlowConsumer || e.Code == ErrUnavailable || e.Code == ErrStreamChanged ||
			e.Code == "" && e.StatusCode >= 500
	}
	return err != nil // the network, the server going away or completing the stream
}

// wsMessage is one message of graphql-transport-ws.
type wsMessage struct {
	Type    string          `json:"type"`
	ID      string          `json:"id,omitempty"`
	Payload json.RawMessage `json:"payload,omitempty"`
}

// dialEvents opens a connection, completes the handshake and subscribes.
func (c *Client) dialEvents(ctx context.Context, opts SubscribeOptions, after *int64, stream string) (*websocket.Conn, error) {
	hctx, cancel := context.WithTimeout(ctx, handshakeTimeout)
	defer cancel()
	conn, resp, err := websocket.Dial(hctx, c.endpoint, &websocket.DialOptions{
		HTTPClient:   c.httpClient,
		Subprotocols: []string{subprotocol},
	})
	if err != nil {
		if resp != nil && resp.StatusCode != 0 && resp.StatusCode != 101 {
			return nil, fmt.Errorf("keyEvents: %w", &Error{StatusCode: resp.StatusCode, Message: err.Error()})
		}
		return nil, fmt.Errorf("keyEvents: %w", err)
	}
	if conn.Subprotocol() != subprotocol {
		_ = conn.CloseNow()
		return nil, fmt.Errorf("keyEvents: the server does not speak %s", subprotocol)
	}
	conn.SetReadLimit(maxMessageBytes)
	if err := c.handshake(hctx, conn, opts, after, stream); err != nil {
		_ = conn.CloseNow()
		return nil, fmt.Errorf("keyEvents: %w", err)
	}
	return conn, nil
}

func (c *Client) handshake(ctx context.Context, conn *websocket.Conn, opts SubscribeOptions, after *int64, stream string) error {
	if err := wsjson.Write(ctx, conn, wsMessage{Type: msgInit, Payload: json.RawMessage(`{}`)}); err != nil {
		return err
	}
	for {
		var m wsMessage
		if err := wsjson.Read(ctx, conn, &m); err != nil {
			return err
		}
		switch m.Type {
		case msgAck:
		case msgPing:
			if err := wsjson.Write(ctx, conn, wsMessage{Type: msgPong}); err != nil {
				return err
			}
			continue
		default:
			return fmt.Errorf("expected %s, got %q", msgAck, m.Type)
		}
		break
	}
	vars := map[string]any{}
	if opts.Pool != "" {
		vars["pool"] = opts.Pool
	}
	if len(opts.Types) > 0 {
		vars["types"] = opts.Types
	}
	if len(opts.Keys) > 0 {
		vars["keys"] = opts.Keys
	}
	if after != nil {
		vars["after64"] = strconv.FormatInt(*after, 10)
	}
	if stream != "" {
		vars["stream"] = stream
	}
	payload, err := json.Marshal(graphql.Request{Query: gen.KeyEvents_Operation, OpName: opNameEvents, Variables: vars})
	if err != nil {
		return err
	}
	return wsjson.Write(ctx, conn, wsMessage{Type: msgSubscribe, ID: operationID, Payload: payload})
}

// follow delivers the events of one connection until it ends, and says why and
// whether it delivered any.
func (s *Subscription) follow(ctx context.Context, conn *websocket.Conn, idle time.Duration) (delivered bool, err error) {
	for {
		var m wsMessage
		rctx, cancel := context.WithTimeout(ctx, idle)
		err := wsjson.Read(rctx, conn, &m)
		cancel()
		if err != nil {
			return delivered, err
		}
		switch m.Type {
		case msgPing:
			wctx, cancel := context.WithTimeout(ctx, writeTimeout)
			err := wsjson.Write(wctx, conn, wsMessage{Type: msgPong})
			cancel()
			if err != nil {
				return delivered, err
			}
		case msgPong:
		case msgComplete:
			return delivered, errors.New("keyEvents: the server completed the stream")
		case msgError:
			var errs gqlerror.List
			if err := json.Unmarshal(m.Payload, &errs); err != nil || len(errs) == 0 {
				return delivered, fmt.Errorf("keyEvents: an error message without errors: %s", m.Payload)
			}
			return delivered, fromGQLError(errs[0], 0)
		case msgNext:
			var resp graphql.BaseResponse[*gen.KeyEventsResponse]
			if err := json.Unmarshal(m.Payload, &resp); err != nil {
				return delivered, fmt.Errorf("keyEvents: %w", err)
			}
			if len(resp.Errors) > 0 {
				return delivered, fromGQLError(resp.Errors[0], 0)
			}
			if resp.Data == nil {
				return delivered, errors.New("keyEvents: a response without data")
			}
			ev := resp.Data.KeyEvents
			event := Event{Seq: bigInt(ev.Seq64), Seq64: ev.Seq64, Stream: ev.Stream, Pool: ev.Pool, Type: EventType(ev.Type), KeyID: ev.KeyId, At: ev.At, Holder: deref(ev.Holder)}
			if !s.advance(event) {
				continue // already delivered before a reconnection
			}
			select {
			case s.events <- event:
				delivered = true
			case <-ctx.Done():
				return delivered, ctx.Err()
			}
		default:
			return delivered, fmt.Errorf("keyEvents: unexpected message %q", m.Type)
		}
	}
}

// advance records ev as the last delivered, unless it is not past the last one of
// its stream. An event of another stream than the last one's starts that stream: the
// server has started again.
func (s *Subscription) advance(ev Event) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.seen && ev.Stream == s.stream && ev.Seq <= s.last {
		return false
	}
	s.stream, s.last, s.seen = ev.Stream, ev.Seq, true
	return true
}
