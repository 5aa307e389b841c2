package redisstore

import (
	"bytes"
	"math"
	"math/rand/v2"
	"net"
	"path/filepath"
	"sync"
	"sync/atomic"
	"testing"
)

// faultProxy stands between the stores and a redis-server, on a unix socket of its
// own, and loses replies on purpose: it forwards a request to Redis, swallows the
// reply and closes the connection, as a network that fails at the worst moment does.
// The request has reached Redis, so it runs; only its client does not learn so.
type faultProxy struct {
	t      testing.TB
	target string // the redis-server's socket
	sock   string
	ln     net.Listener

	// marked, when set, makes the next request that contains it lose its reply.
	marked atomic.Pointer[[]byte]
	// rate is the probability, per request, that its reply is lost (0 to 1).
	rate    atomic.Uint64 // math.Float64bits
	dropped atomic.Int64

	mu    sync.Mutex
	conns map[net.Conn]struct{}
	wg    sync.WaitGroup
}

// startProxy starts a proxy in front of srv and stops it at the end of the test.
func startProxy(t testing.TB, srv *redisServer) *faultProxy {
	t.Helper()
	p := &faultProxy{t: t, target: srv.sock, sock: filepath.Join(srv.dir, "proxy.sock"), conns: map[net.Conn]struct{}{}}
	ln, err := net.Listen("unix", p.sock)
	if err != nil {
		t.Fatal(err)
	}
	p.ln = ln
	p.wg.Add(1)
	go p.accept()
	t.Cleanup(p.close)
	return p
}

func (p *faultProxy) url() string { return "unix://" + p.sock }

// loseReplyTo makes the next request containing marker (a script's SHA1, say) lose
// its reply.
func (p *faultProxy) loseReplyTo(marker string) {
	m := []byte(marker)
	p.marked.Store(&m)
}

// loseReplies makes each request lose its reply with probability rate.
func (p *faultProxy) loseReplies(rate float64) { p.rate.Store(math.Float64bits(rate)) }

func (p *faultProxy) close() {
	_ = p.ln.Close()
	p.mu.Lock()
	for c := range p.conns {
		_ = c.Close()
	}
	p.conns = nil
	p.mu.Unlock()
	p.wg.Wait()
}

// add tracks a pair of connections, or reports false once the proxy is closing.
func (p *faultProxy) add(client, server net.Conn) bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.conns == nil {
		return false
	}
	p.conns[client], p.conns[server] = struct{}{}, struct{}{}
	return true
}

func (p *faultProxy) accept() {
	defer p.wg.Done()
	for {
		client, err := p.ln.Accept()
		if err != nil {
			return
		}
		server, err := net.Dial("unix", p.target)
		if err != nil {
			_ = client.Close() // Redis is down: so is the proxy, for this connection
			continue
		}
		if !p.add(client, server) {
			_ = client.Close()
			_ = server.Close()
			return
		}
		var lose atomic.Bool
		p.wg.Add(2)
		go p.requests(client, server, &lose)
		go p.replies(server, client, &lose)
	}
}

// requests copies client to server, deciding for each chunk (a request, as the
// clients here send one at a time per connection) whether its reply is lost.
func (p *faultProxy) requests(client, server net.Conn, lose *atomic.Bool) {
	defer p.wg.Done()
	defer p.hangUp(client, server)
	buf := make([]byte, 64<<10)
	for {
		n, err := client.Read(buf)
		if n > 0 {
			chunk := buf[:n]
			if m := p.marked.Load(); m != nil && bytes.Contains(chunk, *m) && p.marked.CompareAndSwap(m, nil) {
				lose.Store(true)
			} else if rate := math.Float64frombits(p.rate.Load()); rate > 0 && rand.Float64() < rate {
				lose.Store(true)
			}
			if _, werr := server.Write(chunk); werr != nil {
				return
			}
		}
		if err != nil {
			return
		}
	}
}

// replies copies server to client until a reply is to be lost: then it reads that
// reply, drops it and hangs up both sides.
func (p *faultProxy) replies(server, client net.Conn, lose *atomic.Bool) {
	defer p.wg.Done()
	defer p.hangUp(client, server)
	buf := make([]byte, 64<<10)
	for {
		n, err := server.Read(buf)
		if n > 0 {
			if lose.Load() {
				p.dropped.Add(1)
				return
			}
			if _, werr := client.Write(buf[:n]); werr != nil {
				return
			}
		}
		if err != nil {
			return // EOF, or Redis killed under it
		}
	}
}

func (p *faultProxy) hangUp(client, server net.Conn) {
	_ = client.Close()
	_ = server.Close()
	p.mu.Lock()
	if p.conns != nil {
		delete(p.conns, client)
		delete(p.conns, server)
	}
	p.mu.Unlock()
}
