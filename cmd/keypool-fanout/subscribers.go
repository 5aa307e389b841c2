package main

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/coder/websocket"
	"github.com/coder/websocket/wsjson"
)

// The subscriber process: n coder/websocket clients, each on its own socket with one
// graphql-transport-ws subscription, checking that events come in seq order without a
// gap. It says "ready" once every subscription is sent, then answers commands read from
// stdin, one a line:
//
//	report N   one JSON line: the clients' outcomes, given that N events were published
//	quit       close the sockets and exit
//
// A subscription cut with SLOW_CONSUMER is resumed (with -resubscribe) as the error says,
// with after; one answered EVENTS_COMPACTED then subscribes live (without after).

// subscriber is one client socket.
type subscriber struct {
	conn        *websocket.Conn
	query       string
	resubscribe bool

	mu        sync.Mutex // under it the fields below; writes to conn too
	sub       int        // the live subscription's id, 1, 2, ...
	next      int64      // the seq expected next; 0: any (a live subscription's first)
	last      int64      // the last seq received in order
	got       int64      // events received, in order, across subscriptions
	cuts      int
	compacted int
	problem   string
	ended     bool // the stream ended and was not resumed
}

type subscriberReport struct {
	Sockets   int     `json:"sockets"`
	KeptUp    int     `json:"keptUp"`    // every event published, in order, never cut
	Cut       int     `json:"cut"`       // cut with SLOW_CONSUMER at least once, in order otherwise
	Problems  int     `json:"problems"`  // a gap, a duplicate, an unexpected message or close
	Cuts      int     `json:"cuts"`      // SLOW_CONSUMER errors in all
	Compacted int     `json:"compacted"` // EVENTS_COMPACTED answers to a resumption
	Received  int64   `json:"received"`  // events received in all
	MinGot    int64   `json:"minGot"`
	AvgGot    float64 `json:"avgGot"`
	Example   string  `json:"example,omitempty"` // one problem, if any
}

func runSubscribers(ctx context.Context, url string, n int, query string, resubscribe bool) error {
	subs := make([]*subscriber, n)
	var wg sync.WaitGroup
	var failed atomic.Value
	sem := make(chan struct{}, 32)
	for i := range subs {
		wg.Go(func() {
			sem <- struct{}{}
			defer func() { <-sem }()
			s, err := dialSubscriber(ctx, url, query, resubscribe)
			if err != nil {
				failed.Store(err)
				return
			}
			subs[i] = s
			go s.read()
		})
	}
	wg.Wait()
	if err, _ := failed.Load().(error); err != nil {
		return fmt.Errorf("dial: %w", err)
	}
	fmt.Println("ready")
	lines := bufio.NewScanner(os.Stdin)
	for lines.Scan() {
		fields := strings.Fields(lines.Text())
		switch {
		case len(fields) == 2 && fields[0] == "report":
			published, err := strconv.ParseInt(fields[1], 10, 64)
			if err != nil {
				return err
			}
			b, _ := json.Marshal(report(subs, published))
			fmt.Println(string(b))
		case len(fields) == 1 && fields[0] == "quit":
			for _, s := range subs {
				s.conn.CloseNow()
			}
			return nil
		}
	}
	return lines.Err()
}

func report(subs []*subscriber, published int64) subscriberReport {
	r := subscriberReport{Sockets: len(subs), MinGot: -1}
	for _, s := range subs {
		s.mu.Lock()
		r.Cuts += s.cuts
		r.Compacted += s.compacted
		r.Received += s.got
		if r.MinGot < 0 || s.got < r.MinGot {
			r.MinGot = s.got
		}
		switch {
		case s.problem != "":
			r.Problems++
			r.Example = s.problem
		case s.cuts > 0:
			r.Cut++
		case s.got == published && s.last == published:
			r.KeptUp++
		}
		s.mu.Unlock()
	}
	r.AvgGot = float64(r.Received) / float64(len(subs))
	return r
}

func dialSubscriber(ctx context.Context, url, query string, resubscribe bool) (*subscriber, error) {
	dialCtx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	conn, _, err := websocket.Dial(dialCtx, url, &websocket.DialOptions{
		Subprotocols: []string{"graphql-transport-ws"},
		// Each socket on a connection of its own, closed if the handshake is refused.
		HTTPClient: &http.Client{Transport: &http.Transport{
			DialContext: (&net.Dialer{}).DialContext, DisableKeepAlives: true, DisableCompression: true}},
	})
	if err != nil {
		return nil, err
	}
	conn.SetReadLimit(-1) // the library's default is 32 KiB
	if err := wsjson.Write(context.Background(), conn, map[string]any{"type": "connection_init"}); err != nil {
		conn.CloseNow()
		return nil, err
	}
	ackCtx, cancelAck := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancelAck()
	var ack struct{ Type string }
	if err := wsjson.Read(ackCtx, conn, &ack); err != nil || ack.Type != "connection_ack" {
		conn.CloseNow()
		return nil, fmt.Errorf("no connection_ack: %v %q", err, ack.Type)
	}
	s := &subscriber{conn: conn, query: query, resubscribe: resubscribe}
	s.mu.Lock()
	defer s.mu.Unlock()
	if err := s.subscribeLocked(0, true); err != nil {
		conn.CloseNow()
		return nil, err
	}
	return s, nil
}

