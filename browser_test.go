package main

// Browser tests: GraphiQL at / and the dashboard at /dashboard, driven in headless
// Chromium against the real server (run on a free port, in-memory pool).
//
//	go test -run Browser .                                   # the tests
//	KEYPOOL_ARTIFACTS=/tmp/shots go test -run Browser .      # keep their screenshots
//	go test -run Browser . -args -docs-screenshots           # also rewrite docs/*.png
//
// Each test fails on any request to a host other than the server's, on an
// uncaught exception and on a Content-Security-Policy violation in the page.

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/chromedp/cdproto/network"
	"github.com/chromedp/chromedp"
	"go.uber.org/goleak"
)

var docsScreenshots = flag.Bool("docs-screenshots", false,
	"write docs/*.png (GraphiQL, the dashboard at 1280x800 and at a phone's 390x844, the REST docs) from the browser tests")

const (
	browserTestTimeout = 90 * time.Second // the whole browser: it is killed after this
	browserStepTimeout = 20 * time.Second // one step: a page load, a wait for a result
)

// browserServer is the real server, with an HTTP client of its own.
type browserServer struct {
	URL    string // http://127.0.0.1:PORT
	client *http.Client
}

func startBrowserServer(t *testing.T) *browserServer {
	t.Helper()
	s := &browserServer{URL: startServer(t).url, client: &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{}}}
	t.Cleanup(s.client.CloseIdleConnections)
	return s
}

// graphql posts one operation to /graphql, the way any client would, and returns
// its data; any error in the answer fails the test.
func (s *browserServer) graphql(t *testing.T, query string, variables map[string]any) map[string]json.RawMessage {
	t.Helper()
	body, _ := json.Marshal(map[string]any{"query": query, "variables": variables})
	res, err := s.client.Post(s.URL+"/graphql", "application/json", bytes.NewReader(body))
	if err != nil {
		t.Fatalf("POST /graphql: %v", err)
	}
	defer res.Body.Close()
	var answer struct {
		Data   map[string]json.RawMessage `json:"data"`
		Errors []json.RawMessage          `json:"errors"`
	}
	if err := json.NewDecoder(res.Body).Decode(&answer); err != nil {
		t.Fatalf("POST /graphql: %d: %v", res.StatusCode, err)
	}
	if len(answer.Errors) > 0 {
		t.Fatalf("POST /graphql %q: errors %s", query, answer.Errors)
	}
	return answer.Data
}

func (s *browserServer) generateKeys(t *testing.T, count int) []string {
	t.Helper()
	return s.generateKeysIn(t, "", count) // "": the default pool
}

// browser is one headless Chromium with one tab, which records every request the
// page makes and every problem it reports.
type browser struct {
	t       *testing.T
	ctx     context.Context
	origins []string // URL prefixes the page may load from

	mu       sync.Mutex
	requests []string // every URL the page requested or opened a WebSocket to
	problems []string // uncaught exceptions, CSP violations
}

func chromiumPath() string {
	if p := os.Getenv("KEYPOOL_CHROMIUM"); p != "" {
		return p
	}
	for _, name := range []string{"chromium", "chromium-browser", "google-chrome", "google-chrome-stable", "headless-shell"} {
		if p, err := exec.LookPath(name); err == nil {
			return p
		}
	}
	return ""
}

// chromiumOrSkip returns the Chromium to drive, or skips the test.
func chromiumOrSkip(t *testing.T) string {
	t.Helper()
	if testing.Short() {
		t.Skip("browser test: skipped with -short")
	}
	execPath := chromiumPath()
	if execPath == "" {
		t.Skip("chromium not installed: apt-get install chromium")
	}
	return execPath
}

