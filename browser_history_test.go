package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
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

// jsKeyRows is the dashboard's key list as "id state holder" lines.
const jsKeyRows = `[...document.querySelectorAll('#keys tr')].map(r =>
	[r.querySelector('button').dataset.id, r.children[1].textContent, r.children[2].textContent].join(' ').trim())`

// TestBrowserDashboardKeys drives the dashboard's keys: the list, generating from
// the page, a key's panel with its holder (opened from the list and from the feed),
// a forced release and a delete that asks first; each action changes the pool, and
// the page shows it. At a phone's size nothing scrolls sideways.
func TestBrowserDashboardKeys(t *testing.T) {
	chromium := chromiumOrSkip(t)
	checkNoLeaks(t)
	server := startBrowserServer(t)
	b := newBrowser(t, chromium, server)
	server.generateKeysIn(t, "crawl", 2)
	held := server.acquireIn(t, "crawl", "crawler <7>")

	b.do("open the dashboard of pool crawl", chromedp.Navigate(server.URL+"/dashboard?pool=crawl"), chromedp.WaitVisible(chromedp.ID("keys")))
	waitFor[bool](b, "the live subscription", `document.getElementById('status').dataset.state === 'live'`)
	waitFor[bool](b, "two keys listed, the held one with its holder", `(() => {
		const rows = `+jsKeyRows+`;
		return rows.length === 2 && rows.includes(`+strconv.Quote(held+" BLOCKED crawler <7>")+`);
	})()`)
	waitFor[bool](b, "the store's health", `document.getElementById('store').textContent === 'memory store · ready'`)
	waitFor[bool](b, "the share under lease", `document.getElementById('share-blocked').textContent === '50% of the keys'`)
	waitFor[bool](b, "the pool's utilisation", `document.querySelector('#pools tr[data-pool="crawl"] th').title === 'crawl: 50% blocked'`)

	// Generate three from the page: the pool has five, listed, counted, in the feed.
	b.do("generate 3 keys", chromedp.SetValue(chromedp.CSS("#generate-count"), "3"), chromedp.Click(chromedp.CSS(`#generate button`)))
	waitFor[bool](b, "five keys listed", jsKeyRows+`.length === 5`)
	waitFor[bool](b, "five counted", `document.getElementById('count-total').textContent === '5'`)
	waitFor[bool](b, "three GENERATED events in the feed", `document.querySelectorAll('#feed .type.GENERATED').length === 3`)

	// The held key's panel, from the list: its holder; then a forced release.
	b.do("open the held key", chromedp.Click(chromedp.CSS(`#keys button[data-id="`+held+`"]`)))
	waitFor[bool](b, "the panel with the holder", `document.getElementById('key-panel').open &&
		document.querySelector('#key-fields dd[data-field="Holder"]')?.textContent === 'crawler <7>'`)
	if *docsScreenshots {
		b.docsScreenshot("dashboard-key")
	}
	b.do("force release", chromedp.Click(chromedp.CSS("#key-release")))
	waitFor[bool](b, "the key released", `document.querySelector('#key-fields dd[data-field="State"]')?.textContent === 'AVAILABLE' &&
		document.getElementById('key-release').disabled`)
	waitFor[bool](b, "nothing blocked", `document.getElementById('count-blocked').textContent === '0'`)
	waitFor[bool](b, "the UNBLOCKED event in the feed", `document.querySelector('#feed li .type')?.textContent === 'UNBLOCKED'`)

	// Delete asks first; the second click deletes.
	b.do("delete once", chromedp.Click(chromedp.CSS("#key-delete")))
	waitFor[bool](b, "the question", `document.getElementById('key-delete').textContent === 'Delete for good?'`)
	if n := eval[string](b, `document.getElementById('count-total').textContent`); n != "5" {
		t.Fatalf("one click deleted: total %s", n)
	}
	b.do("confirm", chromedp.Click(chromedp.CSS("#key-delete")))
	waitFor[bool](b, "deleted", `document.getElementById('key-message').textContent === 'Deleted.'`)
	waitFor[bool](b, "four keys listed", jsKeyRows+`.length === 4`)
	waitFor[bool](b, "four counted", `document.getElementById('count-total').textContent === '4'`)
	b.do("close the panel", chromedp.Click(chromedp.CSS("#key-close")))

	// A key cooling down: its panel shows until when, and Restore hands it out again.
	data := server.graphql(t, `mutation { acquireKey(pool: "crawl") { token key { id } } }`, nil)
	var lease struct {
		Token string
		Key   struct{ ID string }
	}
	if err := json.Unmarshal(data["acquireKey"], &lease); err != nil {
		t.Fatal(err)
	}
	server.graphql(t, `mutation($id: ID!, $token: ID!) { unblockKey(id: $id, token: $token, cooldown: "1h") { status } }`,
		map[string]any{"id": lease.Key.ID, "token": lease.Token})
	b.do("list the cooling keys", chromedp.SetValue(chromedp.CSS("#keys-status"), "COOLING"),
		chromedp.Evaluate[chromedp.Void](`document.getElementById('keys-status').dispatchEvent(new Event('change'))`))
	waitFor[bool](b, "the cooling key listed", jsKeyRows+`.length === 1 && `+jsKeyRows+`[0] === `+strconv.Quote(lease.Key.ID+" COOLING"))
	b.do("open the cooling key", chromedp.Click(chromedp.CSS(`#keys button[data-id="`+lease.Key.ID+`"]`)))
	waitFor[bool](b, "its cool-down", `!!document.querySelector('#key-fields dd[data-field="Cooling until"]') &&
		!document.getElementById('key-restore').disabled`)
	b.do("restore", chromedp.Click(chromedp.CSS("#key-restore")))
	waitFor[bool](b, "the key restored", `document.querySelector('#key-fields dd[data-field="State"]')?.textContent === 'AVAILABLE'`)
	waitFor[bool](b, "no cooling key listed", jsKeyRows+`.length === 0`)
	b.do("close the panel", chromedp.Click(chromedp.CSS("#key-close")))

	// A key of the feed opens its panel too.
	b.do("open a key from the feed", chromedp.Click(chromedp.CSS(`#feed .type.GENERATED ~ button.key`)))
	waitFor[bool](b, "its panel", `document.getElementById('key-panel').open &&
		document.querySelector('#key-fields dd[data-field="State"]')?.textContent === 'AVAILABLE'`)
	b.do("close the panel", chromedp.Click(chromedp.CSS("#key-close")))

	// The feed's filter shows the events of one key; Pause holds new events back
	// until Resume.
	const visible = `[...document.querySelectorAll('#feed li')].filter(li => !li.hidden)`
	b.do("filter the feed by the released key", chromedp.SendKeys(chromedp.ID("feed-filter"), strings.ToLower(held)))
	waitFor[bool](b, "only its events", `(() => {
		const shown = `+visible+`;
		return shown.length >= 2 && shown.length < document.querySelectorAll('#feed li').length &&
			shown.every(li => li.querySelector('button.key').dataset.id === `+strconv.Quote(held)+`);
	})()`)
	b.do("clear the filter", chromedp.Evaluate[chromedp.Void](`(() => {
		const f = document.getElementById('feed-filter');
		f.value = '';
		f.dispatchEvent(new Event('input'));
	})()`))
	waitFor[bool](b, "every event shown", visible+`.length === document.querySelectorAll('#feed li').length`)
	generated := eval[int](b, `document.querySelectorAll('#feed .type.GENERATED').length`)
	b.do("pause the feed", chromedp.Click(chromedp.ID("feed-pause")))
	server.generateKeysIn(t, "crawl", 2)
	waitFor[bool](b, "two events held back", `document.getElementById('feed-pause').textContent === 'Resume (2 new)' &&
		document.getElementById('count-total').textContent === '6'`)
	if n := eval[int](b, `document.querySelectorAll('#feed .type.GENERATED').length`); n != generated {
		t.Fatalf("the paused feed drew events: %d GENERATED, %d before", n, generated)
	}
	b.do("resume the feed", chromedp.Click(chromedp.ID("feed-pause")))
	waitFor[bool](b, "the held events drawn", fmt.Sprintf(`document.querySelectorAll('#feed .type.GENERATED').length === %d &&
		document.getElementById('feed-pause').textContent === 'Pause'`, generated+2))
	if *docsScreenshots {
		b.docsPhoneScreenshot("dashboard-phone")
	}
	b.screenshots("dashboard-keys")
}
