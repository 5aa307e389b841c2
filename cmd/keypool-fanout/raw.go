package main

import (
	"context"
	"crypto/rand"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"strconv"
	"sync"
	"time"

	"github.com/coder/websocket"
	"github.com/coder/websocket/wsjson"
)

// The raw broadcast: the floor that keypool's fan-out is measured against. A
// coder/websocket server that speaks just enough graphql-transport-ws for the subscriber
// process (connection_ack, one subscribe) and broadcasts, for each event, the very
// bytes keypool sends for `keyEvents { seq type keyId at }` to every socket: the
// message is built once and written to each socket by that socket's own goroutine
// (one write per message), from a queue as deep as keypool's event ring; a
// socket whose queue is full is dropped (a raw broadcast has no replay). POST
// /publish?n=N broadcasts N events, as generateKeys(count: N) publishes N.

// rawQueue is how many messages a socket may have waiting: keypool's default ring.
const rawQueue = 1 << 16

type rawBroadcast struct {
	mu      sync.Mutex
	sockets map[*rawSocket]struct{}
	seq     int64
	dropped int
}

type rawSocket struct {
	conn  *websocket.Conn
	queue chan []byte
	done  chan struct{} // the socket is closed
	id    string
}

func serveRaw(ctx context.Context, addr string) error {
	b := &rawBroadcast{sockets: map[*rawSocket]struct{}{}}
	mux := http.NewServeMux()
	mux.HandleFunc("/graphql", b.accept)
	mux.HandleFunc("POST /publish", b.publish)
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, _ *http.Request) { _, _ = w.Write([]byte("ok")) })
	mux.HandleFunc("GET /stats", func(w http.ResponseWriter, _ *http.Request) {
		b.mu.Lock()
		defer b.mu.Unlock()
		_ = json.NewEncoder(w).Encode(map[string]int{"sockets": len(b.sockets), "dropped": b.dropped})
	})
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return err
	}
	srv := &http.Server{Handler: mux, ReadHeaderTimeout: 10 * time.Second}
	go func() {
		<-ctx.Done()
		_ = srv.Close()
	}()
	if err := srv.Serve(ln); err != http.ErrServerClosed {
		return err
	}
	return nil
}

func (b *rawBroadcast) accept(w http.ResponseWriter, r *http.Request) {
	conn, err := websocket.Accept(w, r, &websocket.AcceptOptions{Subprotocols: []string{"graphql-transport-ws"}})
	if err != nil {
		return
	}
	defer conn.CloseNow()
	ctx := context.Background() // no deadlines: a socket ends when its client or publish closes it
	var msg struct {
		ID   string
		Type string
	}
	if wsjson.Read(ctx, conn, &msg) != nil || msg.Type != "connection_init" {
		return
	}
	if wsjson.Write(context.Background(), conn, map[string]string{"type": "connection_ack"}) != nil {
		return
	}
	if wsjson.Read(ctx, conn, &msg) != nil || msg.Type != "subscribe" {
		return
	}
	s := &rawSocket{conn: conn, queue: make(chan []byte, rawQueue), done: make(chan struct{}), id: msg.ID}
	b.mu.Lock()
	b.sockets[s] = struct{}{}
	b.mu.Unlock()
	defer func() {
		b.mu.Lock()
		delete(b.sockets, s)
		b.mu.Unlock()
	}()
	go func() { // the client's messages (pongs, its close)
		for {
			if _, _, err := conn.Read(ctx); err != nil {
				close(s.done)
				return
			}
		}
	}()
	for {
		select {
		case m := <-s.queue:
			if err := conn.Write(ctx, websocket.MessageText, m); err != nil {
				return
			}
		case <-s.done:
			return
		}
	}
}

func (b *rawBroadcast) publish(w http.ResponseWriter, r *http.Request) {
	n, err := strconv.Atoi(r.URL.Query().Get("n"))
	if err != nil || n < 1 {
		http.Error(w, "n", http.StatusBadRequest)
		return
	}
	at := time.Now().UTC()
	key := make([]byte, 16)
	b.mu.Lock()
	defer b.mu.Unlock()
	for range n {
		b.seq++
		_, _ = rand.Read(key)
		// The bytes keypool sends (subscriber id "1").
		msg := fmt.Appendf(nil, `{"payload":{"data":{"keyEvents":{"seq":%d,"type":"GENERATED","keyId":%q,"at":%q}}},"id":"1","type":"next"}`,
			b.seq, base64.RawURLEncoding.EncodeToString(key), at.Format(time.RFC3339Nano))
		for s := range b.sockets {
			select {
			case s.queue <- msg:
			default:
				delete(b.sockets, s)
				b.dropped++
				s.conn.CloseNow()
			}
		}
	}
	_, _ = fmt.Fprintf(w, `{"published":%d}`, n)
}