func newBrowser(t *testing.T, execPath string, server *browserServer) *browser {
	t.Helper()
	profile := t.TempDir()
	opts := []chromedp.ExecAllocatorOption{
		chromedp.ExecPath(execPath),
		chromedp.Headless,
		chromedp.NoSandbox,
		chromedp.DisableGPU,
		chromedp.NoFirstRun,
		chromedp.NoDefaultBrowserCheck,
		chromedp.Flag("disable-quic", true),
		chromedp.Flag("disable-background-networking", true),
		chromedp.Flag("disable-component-update", true),
		chromedp.Flag("disable-sync", true),
		chromedp.Flag("disable-extensions", true),
		chromedp.Flag("disable-default-apps", true),
		chromedp.Flag("disable-domain-reliability", true),
		chromedp.Flag("disable-breakpad", true),
		chromedp.Flag("no-pings", true),
		chromedp.Flag("mute-audio", true),
		chromedp.Flag("hide-scrollbars", true),
		chromedp.Flag("lang", "en-US"),
		chromedp.UserDataDir(profile),
		chromedp.WindowSize(1280, 800),
	}
	rootCtx, cancelRoot := context.WithTimeout(context.Background(), browserTestTimeout)
	allocCtx, cancelAlloc := chromedp.NewExecAllocator(rootCtx, opts...)
	ctx, cancelTab := chromedp.NewContext(allocCtx)

	host := strings.TrimPrefix(server.URL, "http://")
	b := &browser{t: t, ctx: ctx, origins: []string{"http://" + host + "/", "ws://" + host + "/", "data:"}}
	if err := chromedp.Listen(ctx, b.record); err != nil {
		cancelTab()
		cancelAlloc()
		cancelRoot()
		t.Fatalf("start chromium (%s): %v", execPath, err)
	}
	messages := chromedp.Console(ctx)
	consoleDone := make(chan struct{})
	go func() {
		defer close(consoleDone)
		for m, err := range messages {
			if err != nil {
				return
			}
			b.console(m)
		}
	}()
	t.Cleanup(func() {
		if err := chromedp.Cancel(ctx); err != nil && !errors.Is(err, context.Canceled) {
			t.Logf("close chromium: %v", err)
		}
		cancelTab()
		cancelAlloc()
		cancelRoot()
		<-consoleDone
		b.check()
		checkNoChromiumLeft(t, profile)
	})
	if _, err := chromedp.Call(ctx, network.Enable, network.EnableParams{}); err != nil {
		t.Fatalf("network.enable: %v", err)
	}
	return b
}

func (b *browser) record(ev any) {
	var url string
	switch ev := ev.(type) {
	case *network.EventRequestWillBeSent:
		url = ev.Request.URL
	case *network.EventWebSocketCreated:
		url = ev.URL
	default:
		return
	}
	b.mu.Lock()
	b.requests = append(b.requests, url)
	b.mu.Unlock()
}

var cspViolation = regexp.MustCompile(`(?i)refused to|content security policy`)

func (b *browser) console(m chromedp.ConsoleMessage) {
	text := m.String()
	if m.URL != "" {
		text += " (" + m.URL + ")"
	}
	if m.IsException() || cspViolation.MatchString(m.Text) {
		b.mu.Lock()
		b.problems = append(b.problems, text)
		b.mu.Unlock()
	}
	b.t.Logf("browser console: %s", text)
}

// check fails the test on any request to another host, and on any problem the
// page reported.
func (b *browser) check() {
	b.mu.Lock()
	defer b.mu.Unlock()
	if len(b.requests) == 0 {
		b.t.Error("no request was recorded: the network listener does not work")
	}
	for _, url := range b.requests {
		ok := false
		for _, origin := range b.origins {
			ok = ok || strings.HasPrefix(url, origin)
		}
		if !ok {
			b.t.Errorf("the page requested %s: only %v are allowed", truncate(url, 120), b.origins)
		}
	}
	for _, p := range b.problems {
		b.t.Errorf("the page reported: %s", p)
	}
	if b.t.Failed() {
		for _, url := range b.requests {
			b.t.Logf("the page requested %s", truncate(url, 120))
		}
	}
}

func (b *browser) sawRequest(prefix string) bool {
	b.mu.Lock()
	defer b.mu.Unlock()
	for _, url := range b.requests {
		if strings.HasPrefix(url, prefix) {
			return true
		}
	}
	return false
}

func truncate(s string, n int) string {
	if len(s) > n {
		return s[:n] + "…"
	}
	return s
}

// checkNoChromiumLeft fails the test if any process still runs with the test's
// profile directory: chromedp kills the browser and its children on cancel, and
// this proves it. Survivors are killed, so they do not outlive the test either.
func checkNoChromiumLeft(t *testing.T, profile string) {
	if runtime.GOOS != "linux" {
		return
	}
	want := []byte("--user-data-dir=" + profile)
	var left []int
	for range 50 {
		left = left[:0]
		entries, _ := os.ReadDir("/proc")
		for _, e := range entries {
			pid, err := strconv.Atoi(e.Name())
			if err != nil {
				continue
			}
			cmdline, err := os.ReadFile("/proc/" + e.Name() + "/cmdline")
			if err == nil && bytes.Contains(cmdline, want) {
				left = append(left, pid)
			}
		}
		if len(left) == 0 {
			return
		}
		time.Sleep(100 * time.Millisecond)
	}
	for _, pid := range left {
		if p, err := os.FindProcess(pid); err == nil {
			_ = p.Kill()
		}
	}
	t.Errorf("chromium processes %v outlived the test by 5 s (killed now)", left)
}

