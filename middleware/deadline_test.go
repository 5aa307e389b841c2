package middleware_test

import (
	"bufio"
	"errors"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/keypool/keypool/middleware"
)

// bodyTimeout is short for the tests; the margins around it are generous.
const bodyTimeout = 200 * time.Millisecond

// deadlineServer serves handler behind BodyDeadline on a real connection (deadlines
// need one), and checks at the end that it leaves no goroutine behind.
func deadlineServer(t *testing.T, handler http.HandlerFunc) string {
	t.Helper()
	ignore := goleak.IgnoreCurrent()
	srv := httptest.NewServer(middleware.BodyDeadline(bodyTimeout, handler))
	t.Cleanup(func() {
		srv.CloseClientConnections()
		srv.Close()
		goleak.VerifyNone(t, ignore)
	})
	return strings.TrimPrefix(srv.URL, "http://")
}

func TestBodyDeadlineCutsSlowBodies(t *testing.T) {
	readErr := make(chan error, 1)
	addr := deadlineServer(t, func(w http.ResponseWriter, r *http.Request) {
		_, err := io.ReadAll(r.Body)
		readErr <- err
		if err != nil {
			http.Error(w, err.Error(), http.StatusBadRequest)
		}
	})
	conn, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	if err := conn.SetDeadline(time.Now().Add(10 * time.Second)); err != nil {
		t.Fatal(err)
	}
	if _, err := io.WriteString(conn, "POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 100000\r\n\r\n{"); err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	stop := make(chan struct{})
	trickled := make(chan struct{})
	go func() { // a byte every 20ms: never done, never quite idle
		defer close(trickled)
		tick := time.NewTicker(bodyTimeout / 10)
		defer tick.Stop()
		for {
			select {
			case <-stop:
				return
			case <-tick.C:
				if _, err := conn.Write([]byte(" ")); err != nil {
					return
				}
			}
		}
	}()
	defer func() { close(stop); <-trickled }()

	select {
	case err = <-readErr:
	case <-time.After(10 * time.Second):
		conn.Close() // ends the handler's read
		t.Fatal("the slow body was never cut")
	}
	took := time.Since(start)
	var timeout *middleware.BodyTimeoutError
	if !errors.As(err, &timeout) || timeout.Timeout != bodyTimeout {
		t.Fatalf("reading the slow body ended with %v", err)
	}
	if took < bodyTimeout/2 || took > bodyTimeout+5*time.Second {
		t.Fatalf("cut after %v, bound %v", took, bodyTimeout)
	}
	res, err := http.ReadResponse(bufio.NewReader(conn), nil)
	if err != nil {
		t.Fatal(err)
	}
	res.Body.Close()
	if res.StatusCode != http.StatusBadRequest || !res.Close {
		t.Fatalf("answered %d, close %v", res.StatusCode, res.Close)
	}
}

// TestBodyDeadlineSparesStreams: once its body is in, a request may read and write for
// much longer than the bound (an SSE stream, a waiting acquire), and a request without
// a body (a websocket upgrade) gets no deadline at all.
func TestBodyDeadlineSparesStreams(t *testing.T) {
	addr := deadlineServer(t, func(w http.ResponseWriter, r *http.Request) {
		if _, err := io.ReadAll(r.Body); err != nil {
			http.Error(w, err.Error(), http.StatusBadRequest)
			return
		}
		w.Header().Set("Content-Type", "text/event-stream")
		tick := time.NewTicker(bodyTimeout / 4)
		defer tick.Stop()
		for {
			select {
			case <-r.Context().Done(): // the request ends only when the client leaves
				return
			case <-tick.C:
				if _, err := io.WriteString(w, "data: tick\n\n"); err != nil {
					return
				}
				w.(http.Flusher).Flush()
			}
		}
	})
	for _, body := range []string{`{"query":"subscription { keyEvents { seq } }"}`, ""} {
		var rd io.Reader
		if body != "" {
			rd = strings.NewReader(body)
		}
		req, _ := http.NewRequest("POST", "http://"+addr+"/", rd)
		client := &http.Client{Transport: &http.Transport{}}
		res, err := client.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		lines := bufio.NewReader(res.Body)
		start := time.Now()
		for time.Since(start) < 3*bodyTimeout {
			if _, err := lines.ReadString('\n'); err != nil {
				t.Fatalf("body %q: the stream ended after %v: %v", body, time.Since(start), err)
			}
		}
		res.Body.Close()
		client.CloseIdleConnections()
	}
}

// A request whose body is read in time is not cut afterwards, however long its handler
// runs, and the connection stays usable.
func TestBodyDeadlineLiftedAfterBody(t *testing.T) {
	addr := deadlineServer(t, func(w http.ResponseWriter, r *http.Request) {
		if _, err := io.ReadAll(r.Body); err != nil {
			http.Error(w, err.Error(), http.StatusBadRequest)
			return
		}
		select { // a long wait, as acquire's wait is
		case <-time.After(3 * bodyTimeout):
		case <-r.Context().Done():
			http.Error(w, "cancelled", http.StatusInternalServerError)
			return
		}
		io.WriteString(w, "done")
	})
	client := &http.Client{Transport: &http.Transport{}}
	defer client.CloseIdleConnections()
	for range 2 { // the second on the same connection
		res, err := client.Post("http://"+addr+"/", "application/json", strings.NewReader(`{}`))
		if err != nil {
			t.Fatal(err)
		}
		body, _ := io.ReadAll(res.Body)
		res.Body.Close()
		if res.StatusCode != 200 || string(body) != "done" {
			t.Fatalf("%d %s", res.StatusCode, body)
		}
	}
}

func TestBodyDeadlineWithoutConnection(t *testing.T) {
	var served bool
	h := middleware.BodyDeadline(bodyTimeout, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(r.Body)
		served = string(body) == "x"
	}))
	h.ServeHTTP(httptest.NewRecorder(), httptest.NewRequest("POST", "/", strings.NewReader("x")))
	if !served {
		t.Fatal("a recorder, which takes no deadline, is served unchanged")
	}
}