// subscribeLocked starts the next subscription, after seq after if withAfter.
func (s *subscriber) subscribeLocked(after int64, withAfter bool) error {
	s.sub++
	vars := map[string]any{}
	s.next = 0
	if withAfter {
		vars["after"] = after
		s.next = after + 1
	}
	return wsjson.Write(context.Background(), s.conn, map[string]any{"id": strconv.Itoa(s.sub), "type": "subscribe",
		"payload": map[string]any{"query": s.query, "variables": vars}})
}

var (
	seqField    = []byte(`"seq":`)
	eventPrefix = []byte(`{"payload":{"data":{"keyEvents":{`)
)

// read consumes the socket until it closes.
func (s *subscriber) read() {
	for {
		_, msg, err := s.conn.Read(context.Background())
		if err != nil {
			s.mu.Lock()
			if !s.ended && s.problem == "" && !isClosed(err) {
				s.problem = "socket: " + err.Error()
			}
			s.mu.Unlock()
			return
		}
		s.handle(msg)
	}
}

// isClosed says whether err is that of a socket closed by this process (quit).
func isClosed(err error) bool {
	return errors.Is(err, net.ErrClosed)
}

func (s *subscriber) handle(msg []byte) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if i := bytes.Index(msg, seqField); i >= 0 && bytes.HasPrefix(msg, eventPrefix) {
		id := []byte(`"id":"` + strconv.Itoa(s.sub) + `"`)
		if !bytes.Contains(msg, id) {
			return // a late event of a subscription that has ended
		}
		rest := msg[i+len(seqField):]
		end := bytes.IndexAny(rest, ",}")
		seq, err := strconv.ParseInt(string(rest[:max(end, 0)]), 10, 64)
		if err != nil || s.next != 0 && seq != s.next {
			if s.problem == "" {
				s.problem = fmt.Sprintf("subscription %d: want seq %d, got %.160s", s.sub, s.next, msg)
			}
			return
		}
		s.next, s.last = seq+1, seq
		s.got++
		return
	}
	var m struct {
		ID      string
		Type    string
		Payload json.RawMessage
	}
	if err := json.Unmarshal(msg, &m); err != nil {
		s.problem = fmt.Sprintf("bad message %.160s", msg)
		return
	}
	switch m.Type {
	case "ping":
		_ = wsjson.Write(context.Background(), s.conn, map[string]any{"type": "pong"})
	case "pong":
	case "complete":
		if m.ID == strconv.Itoa(s.sub) && !s.ended && s.problem == "" {
			s.ended = true
		}
	case "next", "error":
		var p struct {
			Errors []struct {
				Message    string
				Extensions struct{ Code string }
			}
		}
		if m.Type == "error" {
			_ = json.Unmarshal(m.Payload, &p.Errors)
		} else {
			_ = json.Unmarshal(m.Payload, &p)
		}
		if len(p.Errors) == 0 {
			s.problem = fmt.Sprintf("unexpected message %.160s", msg)
			return
		}
		switch code := p.Errors[0].Extensions.Code; code {
		case "SLOW_CONSUMER":
			s.cuts++
			if s.resubscribe {
				_ = s.subscribeLocked(s.last, true) // its message says: after the last seq seen
			} else {
				s.ended = true
			}
		case "EVENTS_COMPACTED":
			s.compacted++
			_ = s.subscribeLocked(0, false)
		default:
			s.problem = fmt.Sprintf("error %s: %s", code, p.Errors[0].Message)
		}
	default:
		s.problem = fmt.Sprintf("unexpected message %.160s", msg)
	}
}

// subscriberProcess is the harness's end of a subscriber process.
type subscriberProcess struct {
	stdin  io.WriteCloser
	stdout *bufio.Reader
	wait   func()
	pid    int
}

func (p *subscriberProcess) report(published int64) (subscriberReport, error) {
	var r subscriberReport
	if _, err := fmt.Fprintf(p.stdin, "report %d\n", published); err != nil {
		return r, err
	}
	line, err := p.stdout.ReadString('\n')
	if err != nil {
		return r, err
	}
	return r, json.Unmarshal([]byte(line), &r)
}

func (p *subscriberProcess) stop() {
	_, _ = fmt.Fprintln(p.stdin, "quit")
	p.stdin.Close()
	p.wait()
}