// checkNoLeaks checks, after every cleanup of the test (the server, the
// browser), that no goroutine the test started is left.
func checkNoLeaks(t *testing.T) {
	before := goleak.IgnoreCurrent()
	t.Cleanup(func() { goleak.VerifyNone(t, before) })
}

// do runs the actions with the step timeout.
func (b *browser) do(what string, actions ...chromedp.Action[chromedp.Void]) {
	b.t.Helper()
	ctx, cancel := context.WithTimeout(b.ctx, browserStepTimeout)
	defer cancel()
	if err := chromedp.Do(ctx, actions...); err != nil {
		b.t.Fatalf("%s: %v", what, err)
	}
}

// eval evaluates a JavaScript expression in the page.
func eval[T any](b *browser, expression string) T {
	b.t.Helper()
	ctx, cancel := context.WithTimeout(b.ctx, browserStepTimeout)
	defer cancel()
	v, err := chromedp.Run(ctx, chromedp.Evaluate[T](expression))
	if err != nil {
		b.t.Fatalf("evaluate %s: %v", truncate(expression, 80), err)
	}
	return v
}

// waitFor polls a JavaScript expression until it is truthy, and returns it.
func waitFor[T any](b *browser, what, expression string) T {
	b.t.Helper()
	ctx, cancel := context.WithTimeout(b.ctx, browserStepTimeout)
	defer cancel()
	v, err := chromedp.Run(ctx, chromedp.Poll[T](expression,
		chromedp.WithPollingInterval(50*time.Millisecond), chromedp.WithPollingTimeout(browserStepTimeout)))
	if err != nil {
		b.t.Fatalf("waiting for %s: %v", what, err)
	}
	return v
}

// screenshots saves the page as name.png and name-phone.png in the artifacts
// directory, at a laptop's and at a phone's size, and checks that the page does
// not scroll sideways at either.
func (b *browser) screenshots(name string) {
	b.t.Helper()
	dir := artifactsDir(b.t)
	b.resize(1280, 800, false)
	b.saveScreenshot(filepath.Join(dir, name+".png"))
	b.resize(390, 844, true)
	b.saveScreenshot(filepath.Join(dir, name+"-phone.png"))
	b.do("reset the viewport", chromedp.ResetViewport())
}

// docsScreenshot saves the page at 1280x800 as docs/name.png, for the README.
func (b *browser) docsScreenshot(name string) {
	b.t.Helper()
	b.resize(1280, 800, false)
	b.saveScreenshot(filepath.Join("docs", name+".png"))
}

// docsPhoneScreenshot saves the page at a phone's 390x844 as docs/name.png, then
// resets the viewport.
func (b *browser) docsPhoneScreenshot(name string) {
	b.t.Helper()
	b.resize(390, 844, true)
	b.saveScreenshot(filepath.Join("docs", name+".png"))
	b.do("reset the viewport", chromedp.ResetViewport())
}

// resize sets the viewport, waits for the page to lay out at the new size (the
// dashboard redraws its chart on resize), and checks that nothing overflows
// sideways.
func (b *browser) resize(width, height int64, mobile bool) {
	b.t.Helper()
	view := []chromedp.EmulateViewportOption{chromedp.EmulateScale(1)}
	if mobile {
		view = append(view, chromedp.EmulateMobile, chromedp.EmulateTouch)
	}
	b.do(fmt.Sprintf("resize to %dx%d", width, height), chromedp.EmulateViewport(width, height, view...))
	waitFor[bool](b, "a frame at the new size", fmt.Sprintf(
		`new Promise(r => requestAnimationFrame(() => requestAnimationFrame(() => r(innerWidth === %d))))`, width))
	if overflow := eval[int](b, `document.documentElement.scrollWidth - innerWidth`); overflow > 0 {
		b.t.Errorf("at %dx%d the page scrolls sideways by %d px", width, height, overflow)
	}
}

func (b *browser) saveScreenshot(path string) {
	b.t.Helper()
	ctx, cancel := context.WithTimeout(b.ctx, browserStepTimeout)
	defer cancel()
	png, err := chromedp.Run(ctx, chromedp.CaptureScreenshot())
	if err != nil {
		b.t.Fatalf("screenshot: %v", err)
	}
	if err := os.WriteFile(path, png, 0o644); err != nil {
		b.t.Fatal(err)
	}
	b.t.Logf("screenshot: %s", path)
}

// artifactsDir is $KEYPOOL_ARTIFACTS when set (CI keeps it), else a temporary
// directory that is removed after the test.
func artifactsDir(t *testing.T) string {
	if dir := os.Getenv("KEYPOOL_ARTIFACTS"); dir != "" {
		if err := os.MkdirAll(dir, 0o755); err != nil {
			t.Fatal(err)
		}
		return dir
	}
	return t.TempDir()
}

