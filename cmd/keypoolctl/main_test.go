package main

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"os/signal"
	"runtime"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/jonboulle/clockwork"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"go.uber.org/goleak"

	"github.com/keypool/keypool/client"
	"github.com/keypool/keypool/graph"
	"github.com/keypool/keypool/internal/buildinfo"
	"github.com/keypool/keypool/internal/cutproxy"
	"github.com/keypool/keypool/keystore"
)

// asKeypoolctl, in the environment, makes the test binary run as keypoolctl: the
// tests run the real command, signals, exit status and all.
const asKeypoolctl = "KEYPOOLCTL_TEST_AS_MAIN"

// asPrompt, in the environment, makes the test binary run as prompt.
const asPrompt = "KEYPOOLCTL_TEST_AS_PROMPT"

func TestMain(m *testing.M) {
	if os.Getenv(asPrompt) == "1" { // before asKeypoolctl, which keypoolctl passes on
		os.Exit(prompt())
	}
	if os.Getenv(asKeypoolctl) == "1" {
		os.Exit(run(os.Args[1:], os.Stdin, os.Stdout, os.Stderr, os.Getenv))
	}
	goleak.VerifyTestMain(m)
}

// prompt is a command for keypoolctl lease to run: an interactive one that says the
// name of each signal it takes (INT, QUIT, TERM, HUP), until it reads a line; then
// it prints the line and how many of each it took, and exits promptStatus. (A shell's
// trap would do, but a signal that comes just before the shell's read blocks is seen
// only after the next one: a test could not wait for each to be seen.)
func prompt() int {
	names := map[os.Signal]string{syscall.SIGINT: "INT", syscall.SIGQUIT: "QUIT", syscall.SIGTERM: "TERM", syscall.SIGHUP: "HUP"}
	signals := make(chan os.Signal, 100)
	for sig := range names {
		signal.Notify(signals, sig)
	}
	line := make(chan string)
	go func() {
		l, _ := bufio.NewReader(os.Stdin).ReadString('\n')
		line <- strings.TrimSpace(l)
	}()
	fmt.Println("ready")
	taken := map[string]int{}
	for {
		select {
		case s := <-signals:
			taken[names[s]]++
			fmt.Println(names[s])
		case l := <-line:
			fmt.Printf("line=%s INT=%d QUIT=%d TERM=%d HUP=%d\n", l, taken["INT"], taken["QUIT"], taken["TERM"], taken["HUP"])
			return promptStatus
		}
	}
}

// promptStatus is prompt's exit status.
const promptStatus = 42

// testServer is the real GraphQL endpoint on an in-memory pool on the real clock,
// reached directly (url) or through a proxy that the test can cut (proxyURL).
type testServer struct {
	store    *keystore.Pool
	url      string
	proxy    *cutproxy.Proxy
	proxyURL string
	graphql  atomic.Pointer[http.Handler] // the current server's, which restart replaces
	subs     subscribers
}

// subscribers counts the live event subscriptions of a server's pools.
type subscribers struct {
	keystore.NopObserver
	n atomic.Int64
}

func (s *subscribers) SubscribersChanged(delta int) { s.n.Add(int64(delta)) }

func newTestServer(t *testing.T) *testServer {
	t.Helper()
	ts := &testServer{}
	ts.start(t)
	mux := http.NewServeMux()
	mux.Handle("/graphql", http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		(*ts.graphql.Load()).ServeHTTP(w, r)
	}))
	srv := httptest.NewServer(mux)
	proxy, err := cutproxy.New(srv.Listener.Addr().String())
	require.NoError(t, err)
	t.Cleanup(func() {
		proxy.Close()
		srv.CloseClientConnections()
		srv.Close()
	})
	ts.url, ts.proxy, ts.proxyURL = srv.URL, proxy, "http://"+proxy.Addr()
	return ts
}

// start serves a new in-memory pool at the server's address.
func (ts *testServer) start(t *testing.T) {
	store, err := keystore.NewMemory(clockwork.NewRealClock(), keystore.Options{Observer: &ts.subs})
	require.NoError(t, err)
	t.Cleanup(func() { _ = store.Close() })
	h := graph.NewServer(store, graph.ServerOptions{Logger: slog.New(slog.DiscardHandler)})
	ts.store = store
	ts.graphql.Store(&h)
}

// restart stands for the in-memory server restarting: a new pool, its events
// starting again from seq 1, at the same address; the old one's streams end.
func (ts *testServer) restart(t *testing.T) {
	old := ts.store
	ts.start(t)
	require.NoError(t, old.Close())
}

func (ts *testServer) generate(t *testing.T, n int) []keystore.Key {
	t.Helper()
	keys, err := ts.store.Generate(context.Background(), "", n)
	require.NoError(t, err)
	return keys
}

