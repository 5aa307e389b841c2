// Package cutproxy is a TCP proxy for tests that can cut every connection through
// it at once, as a network failure or a restarting server would: httptest's
// CloseClientConnections does not reach connections upgraded to WebSocket.
package cutproxy

import (
	"io"
	"net"
	"sync"
)

// Proxy forwards each connection accepted on its own address to a target address.
type Proxy struct {
	ln     net.Listener
	target string
	dial   func(network, address string) (net.Conn, error) // net.Dial; tests slow it down

	mu     sync.Mutex
	conns  map[net.Conn]struct{}
	closed bool // Close has begun: a connection accepted before it, not yet piped, is dropped
	wg     sync.WaitGroup
}

// New starts a proxy on a free local port that forwards to target (host:port).
func New(target string) (*Proxy, error) { return newDialling(target, net.Dial) }

func newDialling(target string, dial func(network, address string) (net.Conn, error)) (*Proxy, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, err
	}
	p := &Proxy{ln: ln, target: target, dial: dial, conns: map[net.Conn]struct{}{}}
	p.wg.Add(1)
	go p.serve()
	return p, nil
}

// Addr returns the proxy's host:port.
func (p *Proxy) Addr() string { return p.ln.Addr().String() }

// Cut closes every connection through the proxy, both ways; new ones are accepted.
func (p *Proxy) Cut() {
	p.mu.Lock()
	defer p.mu.Unlock()
	for c := range p.conns {
		_ = c.Close()
	}
	clear(p.conns)
}

// Close stops accepting, cuts every connection and waits for the proxy's goroutines.
func (p *Proxy) Close() {
	_ = p.ln.Close()
	p.mu.Lock()
	p.closed = true
	p.mu.Unlock()
	p.Cut()
	p.wg.Wait()
}

func (p *Proxy) serve() {
	defer p.wg.Done()
	for {
		down, err := p.ln.Accept()
		if err != nil {
			return
		}
		up, err := p.dial("tcp", p.target)
		if err != nil {
			_ = down.Close()
			continue
		}
		p.mu.Lock()
		if p.closed {
			// Accepted as Close began, and missed by its Cut: piped, it would outlive
			// Close (a websocket for as long as its client lives).
			p.mu.Unlock()
			_, _ = down.Close(), up.Close()
			return
		}
		p.conns[down], p.conns[up] = struct{}{}, struct{}{}
		p.mu.Unlock()
		p.wg.Add(2)
		go p.pipe(down, up)
		go p.pipe(up, down)
	}
}

// pipe copies from src to dst until either fails, then closes both.
func (p *Proxy) pipe(dst, src net.Conn) {
	defer p.wg.Done()
	_, _ = io.Copy(dst, src)
	_ = dst.Close()
	_ = src.Close()
	p.mu.Lock()
	delete(p.conns, dst)
	delete(p.conns, src)
	p.mu.Unlock()
}