// The result pane and the query editor are CodeMirror 5 editors, which hang
// their instance on their wrapper element.
const (
	jsResponse = `(document.querySelector('.graphiql-response .CodeMirror')?.CodeMirror.getValue() ?? '')`
	jsQuery    = `(document.querySelector('.graphiql-query-editor .CodeMirror')?.CodeMirror.getValue() ?? '')`
)

func TestBrowserGraphiQL(t *testing.T) {
	chromium := chromiumOrSkip(t)
	checkNoLeaks(t)
	server := startBrowserServer(t)
	b := newBrowser(t, chromium, server)

	b.do("open GraphiQL", chromedp.Navigate(server.URL+"/"), chromedp.WaitVisible(chromedp.CSS(".graphiql-execute-button")))

	// One tab per operation of the schema.
	tabs := waitFor[[]string](b, "the example tabs", `(() => {
		const tabs = [...document.querySelectorAll('.graphiql-tab .graphiql-tab-button')].map(t => t.textContent.trim());
		return tabs.length >= 9 && tabs;
	})()`)
	want := []string{"GenerateKeys", "AcquireKey", "UnblockKey", "RenewLease", "KeepAlive", "DeleteKey", "Key", "Stats", "KeyEvents"}
	if strings.Join(tabs, ",") != strings.Join(want, ",") {
		t.Fatalf("tabs %q, want %q", tabs, want)
	}

	// The first tab runs generateKeys with its example variables (count: 3).
	if q := eval[string](b, jsQuery); !strings.Contains(q, "mutation GenerateKeys") {
		t.Fatalf("the first tab holds %q", q)
	}
	b.do("run generateKeys", chromedp.Click(chromedp.CSS(".graphiql-execute-button")))
	text := waitFor[string](b, "the generateKeys result", jsResponse+`.includes('"generateKeys"') && `+jsResponse)
	var result struct {
		Data struct {
			GenerateKeys []struct{ ID, Status string }
		}
	}
	if err := json.Unmarshal([]byte(text), &result); err != nil {
		t.Fatalf("result pane: %v:\n%s", err, text)
	}
	if keys := result.Data.GenerateKeys; len(keys) != 3 || keys[0].Status != "AVAILABLE" || len(keys[0].ID) < 20 {
		t.Fatalf("generateKeys in GraphiQL gave %+v", keys)
	}
	if *docsScreenshots {
		b.docsScreenshot("graphiql")
	}

	// The keyEvents tab subscribes over graphql-transport-ws; an event caused by a
	// plain HTTP request shows in the result pane.
	b.do("open the KeyEvents tab", chromedp.Click(chromedp.JSPath(
		`[...document.querySelectorAll('.graphiql-tab-button')].find(b => b.textContent.trim() === 'KeyEvents')`)))
	waitFor[bool](b, "the KeyEvents query", jsQuery+`.includes('subscription KeyEvents')`)
	b.do("run keyEvents", chromedp.Click(chromedp.CSS(".graphiql-execute-button")))
	wsURL := "ws://" + strings.TrimPrefix(server.URL, "http://") + "/graphql"
	waitFor[bool](b, "the stop button of a running subscription", `!!document.querySelector('.graphiql-execute-button[aria-label*="Stop" i]')`)
	var seen string
	for try := 0; try < 10 && seen == ""; try++ {
		// The subscription may not be registered on the server yet: generate again
		// until one of the keys shows up.
		id := server.generateKeys(t, 1)[0]
		ctx, cancel := context.WithTimeout(b.ctx, time.Second)
		_, err := chromedp.Run(ctx, chromedp.Poll[bool](jsResponse+`.includes(`+strconv.Quote(id)+`)`,
			chromedp.WithPollingInterval(25*time.Millisecond), chromedp.WithPollingTimeout(time.Second)))
		cancel()
		if err == nil {
			seen = id
		}
	}
	if seen == "" {
		t.Fatalf("no GENERATED event in the result pane; it shows:\n%s", eval[string](b, jsResponse))
	}
	if text := eval[string](b, jsResponse); !strings.Contains(text, `"GENERATED"`) {
		t.Errorf("the event in the result pane is not GENERATED:\n%s", text)
	}
	if !b.sawRequest(wsURL) {
		t.Errorf("no WebSocket to %s was recorded", wsURL)
	}

	b.screenshots("graphiql")
}

// dashboardCounts reads the three counts; -1 for one not shown yet.
const jsCounts = `['total', 'available', 'blocked'].map(n => {
	const v = document.getElementById('count-' + n).textContent.replace(/[^0-9]/g, '');
	return v === '' ? -1 : Number(v);
})`