func (ts *testServer) key(t *testing.T, id string) keystore.Key {
	t.Helper()
	key, err := ts.store.Get(context.Background(), id)
	require.NoError(t, err)
	return key
}

// keypoolctl returns the command keypoolctl args, talking to server.
func keypoolctl(server string, args ...string) *exec.Cmd {
	cmd := exec.Command(os.Args[0], args...)
	cmd.Env = append(os.Environ(), asKeypoolctl+"=1", "KEYPOOL_SERVER="+server)
	return cmd
}

type result struct {
	stdout, stderr string
	code           int
}

// ctl runs keypoolctl to its end.
func ctl(t *testing.T, server string, args ...string) result {
	t.Helper()
	cmd := keypoolctl(server, args...)
	var stdout, stderr strings.Builder
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	err := cmd.Run()
	var exitErr *exec.ExitError
	if err != nil && !asExitError(err, &exitErr) {
		t.Fatalf("keypoolctl %v: %v", args, err)
	}
	return result{stdout.String(), stderr.String(), cmd.ProcessState.ExitCode()}
}

// ctlIn runs keypoolctl's run in the test's process: quicker, for the commands
// that neither run a command nor wait for signals.
func ctlIn(t *testing.T, server string, args ...string) result {
	t.Helper()
	var stdout, stderr strings.Builder
	getenv := func(name string) string {
		if name == "KEYPOOL_SERVER" {
			return server
		}
		return ""
	}
	code := run(args, strings.NewReader(""), &stdout, &stderr, getenv)
	return result{stdout.String(), stderr.String(), code}
}

func asExitError(err error, target **exec.ExitError) bool {
	e, ok := err.(*exec.ExitError)
	if ok {
		*target = e
	}
	return ok
}

// decode reads r's stdout as one JSON value into v, after checking it succeeded.
func (r result) decode(t *testing.T, v any) {
	t.Helper()
	require.Equal(t, 0, r.code, "stderr: %s", r.stderr)
	require.Empty(t, r.stderr)
	require.Equal(t, 1, strings.Count(r.stdout, "\n"), "one line of JSON: %q", r.stdout)
	require.NoError(t, json.Unmarshal([]byte(r.stdout), v), r.stdout)
}

// failed checks that r failed with one line on stderr naming code.
func (r result) failed(t *testing.T, status int, code string) {
	t.Helper()
	assert.Equal(t, status, r.code, "stderr: %s", r.stderr)
	assert.Empty(t, r.stdout)
	assert.Equal(t, 1, strings.Count(r.stderr, "\n"), "one line: %q", r.stderr)
	assert.Contains(t, r.stderr, code)
}

func TestCommands(t *testing.T) {
	ts := newTestServer(t)
	// One run as its own process: the environment, stdout, the exit status.
	var stats client.Stats
	ctl(t, ts.url, "stats").decode(t, &stats)
	ctl(t, ts.url, "get", "nope").failed(t, exitError, "NOT_FOUND")
	// One key id in 64 starts with "-": an argument, not an unknown flag.
	ctl(t, ts.url, "get", "-WORxEWyFKXiBwY6AUU2Ew").failed(t, exitError, "NOT_FOUND")
	ctl(t, ts.url, "unblock", "-WORxEWyFKXiBwY6AUU2Ew", "-token", "t").failed(t, exitError, "NOT_FOUND")
	// Also after the flags ("unblock -token T ID", which the test below uses with
	// whatever id it leased: a flaky failure once in 64 runs before).
	ctl(t, ts.url, "unblock", "-token", "t", "-WORxEWyFKXiBwY6AUU2Ew").failed(t, exitError, "NOT_FOUND")
	ctl(t, ts.url, "renew", "-token", "t", "-ttl", "1m", "-WORxEWyFKXiBwY6AUU2Ew").failed(t, exitError, "NOT_FOUND")
	assert.Equal(t, exitUsage, ctl(t, ts.url, "unblock", "-token").code, "a flag without its value")

	var keys []client.Key
	ctlIn(t, ts.url, "generate", "2").decode(t, &keys)
	require.Len(t, keys, 2)
	assert.Equal(t, client.Available, keys[0].Status)

	var lease client.LeaseInfo
	ctlIn(t, ts.url, "acquire", "-ttl", "5s").decode(t, &lease)
	require.NotNil(t, lease.Key)
	id := lease.Key.ID
	assert.Equal(t, 5*time.Second, lease.ExpiresAt.Sub(lease.AcquiredAt))
	assert.Equal(t, lease.Token, ts.key(t, id).Lease.Token)

	var key client.Key
	ctlIn(t, ts.url, "get", id).decode(t, &key)
	assert.Equal(t, client.Blocked, key.Status)
	assert.Equal(t, lease.Fence, key.Lease.Fence)

	var renewed client.LeaseInfo
	ctlIn(t, ts.url, "renew", id, "-token", lease.Token, "-ttl", "1m").decode(t, &renewed)
	assert.InDelta(t, time.Minute, renewed.ExpiresAt.Sub(lease.AcquiredAt), float64(10*time.Second))

	ctlIn(t, ts.url, "unblock", id, "-token", "not-the-token").failed(t, exitError, "LEASE_MISMATCH")
	ctlIn(t, ts.url, "unblock", "-token", lease.Token, id).decode(t, &key) // flags before or after
	assert.Equal(t, client.Available, key.Status)
	ctlIn(t, ts.url, "unblock", id).failed(t, exitError, "NOT_BLOCKED")

	ctlIn(t, ts.url, "keepalive", id).decode(t, &key)
	assert.Equal(t, id, key.ID)

	ctlIn(t, ts.url, "stats").decode(t, &stats)
	assert.Equal(t, client.Stats{Total: 2, Available: 2}, stats)

	var deleted struct{ ID string }
	ctlIn(t, ts.url, "delete", id).decode(t, &deleted)
	assert.Equal(t, id, deleted.ID)
	ctlIn(t, ts.url, "get", id).failed(t, exitError, "NOT_FOUND")
	ctlIn(t, ts.url, "delete", id).failed(t, exitError, "NOT_FOUND")
	ctlIn(t, ts.url, "generate", "0").failed(t, exitError, "BAD_USER_INPUT")

	ctlIn(t, ts.url, "acquire").decode(t, &lease)
	ctlIn(t, ts.url, "acquire").failed(t, exitError, "NOT_FOUND") // the only key is held

	// -server beats KEYPOOL_SERVER, before or after the command.
	dead := "http://127.0.0.1:1"
	ctlIn(t, dead, "-server", ts.url, "stats").decode(t, &stats)
	ctlIn(t, dead, "stats", "-server", ts.url).decode(t, &stats)
	ctlIn(t, dead, "stats").failed(t, exitError, "cannot reach")
}

