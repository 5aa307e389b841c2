package middleware_test

import (
	"bufio"
	"encoding/json"
	"io"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/keypool/keypool/middleware"
)

// serve runs h on a loopback listener wrapped in ServerRefusals, and returns its address.
func serve(t *testing.T, h http.Handler) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := &http.Server{Handler: h, MaxHeaderBytes: 4 << 10}
	go srv.Serve(middleware.ServerRefusals(ln))
	t.Cleanup(func() { srv.Close() })
	return ln.Addr().String()
}

// exchange sends raw on a connection of its own and reads the answers until the
// server hangs up.
func exchange(t *testing.T, addr, raw string) *bufio.Reader {
	t.Helper()
	conn, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	conn.SetDeadline(time.Now().Add(10 * time.Second))
	if _, err := conn.Write([]byte(raw)); err != nil {
		t.Fatal(err)
	}
	answer, err := io.ReadAll(conn)
	if err != nil {
		t.Fatal(err)
	}
	return bufio.NewReader(strings.NewReader(string(answer)))
}

// TestServerRefusals: what net/http's server refuses before any handler runs is
// answered in REST's JSON error shape with the server's status, on a fresh
// connection and after a served request on a kept-alive one; what handlers answer
// passes unchanged, even text that reads like a refusal.
func TestServerRefusals(t *testing.T) {
	addr := serve(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/mimic" { // the very text of the server's bare refusal, from a handler
			w.Header().Set("Content-Type", "text/plain; charset=utf-8")
			w.Header().Set("Connection", "close")
			w.WriteHeader(http.StatusBadRequest)
			io.WriteString(w, "400 Bad Request")
			return
		}
		io.WriteString(w, "served "+r.URL.Path)
	}))
	for _, c := range []struct {
		name, raw string
		status    int
		code      string
		message   string
	}{
		{"bad escape", "GET /v1/keys/%Qx HTTP/1.1\r\nHost: x\r\n\r\n", 400, "BAD_USER_INPUT", "bad percent-escape"},
		{"truncated escape", "GET /v1/keys/abc% HTTP/1.1\r\nHost: x\r\n\r\n", 400, "BAD_USER_INPUT", "bad percent-escape"},
		{"garbage", "\x00\xff GARBAGE\r\n\r\n", 400, "BAD_USER_INPUT", "malformed request line"},
		{"no host", "GET /v1/stats HTTP/1.1\r\n\r\n", 400, "BAD_USER_INPUT", "missing required Host header"},
		{"headers too large", "GET / HTTP/1.1\r\nHost: x\r\nX-A: " + strings.Repeat("a", 8<<10) + "\r\n\r\n", 431, "REQUEST_TOO_LARGE", "headers"},
		{"unknown transfer coding", "POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: gzip\r\n\r\n", 501, "BAD_USER_INPUT", "Transfer-Encoding"},
	} {
		t.Run(c.name, func(t *testing.T) {
			for _, first := range []string{"", "GET /before HTTP/1.1\r\nHost: x\r\n\r\n"} {
				if first != "" && c.status == http.StatusRequestHeaderFieldsTooLarge {
					continue // what a pipelined request sends is already read: the limit does not apply
				}
				answers := exchange(t, addr, first+c.raw)
				if first != "" {
					res, err := http.ReadResponse(answers, nil)
					if err != nil {
						t.Fatal(err)
					}
					if body, _ := io.ReadAll(res.Body); string(body) != "served /before" {
						t.Fatalf("the kept-alive request got %d %q", res.StatusCode, body)
					}
				}
				res, err := http.ReadResponse(answers, nil)
				if err != nil {
					t.Fatal(err)
				}
				body, _ := io.ReadAll(res.Body)
				var e struct {
					Error struct{ Code, Message string }
				}
				if res.StatusCode != c.status || res.Header.Get("Content-Type") != "application/json" ||
					json.Unmarshal(body, &e) != nil || e.Error.Code != c.code || !strings.Contains(e.Error.Message, c.message) {
					t.Fatalf("%d %q: %s", res.StatusCode, res.Header.Get("Content-Type"), body)
				}
				if res.ContentLength != int64(len(body)) || !res.Close {
					t.Fatalf("Content-Length %d for %d bytes, close %v", res.ContentLength, len(body), res.Close)
				}
			}
		})
	}

	res, err := http.ReadResponse(exchange(t, addr, "GET /mimic HTTP/1.1\r\nHost: x\r\n\r\n"), nil)
	if err != nil {
		t.Fatal(err)
	}
	if body, _ := io.ReadAll(res.Body); res.StatusCode != 400 || string(body) != "400 Bad Request" {
		t.Fatalf("a handler's answer was changed: %d %q", res.StatusCode, body)
	}
}

// TestRawConnections: a handler that takes its connection over gets the listener's own
// (*net.TCPConn) under RawConnections, and only there.
func TestRawConnections(t *testing.T) {
	got := make(chan net.Conn, 1)
	hijack := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		conn, rw, err := http.NewResponseController(w).Hijack()
		if err != nil {
			t.Error(err)
			return
		}
		rw.WriteString("HTTP/1.1 101 Switching Protocols\r\nConnection: Upgrade\r\nUpgrade: test\r\n\r\n")
		rw.Flush()
		got <- conn
		conn.Close()
	})
	for _, c := range []struct {
		h   http.Handler
		tcp bool
	}{{middleware.RawConnections(hijack), true}, {hijack, false}} {
		addr := serve(t, c.h)
		exchange(t, addr, "GET / HTTP/1.1\r\nHost: x\r\nConnection: Upgrade\r\nUpgrade: test\r\n\r\n")
		_, tcp := (<-got).(*net.TCPConn)
		if tcp != c.tcp {
			t.Fatalf("a *net.TCPConn: %v, want %v", tcp, c.tcp)
		}
	}
}