func TestBrowserDashboard(t *testing.T) {
	chromium := chromiumOrSkip(t)
	checkNoLeaks(t)
	server := startBrowserServer(t)
	b := newBrowser(t, chromium, server)

	page := "/dashboard"
	if *docsScreenshots {
		page += "?minutes=1" // a minute of activity fills the chart of the docs screenshot
	}
	b.do("open the dashboard", chromedp.Navigate(server.URL+page), chromedp.WaitVisible(chromedp.ID("chart")))
	waitFor[bool](b, "the live subscription and the first stats",
		`document.getElementById('status').dataset.state === 'live' && `+jsCounts+`[0] >= 0`)

	waitCounts := func(what string, total, available, blocked int) {
		t.Helper()
		want := fmt.Sprintf("[%d,%d,%d]", total, available, blocked)
		ctx, cancel := context.WithTimeout(b.ctx, browserStepTimeout)
		defer cancel()
		if _, err := chromedp.Run(ctx, chromedp.Poll[bool](`JSON.stringify(`+jsCounts+`) === `+strconv.Quote(want),
			chromedp.WithPollingInterval(50*time.Millisecond), chromedp.WithPollingTimeout(browserStepTimeout))); err != nil {
			t.Fatalf("%s: counts %v, want %s: %v", what, eval[[]int](b, jsCounts), want, err)
		}
	}
	waitCounts("an empty pool", 0, 0, 0)

	ids := server.generateKeys(t, 5)
	waitCounts("after generateKeys(5)", 5, 5, 0)

	acquire := func() (id, token string) {
		t.Helper()
		data := server.graphql(t, `mutation { acquireKey { token key { id } } }`, nil)
		var lease struct {
			Token string
			Key   struct{ ID string }
		}
		if err := json.Unmarshal(data["acquireKey"], &lease); err != nil {
			t.Fatal(err)
		}
		return lease.Key.ID, lease.Token
	}
	blocked, token := acquire()
	waitCounts("after acquireKey", 5, 4, 1)

	server.graphql(t, `mutation($id: ID!, $token: ID) { unblockKey(id: $id, token: $token) { id } }`,
		map[string]any{"id": blocked, "token": token})
	waitCounts("after unblockKey", 5, 5, 0)

	// DELETED does not say which state the key was in: the page asks stats again.
	blocked, _ = acquire()
	for _, id := range ids {
		if id != blocked {
			server.graphql(t, `mutation($id: ID!) { deleteKey(id: $id) }`, map[string]any{"id": id})
			break
		}
	}
	waitCounts("after acquireKey and deleteKey of an available key", 4, 3, 1)
	server.graphql(t, `mutation($id: ID!) { deleteKey(id: $id) }`, map[string]any{"id": blocked})
	waitCounts("after deleteKey of the blocked key", 3, 3, 0)

	// The feed shows every event, newest first.
	feed := waitFor[[]string](b, "the feed", `(() => {
		const types = [...document.querySelectorAll('#feed li .type')].map(e => e.textContent);
		return types.length >= 10 && types;
	})()`)
	wantFeed := []string{"DELETED", "DELETED", "ACQUIRED", "UNBLOCKED", "ACQUIRED", "GENERATED"}
	if strings.Join(feed[:len(wantFeed)], ",") != strings.Join(wantFeed, ",") {
		t.Errorf("feed starts %q, want %q", feed, wantFeed)
	}
	if !b.sawRequest("ws://" + strings.TrimPrefix(server.URL, "http://") + "/graphql") {
		t.Error("the dashboard opened no WebSocket to /graphql")
	}

	// Offline (navigator.onLine false and the 'offline' event), the page drops
	// its WebSocket; back online, it reconnects and resumes after the last seq it
	// saw, so the events made meanwhile are replayed into the feed.
	setOffline := func(offline bool) {
		t.Helper()
		if _, err := chromedp.Call(b.ctx, network.OverrideNetworkState, network.OverrideNetworkStateParams{
			Offline: offline, DownloadThroughput: -1, UploadThroughput: -1,
		}); err != nil {
			t.Fatalf("network offline=%v: %v", offline, err)
		}
	}
	setOffline(true)
	waitFor[bool](b, "the dashboard to go offline", `document.getElementById('status').dataset.state === 'offline'`)
	missed := server.generateKeys(t, 2)
	setOffline(false)
	waitFor[bool](b, "the dashboard to reconnect", `document.getElementById('status').dataset.state === 'live'`)
	waitCounts("after generateKeys(2) while offline", 5, 5, 0)
	for _, id := range missed {
		waitFor[bool](b, "the event of a key made while offline", `[...document.querySelectorAll('#feed code')].some(e => e.textContent === `+strconv.Quote(id)+`)`)
	}

	if *docsScreenshots {
		dashboardActivity(t, server, 25*time.Second)
		time.Sleep(1500 * time.Millisecond) // a last chart sample
		b.docsScreenshot("dashboard")
	}
	b.screenshots("dashboard")
}