// TestPools: -pool on generate, acquire, stats and events; -holder; pools; keys as
// JSON lines across pages.
func TestPools(t *testing.T) {
	ts := newTestServer(t)
	var keys []client.Key
	ctlIn(t, ts.url, "generate", "3", "-pool", "openai").decode(t, &keys)
	require.Len(t, keys, 3)
	assert.Equal(t, "openai", keys[0].Pool)
	ctlIn(t, ts.url, "generate", "1").decode(t, &keys)
	ctlIn(t, ts.url, "generate", "1", "-pool", "no spaces").failed(t, exitError, "BAD_USER_INPUT")

	var lease client.LeaseInfo
	ctlIn(t, ts.url, "acquire", "-pool", "openai", "-holder", "nightly build").decode(t, &lease)
	assert.Equal(t, "openai", lease.Key.Pool)
	assert.Equal(t, "nightly build", lease.Holder)
	assert.Equal(t, "nightly build", ts.key(t, lease.Key.ID).Lease.Holder)
	ctlIn(t, ts.url, "acquire", "-pool", "empty").failed(t, exitError, "NOT_FOUND")

	var stats client.Stats
	ctlIn(t, ts.url, "stats", "-pool", "openai").decode(t, &stats)
	assert.Equal(t, client.Stats{Total: 3, Available: 2, Blocked: 1}, stats)
	ctlIn(t, ts.url, "stats").decode(t, &stats)
	assert.Equal(t, 4, stats.Total)
	var pools []client.Pool
	ctlIn(t, ts.url, "pools").decode(t, &pools)
	require.Len(t, pools, 2)
	assert.Equal(t, "openai", pools[1].Name)

	ts.generate(t, 1500) // the default pool's: more than a page
	r := ctlIn(t, ts.url, "keys")
	require.Equal(t, 0, r.code, r.stderr)
	seen := map[string]bool{}
	for line := range strings.Lines(r.stdout) {
		var k client.Key
		require.NoError(t, json.Unmarshal([]byte(line), &k), line)
		assert.False(t, seen[k.ID], "key %s twice", k.ID)
		seen[k.ID] = true
	}
	assert.Len(t, seen, 1504)
	r = ctlIn(t, ts.url, "keys", "-pool", "openai", "-status", "blocked")
	require.Equal(t, 0, r.code, r.stderr)
	var blocked client.Key
	require.NoError(t, json.Unmarshal([]byte(r.stdout), &blocked))
	assert.Equal(t, lease.Key.ID, blocked.ID)
	ctlIn(t, ts.url, "keys", "-status", "gone").failed(t, exitError, "GONE")

	ev := start(t, ts.url, "events", "-pool", "openai", "-after", "0")
	var first client.Event
	line := ev.line(t, ev.stdout)
	require.NoError(t, json.Unmarshal([]byte(line), &first), line)
	assert.Equal(t, "openai", first.Pool)
	assert.Equal(t, int64(1), first.Seq)
	require.NoError(t, ev.cmd.Process.Signal(syscall.SIGINT))
	assert.Equal(t, 0, ev.wait(t))
}

