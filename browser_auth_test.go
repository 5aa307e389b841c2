package main

import (
	"net/http"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/chromedp/cdproto/page"
	"github.com/chromedp/chromedp"

	"github.com/keypool/keypool/auth"
)

// TestBrowserDashboardToken: with access control on, the dashboard's shell loads
// without a token, asks for one once when the server answers 401 (or closes the
// websocket with 4403), then goes live with it; the token is kept in the tab's
// sessionStorage only, never in localStorage nor in a URL.
func TestBrowserDashboardToken(t *testing.T) {
	chromium := chromiumOrSkip(t)
	checkNoLeaks(t)
	viewer := testTokens[auth.Viewer]
	s := startServer(t, "-auth-file", writeAuthFile(t))
	server := &browserServer{URL: s.url, client: &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{}}}
	t.Cleanup(server.client.CloseIdleConnections)
	b := newBrowser(t, chromium, server)

	var prompts atomic.Int32
	answers := make(chan struct{}, 10)
	if err := chromedp.Listen(b.ctx, func(ev any) {
		if _, ok := ev.(*page.EventJavascriptDialogOpening); ok {
			prompts.Add(1)
			select { // answered on another goroutine: a listener must not block
			case answers <- struct{}{}:
			default:
			}
		}
	}); err != nil {
		t.Fatal(err)
	}
	go func() {
		for {
			select {
			case <-answers:
				_, _ = chromedp.Call(b.ctx, page.HandleJavaScriptDialog, page.HandleJavaScriptDialogParams{Accept: true, PromptText: viewer})
			case <-b.ctx.Done():
				return
			}
		}
	}()
	b.do("open the dashboard", chromedp.Navigate(server.URL+"/dashboard"), chromedp.WaitVisible(chromedp.ID("chart")))
	waitFor[bool](b, "the live subscription and the first stats with the token given",
		`document.getElementById('status').dataset.state === 'live' && `+jsCounts+`[0] >= 0`)
	if n := prompts.Load(); n != 1 {
		t.Errorf("the page asked for a token %d times, want once", n)
	}
	if got := eval[string](b, `sessionStorage.getItem('keypool-token')`); got != viewer {
		t.Errorf("sessionStorage holds %q, want the token", got)
	}
	if n := eval[int](b, `localStorage.length`); n != 0 {
		t.Errorf("localStorage holds %d items, want none", n)
	}
	b.mu.Lock()
	for _, url := range b.requests {
		if strings.Contains(url, viewer) {
			t.Errorf("a URL holds the token: %s", url)
		}
	}
	b.mu.Unlock()
	server.client.Transport = bearerTransport{token: testTokens[auth.Admin]}
	server.generateKeys(t, 2)
	waitFor[bool](b, "the counts after generateKeys(2)", jsCounts+`[0] === 2`)

	// GraphiQL, in a tab that has no token yet: asked for once, then sent; a viewer's
	// generateKeys is FORBIDDEN (not UNAUTHENTICATED: the token went with it).
	b.do("forget the token", chromedp.Evaluate[chromedp.Void](`sessionStorage.clear()`))
	b.do("open GraphiQL", chromedp.Navigate(server.URL+"/"), chromedp.WaitVisible(chromedp.CSS(".graphiql-execute-button")))
	b.do("run generateKeys", chromedp.Click(chromedp.CSS(".graphiql-execute-button")))
	text := waitFor[string](b, "the generateKeys answer", jsResponse+`.includes('"errors"') && `+jsResponse)
	if !strings.Contains(text, "FORBIDDEN") {
		t.Errorf("a viewer's generateKeys answered %s, want FORBIDDEN", text)
	}
	if n := prompts.Load(); n != 2 {
		t.Errorf("asked for a token %d times in all, want twice", n)
	}
}

// bearerTransport sends a token with every request.
type bearerTransport struct{ token string }

func (b bearerTransport) RoundTrip(r *http.Request) (*http.Response, error) {
	r = r.Clone(r.Context())
	r.Header.Set("Authorization", "Bearer "+b.token)
	return http.DefaultTransport.RoundTrip(r)
}
