package main

import (
	"context"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"testing"
	"time"

	"github.com/chromedp/chromedp"
	"github.com/jonboulle/clockwork"

	"github.com/keypool/keypool/keystore"
	"github.com/keypool/keypool/metrics"
)

// TestBrowserDashboardHistory: a dashboard opened on a server that has run a minute
// draws that minute at once, from the history the server sampled. The server is this
// process's, on a fake clock set two minutes back, so that its minute of samples is
// taken in no time and lies inside the chart's window.
func TestBrowserDashboardHistory(t *testing.T) {
	chromium := chromiumOrSkip(t)
	cfg, err := parseConfig(nil, func(string) string { return "" }, io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	clock := clockwork.NewFakeClockAt(time.Now().Add(-2 * time.Minute))
	store, err := keystore.NewMemory(clock, cfg.storeOptions())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { store.Close() })
	ctx, cancel := context.WithCancel(t.Context())
	t.Cleanup(cancel)
	go store.RecordHistory(ctx)
	if _, err := store.Generate(t.Context(), "", 5); err != nil {
		t.Fatal(err)
	}
	for i := range 6 { // a minute
		if err := clock.BlockUntilContext(t.Context(), 2); err != nil { // the expirer, the sampler
			t.Fatal(err)
		}
		clock.Advance(keystore.HistoryInterval)
		for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(time.Millisecond) {
			if s, _ := store.History(t.Context(), "", time.Time{}); len(s) == i+1 {
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("sample %d not taken", i+1)
			}
		}
	}
	srv := httptest.NewServer(newHandler(store, cfg, slog.New(slog.DiscardHandler), metrics.New()))
	t.Cleanup(srv.Close)
	server := &browserServer{URL: srv.URL, client: &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{}}}
	t.Cleanup(server.client.CloseIdleConnections)
	b := newBrowser(t, chromium, server)

	b.do("open the dashboard", chromedp.Navigate(server.URL+"/dashboard"), chromedp.WaitVisible(chromedp.ID("chart")))
	waitFor[bool](b, "the minute of history on the chart", `document.getElementById('chart').dataset.historyPoints === '6'`)
}