func TestUsage(t *testing.T) {
	ts := newTestServer(t)
	for name := range commands {
		r := ctlIn(t, ts.url, name, "-h")
		assert.Equal(t, 0, r.code, name)
		assert.Contains(t, r.stdout, "usage: keypoolctl [global flags] "+name, name)
		assert.Contains(t, r.stdout, "-server", name)
	}
	r := ctlIn(t, ts.url, "-h")
	assert.Equal(t, 0, r.code)
	for name := range commands {
		assert.Contains(t, r.stdout, name)
	}
	for _, args := range [][]string{
		{},
		{"frobnicate"},
		{"generate"},
		{"generate", "many"},
		{"get"},
		{"get", "a", "b"},
		{"renew", "ID"},
		{"renew", "ID", "-token", "T", "-ttl", "0s"},
		{"acquire", "-ttl", "0s"},
		{"acquire", "-wait", "-1s"},
		{"acquire", "-ttl", "soon"},
		{"events", "-types", "EXPLODED"},
		{"lease"},
		{"lease", "-ttl", "0s", "--", "true"},
	} {
		r := ctlIn(t, ts.url, args...)
		assert.Equal(t, exitUsage, r.code, "%v: %s", args, r.stderr)
		assert.NotEmpty(t, r.stderr, "%v", args)
	}
}

// TestVersion: keypoolctl -version prints one line (the module's version, the VCS
// revision and time when the build recorded them, the Go version) and exits 0, without
// reaching for a server.
func TestVersion(t *testing.T) {
	want := "keypoolctl " + buildinfo.Read().String() + "\n"
	r := ctl(t, "http://127.0.0.1:1", "-version") // its own process: the exit status
	assert.Equal(t, result{stdout: want, code: exitOK}, r)
	assert.Regexp(t, `^keypoolctl (\(devel\)|v\S+)( \(revision [0-9a-f]+(-modified)?(, \S+)?\))? go\S+\n$`, r.stdout)
	assert.Contains(t, r.stdout, " "+runtime.Version()+"\n")
	r = ctlIn(t, "http://127.0.0.1:1", "-server", "http://127.0.0.1:1", "--version")
	assert.Equal(t, result{stdout: want, code: exitOK}, r)
	r = ctlIn(t, "http://127.0.0.1:1", "-h")
	assert.Contains(t, r.stdout, "-version")
}

// running is keypoolctl started with its stdin, stdout and stderr in the test's
// hands, stdout and stderr read line by line.
type running struct {
	cmd    *exec.Cmd
	stdin  io.WriteCloser
	stdout chan string
	stderr chan string
	done   chan struct{}
	// what was left on stdout and stderr when it exited
	restOut, restErr string
}

func start(t *testing.T, server string, args ...string) *running {
	t.Helper()
	cmd := keypoolctl(server, args...)
	stdin, err := cmd.StdinPipe()
	require.NoError(t, err)
	stdout, err := cmd.StdoutPipe()
	require.NoError(t, err)
	stderr, err := cmd.StderrPipe()
	require.NoError(t, err)
	// A group of its own, so that the cleanup also kills the command keypoolctl runs,
	// which would otherwise keep the output pipes open after keypoolctl is gone.
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	require.NoError(t, cmd.Start())
	r := &running{cmd: cmd, stdin: stdin, stdout: lines(stdout), stderr: lines(stderr), done: make(chan struct{})}
	t.Cleanup(func() {
		_ = syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL)
		r.wait(t)
	})
	return r
}

func lines(r io.Reader) chan string {
	ch := make(chan string, 100)
	go func() {
		defer close(ch)
		s := bufio.NewScanner(r)
		for s.Scan() {
			ch <- s.Text()
		}
	}()
	return ch
}

const lineTimeout = 10 * time.Second

func (r *running) line(t *testing.T, from chan string) string {
	t.Helper()
	select {
	case l, ok := <-from:
		require.True(t, ok, "the output ended")
		return l
	case <-time.After(lineTimeout):
		t.Fatal("no line")
		return ""
	}
}

// wait waits for the process to exit (its output read to the end first) and
// returns its status.
func (r *running) wait(t *testing.T) int {
	t.Helper()
	select {
	case <-r.done:
		return r.cmd.ProcessState.ExitCode()
	default:
	}
	r.restOut = drain(r.stdout)
	r.restErr = drain(r.stderr)
	exited := make(chan struct{})
	go func() {
		_ = r.cmd.Wait()
		close(exited)
	}()
	select {
	case <-exited:
	case <-time.After(lineTimeout):
		t.Fatal("keypoolctl did not exit")
	}
	close(r.done)
	return r.cmd.ProcessState.ExitCode()
}