// dashboardActivity makes the pool busy for a while, for the docs screenshot: keys
// come in bursts, are acquired, some unblocked and some deleted.
func dashboardActivity(t *testing.T, server *browserServer, d time.Duration) {
	var available []string
	var held []struct{ id, token string }
	for i, end := 0, time.Now().Add(d); time.Now().Before(end); i++ {
		switch {
		case i%8 == 0 || len(available) == 0:
			available = append(available, server.generateKeys(t, 4+i%5)...)
		case i%3 == 2 && len(held) > 0:
			h := held[0]
			held = held[1:]
			server.graphql(t, `mutation($id: ID!, $token: ID) { unblockKey(id: $id, token: $token) { id } }`,
				map[string]any{"id": h.id, "token": h.token})
		case i%7 == 3 && len(available) > 0:
			server.graphql(t, `mutation($id: ID!) { deleteKey(id: $id) }`, map[string]any{"id": available[0]})
			available = available[1:]
		default:
			data := server.graphql(t, `mutation { acquireKey { token key { id } } }`, nil)
			var lease *struct {
				Token string
				Key   struct{ ID string }
			}
			_ = json.Unmarshal(data["acquireKey"], &lease)
			if lease != nil {
				held = append(held, struct{ id, token string }{lease.Key.ID, lease.Token})
				for j, id := range available {
					if id == lease.Key.ID {
						available = append(available[:j], available[j+1:]...)
						break
					}
				}
			}
		}
		time.Sleep(400 * time.Millisecond)
	}
}

// generateKeysIn generates count keys in pool and returns their ids.
func (s *browserServer) generateKeysIn(t *testing.T, pool string, count int) []string {
	t.Helper()
	data := s.graphql(t, `mutation($n: Int!, $pool: String) { generateKeys(count: $n, pool: $pool) { id } }`,
		map[string]any{"n": count, "pool": pool})
	var keys []struct{ ID string }
	if err := json.Unmarshal(data["generateKeys"], &keys); err != nil {
		t.Fatal(err)
	}
	ids := make([]string, len(keys))
	for i, k := range keys {
		ids[i] = k.ID
	}
	return ids
}

// acquireIn acquires a key of pool for holder and returns the key's id.
func (s *browserServer) acquireIn(t *testing.T, pool, holder string) string {
	t.Helper()
	data := s.graphql(t, `mutation($pool: String, $holder: String) { acquireKey(pool: $pool, holder: $holder) { key { id } } }`,
		map[string]any{"pool": pool, "holder": holder})
	var lease struct{ Key struct{ ID string } }
	if err := json.Unmarshal(data["acquireKey"], &lease); err != nil {
		t.Fatal(err)
	}
	return lease.Key.ID
}

// subscribers reads the keypool_subscribers gauge from /metrics.
func (s *browserServer) subscribers(t *testing.T) int {
	t.Helper()
	res, err := s.client.Get(s.URL + "/metrics")
	if err != nil {
		t.Fatalf("GET /metrics: %v", err)
	}
	defer res.Body.Close()
	var buf bytes.Buffer
	if _, err := buf.ReadFrom(res.Body); err != nil {
		t.Fatal(err)
	}
	m := regexp.MustCompile(`(?m)^keypool_subscribers (\d+)$`).FindSubmatch(buf.Bytes())
	if m == nil {
		t.Fatalf("no keypool_subscribers in /metrics")
	}
	n, _ := strconv.Atoi(string(m[1]))
	return n
}

// The dashboard's pool parts, read from the page.
const (
	// jsWaiting is the waiting count; -1 while none is shown.
	jsWaiting = `(() => { const v = document.getElementById('count-waiting').textContent.replace(/[^0-9]/g, ''); return v === '' ? -1 : Number(v); })()`
	// jsPoolOptions lists the selector's options.
	jsPoolOptions = `[...document.getElementById('pool').options].map(o => o.value)`
	// jsPoolRows is the pools table as "name total available blocked waiting" lines,
	// the selected row starred.
	jsPoolRows = `[...document.querySelectorAll('#pools tr')].map(r =>
		(r.getAttribute('aria-current') === 'true' ? '*' : '') +
		[...r.children].map(c => c.textContent.replace(/,/g, '')).join(' '))`
	// jsFeed lists the feed as "TYPE keyId holder" lines, newest first.
	jsFeed = `[...document.querySelectorAll('#feed li')].map(li =>
		[li.querySelector('.type').textContent, li.querySelector('code').textContent, li.querySelector('.holder').textContent].join(' ').trim())`
)

