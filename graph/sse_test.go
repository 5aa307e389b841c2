package graph_test

import (
	"bufio"
	"context"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/jonboulle/clockwork"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"go.uber.org/goleak"

	"github.com/keypool/keypool/graph"
	"github.com/keypool/keypool/keystore"
)

// pipeResponse is a ResponseWriter that cannot be hijacked (as over HTTP/2): what the
// handler writes comes out of a pipe.
type pipeResponse struct {
	header http.Header
	w      *io.PipeWriter
	once   sync.Once
	status chan int
}

func (p *pipeResponse) Header() http.Header { return p.header }
func (p *pipeResponse) WriteHeader(code int) {
	p.once.Do(func() { p.status <- code })
}
func (p *pipeResponse) Write(b []byte) (int, error) {
	p.WriteHeader(http.StatusOK)
	return p.w.Write(b)
}
func (p *pipeResponse) Flush() {}

// TestSSEThroughResponseWriter: SSE is written through the ResponseWriter alone (it
// need not be a connection that could be taken over), events and all, and ends with
// complete and its empty data line.
func TestSSEThroughResponseWriter(t *testing.T) {
	store, err := keystore.NewMemory(clockwork.NewFakeClock(), keystore.Options{})
	require.NoError(t, err)
	defer store.Close()
	ignore := goleak.IgnoreCurrent()
	handler := graph.NewServer(store, graph.ServerOptions{Logger: testLogger(t)})
	pr, pw := io.Pipe()
	w := &pipeResponse{header: http.Header{}, w: pw, status: make(chan int, 1)}
	ctx, cancel := context.WithCancel(t.Context())
	req := httptest.NewRequestWithContext(ctx, http.MethodPost, "/graphql",
		strings.NewReader(`{"query":"subscription { keyEvents(after: 0) { seq keyId } }"}`))
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("Accept", "text/event-stream")
	served := make(chan struct{})
	go func() {
		defer close(served)
		defer pw.Close()
		handler.ServeHTTP(w, req)
	}()
	require.Equal(t, http.StatusOK, <-w.status)
	assert.Equal(t, "text/event-stream", w.header.Get("Content-Type"))
	lines := bufio.NewReader(pr)
	line, err := lines.ReadString('\n')
	require.NoError(t, err)
	require.Equal(t, ":\n", line)

	_, err = store.Generate(t.Context(), "", 1) // after: 0 sees it, however late the subscription
	require.NoError(t, err)
	var data []string
	deadline := time.Now().Add(streamTimeout)
	for len(data) < 1 && time.Now().Before(deadline) {
		line, err := lines.ReadString('\n')
		require.NoError(t, err)
		if d, ok := strings.CutPrefix(line, "data: "); ok {
			data = append(data, d)
		}
	}
	require.Len(t, data, 1)
	assert.Contains(t, data[0], `{"data":{"keyEvents":{"seq":1,"keyId":"`)

	cancel() // the client leaves
	rest, err := io.ReadAll(lines)
	require.NoError(t, err)
	assert.True(t, strings.HasSuffix(string(rest), "event: complete\ndata:\n\n"), "%q", rest)
	<-served
	goleak.VerifyNone(t, ignore)
}