// drain reads what is left of an output, until it ends or for lineTimeout at most.
func drain(from chan string) string {
	var out []string
	timeout := time.After(lineTimeout)
	for {
		select {
		case l, ok := <-from:
			if !ok {
				return strings.Join(out, "\n")
			}
			out = append(out, l)
		case <-timeout:
			return strings.Join(append(out, "(output still open)"), "\n")
		}
	}
}

// TestLeaseDoneWhen: lease runs its command with the key in KEYPOOL_KEY, and leaves
// the key free when the command is done.
func TestLeaseDoneWhen(t *testing.T) {
	ts := newTestServer(t)
	keys := ts.generate(t, 1)
	r := ctl(t, ts.url, "lease", "--", "sh", "-c", "echo $KEYPOOL_KEY")
	require.Equal(t, 0, r.code, r.stderr)
	assert.Equal(t, keys[0].ID+"\n", r.stdout)
	key := ts.key(t, keys[0].ID)
	assert.Equal(t, keystore.Available, key.Status, "free right after")
	assert.Equal(t, int64(1), key.History.TimesAcquired)
	assert.Zero(t, key.History.LeasesExpired, "unblocked, not run out")
}

// TestLeaseAcrossTTLs holds a 2s lease for over three of its lengths while the
// command runs, then passes its exit status through and frees the key at once.
// (2s rather than the shortest, 1s: a renewal then has 667ms to get through on a
// loaded machine.)
func TestLeaseAcrossTTLs(t *testing.T) {
	ts := newTestServer(t)
	ts.generate(t, 3)
	r := start(t, ts.url, "lease", "-ttl", "2s", "--", "sh", "-c",
		`echo "$KEYPOOL_KEY $KEYPOOL_LEASE_TOKEN $KEYPOOL_LEASE_FENCE"; read line; exit 7`)
	fields := strings.Fields(r.line(t, r.stdout))
	require.Len(t, fields, 3)
	id, token, fence := fields[0], fields[1], fields[2]

	key := ts.key(t, id)
	require.Equal(t, keystore.Blocked, key.Status)
	require.Equal(t, token, key.Lease.Token)
	assert.Equal(t, fence, jsonNumber(key.Lease.Fence))
	firstExpiry := key.Lease.ExpiresAt

	// Three and a quarter lengths of the lease, on the real clock: without
	// renewals the server would release the key after the first.
	until := time.Now().Add(6500 * time.Millisecond)
	for time.Now().Before(until) {
		key := ts.key(t, id)
		require.Equal(t, keystore.Blocked, key.Status, "held while the command runs")
		require.Equal(t, token, key.Lease.Token, "under the same lease")
		time.Sleep(50 * time.Millisecond)
	}
	assert.True(t, ts.key(t, id).Lease.ExpiresAt.After(firstExpiry.Add(4*time.Second)), "renewed")

	_, err := io.WriteString(r.stdin, "done\n")
	require.NoError(t, err)
	assert.Equal(t, 7, r.wait(t), "the command's status: %s", r.restErr)
	key = ts.key(t, id)
	assert.Equal(t, keystore.Available, key.Status, "free as soon as the command exited")
	assert.Zero(t, key.History.LeasesExpired)
}

func jsonNumber(n int64) string {
	b, _ := json.Marshal(n)
	return string(b)
}

// TestLeaseLost deletes the key from another client while the command runs:
// keypoolctl stops the command and exits 3, saying why.
func TestLeaseLost(t *testing.T) {
	ts := newTestServer(t)
	ts.generate(t, 1)
	r := start(t, ts.url, "lease", "-ttl", "1s", "-grace", "5s", "--", "sh", "-c",
		`trap 'echo stopped; exit 0' TERM; echo "$KEYPOOL_KEY"; while :; do sleep 0.05; done`)
	id := r.line(t, r.stdout)

	other, err := client.New(ts.url)
	require.NoError(t, err)
	defer other.Close()
	require.NoError(t, other.DeleteKey(context.Background(), id))

	assert.Equal(t, "stopped", r.line(t, r.stdout), "the command got SIGTERM")
	assert.Equal(t, exitLeaseLost, r.wait(t))
	stderr := r.restErr
	assert.Contains(t, stderr, "lease lost")
	// Told by the key's events (DELETED), or by the renewal (NOT_FOUND), whichever
	// comes first.
	assert.Regexp(t, "DELETED|NOT_FOUND", stderr)
}