// TestBrowserDashboardPools drives the dashboard's pools: ?pool= chooses the pool on
// load, the selector lists every pool and the table counts each, choosing another
// pool (in the selector or the table) shows its counts, its waiting acquires and
// its events only, with holders, and ends the old subscription.
func TestBrowserDashboardPools(t *testing.T) {
	chromium := chromiumOrSkip(t)
	checkNoLeaks(t)
	server := startBrowserServer(t)
	b := newBrowser(t, chromium, server)

	alpha := server.generateKeysIn(t, "alpha", 3)
	server.generateKeysIn(t, "beta", 2)
	server.acquireIn(t, "beta", "first")

	waitJSON := func(what, expression string, want any) {
		t.Helper()
		var buf bytes.Buffer // as JSON.stringify writes it: <, > and & as they are
		enc := json.NewEncoder(&buf)
		enc.SetEscapeHTML(false)
		if err := enc.Encode(want); err != nil {
			t.Fatal(err)
		}
		w := bytes.TrimSpace(buf.Bytes())
		ctx, cancel := context.WithTimeout(b.ctx, browserStepTimeout)
		defer cancel()
		if _, err := chromedp.Run(ctx, chromedp.Poll[bool](`JSON.stringify(`+expression+`) === `+strconv.Quote(string(w)),
			chromedp.WithPollingInterval(50*time.Millisecond), chromedp.WithPollingTimeout(browserStepTimeout))); err != nil {
			t.Fatalf("%s: %s, want %s: %v", what, eval[json.RawMessage](b, `JSON.stringify(`+expression+`)`), w, err)
		}
	}
	waitCounts := func(what string, total, available, blocked, waiting int) {
		t.Helper()
		waitJSON(what+": the counts", `[...`+jsCounts+`, `+jsWaiting+`]`, []int{total, available, blocked, waiting})
	}
	live := func() {
		t.Helper()
		waitFor[bool](b, "the live subscription", `document.getElementById('status').dataset.state === 'live'`)
	}

	// ?pool= chooses the pool on load.
	b.do("open the dashboard of pool beta", chromedp.Navigate(server.URL+"/dashboard?pool=beta"), chromedp.WaitVisible(chromedp.ID("chart")))
	live()
	waitJSON("the selector", `[document.getElementById('pool').value, ...`+jsPoolOptions+`]`, []string{"beta", "alpha", "beta", "default"})
	waitCounts("pool beta on load", 2, 1, 1, 0)
	waitJSON("the pools table", jsPoolRows, []string{"alpha 3 3 0 0 0 0", "*beta 2 1 1 0 0 0", "default 0 0 0 0 0 0"})

	// Choosing alpha in the selector: its counts, ?pool=alpha, and one subscription.
	b.do("choose pool alpha", chromedp.Evaluate[chromedp.Void](`(() => {
		const s = document.getElementById('pool');
		s.value = 'alpha';
		s.dispatchEvent(new Event('change'));
	})()`))
	waitCounts("pool alpha", 3, 3, 0, 0)
	waitJSON("the pools table", jsPoolRows, []string{"*alpha 3 3 0 0 0 0", "beta 2 1 1 0 0 0", "default 0 0 0 0 0 0"})
	if search := eval[string](b, `location.search`); search != "?pool=alpha" {
		t.Errorf("after choosing alpha the URL's query is %q, want ?pool=alpha", search)
	}
	if feed := eval[[]string](b, jsFeed); len(feed) != 0 {
		t.Errorf("the feed kept %q from pool beta", feed)
	}
	for deadline := time.Now().Add(5 * time.Second); server.subscribers(t) != 1; time.Sleep(50 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("%d subscriptions after switching pools, want 1: the old one was not ended", server.subscribers(t))
		}
	}

	// Events of beta do not show; alpha's do, with the holder as text.
	live()
	beta := server.generateKeysIn(t, "beta", 2)
	alpha = append(alpha, server.generateKeysIn(t, "alpha", 1)...)
	const holder = `<b>ops</b> & "co"`
	held := server.acquireIn(t, "alpha", holder)
	waitCounts("pool alpha after generateKeys and acquireKey", 4, 3, 1, 0)
	waitJSON("the feed", jsFeed, []string{"ACQUIRED " + held + " " + holder, "GENERATED " + alpha[3]})
	if n := eval[int](b, `document.querySelectorAll('#feed .holder *, #pools th *:not(button), #pool option *').length`); n != 0 {
		t.Errorf("text from the server made %d elements", n)
	}
	for _, id := range beta {
		if eval[bool](b, `document.getElementById('feed').textContent.includes(`+strconv.Quote(id)+`)`) {
			t.Errorf("the feed of pool alpha shows key %s of pool beta", id)
		}
	}

	// Clicking a row chooses its pool; an acquire waiting there is counted, and
	// gets the key generated next (ACQUIRED with its holder).
	b.do("click the row of pool default", chromedp.Click(chromedp.CSS(`#pools tr[data-pool="default"]`)))
	waitCounts("pool default", 0, 0, 0, 0)
	live()
	if search := eval[string](b, `location.search`); search != "" {
		t.Errorf("after choosing default the URL's query is %q, want none", search)
	}
	waited := make(chan error, 1)
	go func() {
		body := `{"query":"mutation { acquireKey(wait: \"25s\", holder: \"waiter\") { key { id } } }"}`
		client := &http.Client{Timeout: 30 * time.Second, Transport: &http.Transport{}}
		defer client.CloseIdleConnections()
		res, err := client.Post(server.URL+"/graphql", "application/json", strings.NewReader(body))
		if err == nil {
			res.Body.Close()
		}
		waited <- err
	}()
	waitCounts("an acquire waiting in pool default", 0, 0, 0, 1)
	waitJSON("the pools table", jsPoolRows, []string{"alpha 4 3 1 0 0 0", "beta 4 3 1 0 0 0", "*default 0 0 0 0 0 1"})
	made := server.generateKeysIn(t, "default", 1)[0]
	if err := <-waited; err != nil {
		t.Fatalf("the waiting acquire: %v", err)
	}
	waitCounts("after the waiting acquire got its key", 1, 0, 1, 0)
	waitJSON("the feed", jsFeed, []string{"ACQUIRED " + made + " waiter", "GENERATED " + made})

	// A pool that does not exist yet: chosen and shown as empty; its first event
	// brings it into the table (the pools query is asked again at once, not at the
	// next refresh, 15 s later).
	//
	// Leaving the page ends its subscription at once (the page closes its socket on
	// pagehide: Chromium would keep it open in the back/forward cache). The test
	// waits for that before opening the next page because the server's fan-out
	// shares encoded events between subscriptions of one selection by seq alone,
	// whatever their pool: a subscription to default that outlived the navigation
	// would hand this page default's seq 1 and 2 for fresh's (and the page drops
	// events of another pool).
	b.do("leave the dashboard", chromedp.Navigate("about:blank"))
	for deadline := time.Now().Add(5 * time.Second); server.subscribers(t) != 0; time.Sleep(50 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("%d subscriptions 5 s after leaving the dashboard, want 0", server.subscribers(t))
		}
	}
	b.do("open the dashboard of pool fresh", chromedp.Navigate(server.URL+"/dashboard?pool=fresh"), chromedp.WaitVisible(chromedp.ID("chart")))
	live()
	waitCounts("pool fresh, not made yet", 0, 0, 0, 0)
	waitJSON("the selector", `[document.getElementById('pool').value, ...`+jsPoolOptions+`]`, []string{"fresh", "alpha", "beta", "default", "fresh"})
	waitJSON("the pools table", jsPoolRows, []string{"alpha 4 3 1 0 0 0", "beta 4 3 1 0 0 0", "default 1 0 1 0 0 0"})
	start := time.Now()
	server.generateKeysIn(t, "fresh", 2)
	waitJSON("the pools table", jsPoolRows, []string{"alpha 4 3 1 0 0 0", "beta 4 3 1 0 0 0", "default 1 0 1 0 0 0", "*fresh 2 2 0 0 0 0"})
	if d := time.Since(start); d > 8*time.Second {
		t.Errorf("the new pool took %v to show in the table", d)
	}
	waitCounts("pool fresh after generateKeys(2)", 2, 2, 0, 0)
	waitJSON("the feed", `[...document.querySelectorAll('#feed .type')].map(e => e.textContent)`, []string{"GENERATED", "GENERATED"})

	// A ?pool= that no pool can be named means the default pool.
	b.do("open the dashboard with a bad pool name", chromedp.Navigate(server.URL+"/dashboard?pool=%3Cb%3E"), chromedp.WaitVisible(chromedp.ID("chart")))
	live()
	waitJSON("the selector", `document.getElementById('pool').value`, "default")
	waitCounts("pool default", 1, 0, 1, 0)

	b.screenshots("dashboard-pools")
}
