package middleware

import (
	"bufio"
	"bytes"
	"fmt"
	"io"
	"net"
	"net/http"
	"strconv"

	"github.com/keypool/keypool/keystore"
	"github.com/keypool/keypool/wire"
)

// ServerRefusals wraps ln so that what net/http's server answers by itself, to a
// request it cannot read, is JSON in REST's error shape like every other answer,
// instead of its plain text. The server refuses such a request before any handler
// runs: a path with a bad percent-escape (/v1/keys/%Q, /v1/keys/abc%) or another
// malformed request line, a malformed or missing header (400), headers over the
// limit (431), a transfer coding it does not know (501). The status stays the
// server's; the code is REQUEST_TOO_LARGE for 431 and BAD_USER_INPUT otherwise, as
// REST answers a request it cannot understand.
//
// Such an answer is one write of a fixed form: a status line, then exactly the
// server's two error headers (Content-Type, then Connection) and its text. No other
// answer has that form (a handler's answer carries Date, and its own headers come
// sorted, Connection before Content-Type), and a connection's other writes pass
// unchanged. A handler that takes its connection over (a websocket) gets the
// listener's own connection instead of the wrapper: see RawConnections.
func ServerRefusals(ln net.Listener) net.Listener { return refusalListener{ln} }

type refusalListener struct{ net.Listener }

func (l refusalListener) Accept() (net.Conn, error) {
	c, err := l.Listener.Accept()
	if err != nil {
		return nil, err
	}
	return &refusalConn{Conn: c}, nil
}

// refusalConn is a connection whose server-written refusals are rewritten in JSON.
type refusalConn struct{ net.Conn }

func (c *refusalConn) Write(p []byte) (int, error) {
	status, text, ok := parseRefusal(p)
	if !ok {
		return c.Conn.Write(p)
	}
	if _, err := c.Conn.Write(refusalAnswer(status, text)); err != nil {
		return 0, err
	}
	return len(p), nil
}

// CloseWrite passes on the TCP half-close that net/http's server uses to let the
// client read a refusal before the connection closes.
func (c *refusalConn) CloseWrite() error {
	if cw, ok := c.Conn.(interface{ CloseWrite() error }); ok {
		return cw.CloseWrite()
	}
	return nil
}

// ReadFrom keeps the connection's own ReadFrom (sendfile, splice) for the bodies that
// net/http copies from a reader; they are written after their headers, never a refusal.
func (c *refusalConn) ReadFrom(r io.Reader) (int64, error) {
	if rf, ok := c.Conn.(io.ReaderFrom); ok {
		return rf.ReadFrom(r)
	}
	return io.Copy(struct{ io.Writer }{c.Conn}, r)
}

// serverErrorHeaders is what net/http's server writes between the status line and
// the text of an answer it makes by itself (conn.serve).
const serverErrorHeaders = "\r\nContent-Type: text/plain; charset=utf-8\r\nConnection: close\r\n\r\n"

// maxRefusal bounds the writes looked at: the server's refusals are a few dozen bytes.
const maxRefusal = 512

// parseRefusal reports whether p is one of net/http's own refusals, with its status
// and its text after the status ("Unsupported transfer encoding", "missing required
// Host header"; "" for the bare "400 Bad Request").
func parseRefusal(p []byte) (status int, text string, ok bool) {
	const prefix = "HTTP/1.1 "
	if len(p) > maxRefusal || !bytes.HasPrefix(p, []byte(prefix)) {
		return 0, "", false
	}
	i := bytes.Index(p, []byte(serverErrorHeaders))
	if i < len(prefix)+3 || bytes.Contains(p[:i], []byte("\r\n")) {
		return 0, "", false
	}
	status, err := strconv.Atoi(string(p[len(prefix) : len(prefix)+3]))
	if err != nil || status < 400 || status > 599 {
		return 0, "", false
	}
	body := p[i+len(serverErrorHeaders):]
	if bytes.Contains(body, []byte("\r\n")) {
		return 0, "", false
	}
	head := strconv.Itoa(status) + " " + http.StatusText(status)
	switch {
	case string(body) == head:
		return status, "", true
	case bytes.HasPrefix(body, []byte(head+": ")):
		return status, string(body[len(head)+2:]), true
	}
	return status, string(body), true
}

// refusalAnswer is the JSON answer that replaces a refusal with status and text.
func refusalAnswer(status int, text string) []byte {
	code, message := keystore.EINVALID, "the request could not be read: "
	switch {
	case status == http.StatusRequestHeaderFieldsTooLarge:
		code, message = wire.CodeTooLarge, "the request's headers are larger than the server accepts"
	case status == http.StatusNotImplemented:
		message = "the request's Transfer-Encoding is not supported"
	case text != "":
		message += text
	default:
		message += "a malformed request line, a path with a bad percent-escape (such as %Q), or a malformed header"
	}
	body := wire.RESTErrorBody(code, message)
	var b bytes.Buffer
	fmt.Fprintf(&b, "HTTP/1.1 %d %s\r\nContent-Type: %s\r\nX-Content-Type-Options: nosniff\r\nContent-Length: %d\r\nConnection: close\r\n\r\n",
		status, http.StatusText(status), wire.MediaJSON, len(body))
	b.Write(body)
	return b.Bytes()
}

// RawConnections hands a handler under it that takes its connection over (Hijack: the
// websockets) the listener's own connection rather than ServerRefusals' wrapper: the
// server writes no refusal on a connection taken over, and a handler may rely on the
// connection's type (a *net.TCPConn's writes that time out leave it usable).
func RawConnections(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Header.Get("Upgrade") != "" { // only upgrades are taken over
			w = rawHijacker{w}
		}
		next.ServeHTTP(w, r)
	})
}

type rawHijacker struct{ http.ResponseWriter }

func (h rawHijacker) Hijack() (net.Conn, *bufio.ReadWriter, error) {
	conn, rw, err := http.NewResponseController(h.ResponseWriter).Hijack()
	if c, ok := conn.(*refusalConn); ok {
		conn = c.Conn
	}
	return conn, rw, err
}

func (h rawHijacker) Flush() { _ = http.NewResponseController(h.ResponseWriter).Flush() }

// Unwrap lets http.ResponseController reach the server's writer (deadlines).
func (h rawHijacker) Unwrap() http.ResponseWriter { return h.ResponseWriter }