// TestLeaseTakenAwayIsToldAtOnce: a third party unblocks the key 30 s before the
// lease's first renewal is due; the command is told (SIGTERM) within a second or
// two, from the key's events, not at that renewal.
func TestLeaseTakenAwayIsToldAtOnce(t *testing.T) {
	ts := newTestServer(t)
	ts.generate(t, 1)
	r := start(t, ts.url, "lease", "-ttl", "45s", "--", "sh", "-c",
		`trap 'echo stopped; exit 0' TERM; echo "$KEYPOOL_KEY"; while :; do sleep 0.05; done`)
	id := r.line(t, r.stdout)
	require.Eventually(t, func() bool { return ts.subs.n.Load() == 1 }, 10*time.Second, time.Millisecond,
		"the lease follows its key's events")
	other, err := client.New(ts.url)
	require.NoError(t, err)
	defer other.Close()
	taken := time.Now()
	_, err = other.UnblockKey(context.Background(), id, "")
	require.NoError(t, err)
	assert.Equal(t, "stopped", r.line(t, r.stdout), "the command got SIGTERM")
	told := time.Since(taken)
	t.Logf("told %v after the key was taken", told)
	assert.Less(t, told, 2*time.Second)
	assert.Equal(t, exitLeaseLost, r.wait(t))
	assert.Contains(t, r.restErr, "UNBLOCKED")
}

// TestLeaseCommandDiesWithKeypoolctl: killed with SIGKILL, keypoolctl cannot stop its
// command itself; on Linux the kernel then sends the command SIGTERM, so that it does
// not run on after its lease.
func TestLeaseCommandDiesWithKeypoolctl(t *testing.T) {
	if runtime.GOOS != "linux" {
		t.Skip("a parent-death signal is Linux's")
	}
	ts := newTestServer(t)
	ts.generate(t, 1)
	r := start(t, ts.url, "lease", "--", "sh", "-c",
		`trap 'echo stopped; exit 0' TERM; echo "$KEYPOOL_KEY"; while :; do sleep 0.05; done`)
	r.line(t, r.stdout)                      // the trap is set
	require.NoError(t, r.cmd.Process.Kill()) // keypoolctl alone, not its group
	assert.Equal(t, "stopped", r.line(t, r.stdout), "the command got SIGTERM when keypoolctl died")
}

// TestLeaseForwardsSignals: SIGINT, SIGTERM and SIGHUP sent to keypoolctl alone (not
// on a terminal, which would have sent SIGINT to the command itself) go to the command
// once, which decides what to do: keypoolctl lives on through them, then exits as the
// command did and frees the key.
func TestLeaseForwardsSignals(t *testing.T) {
	for _, tc := range []struct {
		sig  syscall.Signal
		name string // as prompt names it
	}{{syscall.SIGINT, "INT"}, {syscall.SIGTERM, "TERM"}, {syscall.SIGHUP, "HUP"}} {
		t.Run(tc.name, func(t *testing.T) {
			ts := newTestServer(t)
			keys := ts.generate(t, 1)
			r := start(t, ts.url, "lease", "--", "env", asPrompt+"=1", os.Args[0])
			require.Equal(t, "ready", r.line(t, r.stdout))
			require.NoError(t, r.cmd.Process.Signal(tc.sig))
			require.Equal(t, tc.name, r.line(t, r.stdout))
			_, err := io.WriteString(r.stdin, "done\n")
			require.NoError(t, err)
			want := map[string]string{
				"INT":  "line=done INT=1 QUIT=0 TERM=0 HUP=0",
				"TERM": "line=done INT=0 QUIT=0 TERM=1 HUP=0",
				"HUP":  "line=done INT=0 QUIT=0 TERM=0 HUP=1",
			}[tc.name]
			assert.Equal(t, want, r.line(t, r.stdout), "once")
			assert.Equal(t, promptStatus, r.wait(t), "stderr: %s", r.restErr)
			assert.Equal(t, keystore.Available, ts.key(t, keys[0].ID).Status)
		})
	}
	// A command that does not handle the signal dies of it; keypoolctl says so as a
	// shell would.
	t.Run("ended by it", func(t *testing.T) {
		ts := newTestServer(t)
		keys := ts.generate(t, 1)
		r := start(t, ts.url, "lease", "--", "sh", "-c", `echo ready; exec sleep 30`)
		require.Equal(t, "ready", r.line(t, r.stdout))
		require.NoError(t, r.cmd.Process.Signal(syscall.SIGTERM))
		assert.Equal(t, 128+int(syscall.SIGTERM), r.wait(t), "stderr: %s", r.restErr)
		assert.Equal(t, keystore.Available, ts.key(t, keys[0].ID).Status)
	})
}

// TestLeaseHangup: SIGHUP (the terminal closed, or a supervisor's "reload") is handled
// as SIGTERM is: the command gets it, and the key is freed when the command ends.
func TestLeaseHangup(t *testing.T) {
	ts := newTestServer(t)
	keys := ts.generate(t, 1)
	r := start(t, ts.url, "lease", "--", "sh", "-c",
		`trap 'exit 5' HUP; echo ready; while :; do sleep 0.05; done`)
	require.Equal(t, "ready", r.line(t, r.stdout))
	require.NoError(t, r.cmd.Process.Signal(syscall.SIGHUP))
	assert.Equal(t, 5, r.wait(t), "the command's status; stderr: %s", r.restErr)
	assert.Equal(t, keystore.Available, ts.key(t, keys[0].ID).Status, "freed")
}

// TestLeaseServerGone: when the server cannot be reached after the command ends,
// keypoolctl does not retry the unblock until the lease runs out (an hour here): it
// gives up after releaseTimeout, says the lease will run out by itself, and exits with
// the command's status. The server is gone either as a stopped one is (connections
// refused) or as a hung one is (connections accepted, never answered).
func TestLeaseServerGone(t *testing.T) {
	for _, hung := range []bool{false, true} {
		t.Run(map[bool]string{false: "refused", true: "hung"}[hung], func(t *testing.T) {
			ts := newTestServer(t)
			keys := ts.generate(t, 1)
			r := start(t, ts.proxyURL, "lease", "-ttl", "1h", "--", "sh", "-c",
				`echo ready; read line; exit 7`)
			require.Equal(t, "ready", r.line(t, r.stdout))
			ts.proxy.Close()
			if hung {
				hangOn(t, ts.proxy.Addr())
			}
			_, err := io.WriteString(r.stdin, "done\n")
			require.NoError(t, err)
			ended := time.Now()
			status := r.wait(t)
			took := time.Since(ended)
			assert.Equal(t, 7, status, "the command's status; stderr: %s", r.restErr)
			assert.Less(t, took, releaseTimeout+5*time.Second, "bounded by releaseTimeout")
			assert.Contains(t, r.restErr, "will run out by itself")
			assert.Equal(t, keystore.Blocked, ts.key(t, keys[0].ID).Status, "left to run out")
		})
	}
}

// hangOn listens on addr, which must be free, and accepts connections that it never
// answers, until the test ends.
func hangOn(t *testing.T, addr string) {
	t.Helper()
	ln, err := net.Listen("tcp", addr)
	require.NoError(t, err)
	accepted := make(chan net.Conn, 16)
	done := make(chan struct{})
	go func() {
		defer close(done)
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			select {
			case accepted <- c:
			default:
				_ = c.Close()
			}
		}
	}()
	t.Cleanup(func() {
		_ = ln.Close()
		<-done
		close(accepted)
		for c := range accepted {
			_ = c.Close()
		}
	})
}

func TestLeaseCommandFails(t *testing.T) {
	ts := newTestServer(t)
	keys := ts.generate(t, 1)
	r := ctl(t, ts.url, "lease", "--", "no-such-command-anywhere")
	assert.Equal(t, 127, r.code, r.stderr)
	assert.Equal(t, keystore.Available, ts.key(t, keys[0].ID).Status, "freed")

	r = ctl(t, ts.url, "lease", "--", "sh", "-c", "kill -KILL $$")
	assert.Equal(t, 128+int(syscall.SIGKILL), r.code, r.stderr)
	assert.Equal(t, keystore.Available, ts.key(t, keys[0].ID).Status, "freed")

	_, err := ts.store.Acquire(context.Background(), keystore.AcquireOptions{})
	require.NoError(t, err)
	ctl(t, ts.url, "lease", "--", "true").failed(t, exitError, "NOT_FOUND")
}

// TestEvents follows the pool's events through a connection that the test cuts:
// keypoolctl resumes after the last seq it printed.
func TestEvents(t *testing.T) {
	ts := newTestServer(t)
	r := start(t, ts.proxyURL, "events", "-after", "0")
	ts.generate(t, 2)
	seqs := func(n int) []int64 {
		var got []int64
		for range n {
			var ev client.Event
			line := r.line(t, r.stdout)
			require.NoError(t, json.Unmarshal([]byte(line), &ev), line)
			assert.Equal(t, client.Generated, ev.Type)
			got = append(got, ev.Seq)
		}
		return got
	}
	assert.Equal(t, []int64{1, 2}, seqs(2))

	ts.proxy.Cut()
	assert.Contains(t, r.line(t, r.stderr), "resuming after seq 2")
	ts.generate(t, 2) // most likely while disconnected: the reconnection waits 100ms
	assert.Equal(t, []int64{3, 4}, seqs(2), "no gap, no repeat")

	require.NoError(t, r.cmd.Process.Signal(syscall.SIGINT))
	assert.Equal(t, 0, r.wait(t), "an interrupt is the normal end")
}

// TestEventsAcrossRestart: keypoolctl events prints every event of both servers when
// the in-memory server restarts between them (its seqs start again at 1), and says
// so once on stderr.
func TestEventsAcrossRestart(t *testing.T) {
	ts := newTestServer(t)
	r := start(t, ts.url, "events", "-after", "0")
	ts.generate(t, 5)
	var streams []string
	read := func(n int) []int64 {
		var got []int64
		for range n {
			var ev client.Event
			require.NoError(t, json.Unmarshal([]byte(r.line(t, r.stdout)), &ev))
			got = append(got, ev.Seq)
			if len(streams) == 0 || streams[len(streams)-1] != ev.Stream {
				streams = append(streams, ev.Stream)
			}
		}
		return got
	}
	assert.Equal(t, []int64{1, 2, 3, 4, 5}, read(5))
	ts.restart(t)
	ts.generate(t, 3)
	assert.Equal(t, []int64{1, 2, 3}, read(3), "every event of the new server")
	require.Len(t, streams, 2)
	said := r.line(t, r.stderr) // the lost connection first
	if !strings.Contains(said, "started again") {
		said = r.line(t, r.stderr)
	}
	assert.Contains(t, said, "started again")
	require.NoError(t, r.cmd.Process.Signal(syscall.SIGINT))
	assert.Equal(t, 0, r.wait(t))
}

func TestEventsTypes(t *testing.T) {
	ts := newTestServer(t)
	keys := ts.generate(t, 2)
	require.NoError(t, ts.store.Delete(context.Background(), keys[1].ID))
	r := start(t, ts.url, "events", "-after", "0", "-types", "deleted,EXPIRED")
	var ev client.Event
	require.NoError(t, json.Unmarshal([]byte(r.line(t, r.stdout)), &ev))
	assert.Equal(t, client.Event{Seq: 3, Seq64: "3", Stream: ev.Stream, Pool: "default", Type: client.Deleted, KeyID: keys[1].ID, At: ev.At}, ev)
	require.NoError(t, r.cmd.Process.Signal(syscall.SIGTERM))
	assert.Equal(t, 0, r.wait(t))
}

// TestImportedKeys: import reads secrets from standard input (never the arguments) and
// prints the keys without them; lease hands the command the secret in KEYPOOL_KEY and
// the id in KEYPOOL_KEY_ID; with -cooldown-on, the status the command names releases
// the key into COOLING; unblock -cooldown -failed and restore work on the key.
func TestImportedKeys(t *testing.T) {
	ts := newTestServer(t)
	const secret = "sk-live-ctl-0123456789"
	cmd := keypoolctl(ts.url, "import", "-pool", "vendor")
	cmd.Stdin = strings.NewReader(secret + "\r\n\n")
	var stdout, stderr strings.Builder
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	require.NoError(t, cmd.Run(), stderr.String())
	assert.NotContains(t, stdout.String(), secret, "the printed keys show no secret")
	var keys []client.Key
	require.NoError(t, json.Unmarshal([]byte(stdout.String()), &keys))
	require.Len(t, keys, 1)
	id := keys[0].ID
	r := ctl(t, ts.url, "import")
	assert.Equal(t, exitUsage, r.code)
	assert.Contains(t, r.stderr, "no secrets on standard input")

	r = ctl(t, ts.url, "lease", "-pool", "vendor", "-cooldown-on", "75", "-cooldown", "1h", "--", "sh", "-c", `echo "$KEYPOOL_KEY $KEYPOOL_KEY_ID"; exit 75`)
	require.Equal(t, 75, r.code, r.stderr)
	assert.Equal(t, secret+" "+id+"\n", r.stdout)
	key := ts.key(t, id)
	assert.Equal(t, keystore.Cooling, key.Status, "status 75 released it into COOLING")

	var got client.Key
	ctlIn(t, ts.url, "restore", id).decode(t, &got)
	assert.Equal(t, client.Available, got.Status)
	ctlIn(t, ts.url, "restore", id).failed(t, exitError, "NOT_HELD_BACK")

	r = ctl(t, ts.url, "lease", "-pool", "vendor", "-cooldown-on", "75", "--", "true")
	require.Equal(t, 0, r.code, r.stderr)
	assert.Equal(t, keystore.Available, ts.key(t, id).Status, "another status frees it")

	lease, err := ts.store.Acquire(context.Background(), keystore.AcquireOptions{Pool: "vendor"})
	require.NoError(t, err)
	ctlIn(t, ts.url, "unblock", id, "-token", lease.Lease.Token, "-cooldown", "30s", "-failed").decode(t, &got)
	assert.Equal(t, client.Cooling, got.Status)
	assert.Equal(t, 1, got.History.Failures)
	r = ctlIn(t, ts.url, "unblock", id, "-cooldown", "0s")
	assert.Equal(t, exitUsage, r.code)
	assert.Contains(t, r.stderr, "-cooldown must be positive")
}
