// Command keypool-fanout measures keyEvents fan-out under load, with every party in a
// process of its own: the real server (built from the working directory), the
// subscribers (coder/websocket clients, this program re-executed, niced by default:
// they stand for clients on other machines), and the load generator (this program).
//
//	go run ./cmd/keypool-fanout                      # both parts, 1,000 subscribers
//	go run ./cmd/keypool-fanout -parts requests      # requests only
//	go run ./cmd/keypool-fanout -parts broadcast     # the comparison with a raw broadcast only
//
// requests: one client calls generateKeys(count: 20) back to back for -duration
// while another queries stats every 20 ms, first with no subscriber, then with
// -subscribers following keyEvents(types: [GENERATED]) (each resumes with after
// when cut, as the error says). It prints the requests' rate and latency, what the
// subscribers received (every event in order, or cut with SLOW_CONSUMER), and the
// server's fan-out metrics.
//
// broadcast: events offered at each of -rates for -rate-duration to -subscribers
// following keyEvents { seq type keyId at }, from keypool (generateKeys
// every 10 ms) and from a raw broadcast of the same bytes (raw.go), each on a fresh
// server and fresh subscribers; it prints what was delivered and whether every
// subscriber kept up, and the ratios of keypool to the raw broadcast.
//
// Every connection goes to 127.0.0.1; every loop is bounded by the durations.
package main

import (
	"bufio"
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/keypool/keypool/internal/harness"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt)
	defer stop()
	if err := run(ctx, os.Args[1:], os.Stdout); err != nil {
		fmt.Fprintln(os.Stderr, "keypool-fanout:", err)
		os.Exit(1)
	}
}

type config struct {
	parts        []string
	subscribers  int
	duration     time.Duration
	count        int
	rate         int // events/s the generator offers; 0: flat out
	statsEvery   time.Duration
	rates        []int
	rateDuration time.Duration
	nice         int
	serverBin    string
	serverArgs   string
	resubscribe  bool
}

func run(ctx context.Context, args []string, out io.Writer) error {
	var cfg config
	var parts, rates string
	var subscribeURL, subscribeQuery, rawAddr string
	fs := flag.NewFlagSet("keypool-fanout", flag.ContinueOnError)
	fs.StringVar(&parts, "parts", "requests,broadcast", "what to measure: requests (next to subscribers), broadcast (against a raw broadcast)")
	fs.IntVar(&cfg.subscribers, "subscribers", 1000, "websocket subscribers")
	fs.DurationVar(&cfg.duration, "duration", 10*time.Second, "requests: how long the generator runs flat out, per run")
	fs.IntVar(&cfg.count, "count", 20, "requests: keys per generateKeys call")
	fs.IntVar(&cfg.rate, "rate", 0, "requests: events a second the generator offers, paced (0: back to back, flat out)")
	fs.DurationVar(&cfg.statsEvery, "stats-every", 20*time.Millisecond, "requests: the stats query's period")
	fs.BoolVar(&cfg.resubscribe, "resubscribe", true, "requests: a subscriber cut with SLOW_CONSUMER resumes with after (else it stops)")
	fs.StringVar(&rates, "rates", "100,200,500,1000,2000,5000", "broadcast: offered events/s, in order")
	fs.DurationVar(&cfg.rateDuration, "rate-duration", 5*time.Second, "broadcast: how long each rate is offered")
	fs.IntVar(&cfg.nice, "nice", 10, "niceness of the subscriber process (0: none), so that it takes the cores the server and the load generator leave")
	fs.StringVar(&cfg.serverBin, "server", "", "a built keypool binary (default: go build the module at the working directory)")
	fs.StringVar(&cfg.serverArgs, "server-args", "", "extra flags for keypool, space-separated")
	fs.StringVar(&subscribeURL, "subscribe", "", "internal: be the subscriber process, on this websocket URL")
	fs.StringVar(&subscribeQuery, "query", "", "internal: the subscriber process's subscription")
	fs.StringVar(&rawAddr, "serve-raw", "", "internal: serve the raw broadcast on this address")
	if err := fs.Parse(args); err != nil {
		return err
	}
	switch {
	case subscribeURL != "":
		return runSubscribers(ctx, subscribeURL, cfg.subscribers, subscribeQuery, cfg.resubscribe)
	case rawAddr != "":
		return serveRaw(ctx, rawAddr)
	}
	cfg.parts = strings.Split(parts, ",")
	for _, r := range strings.Split(rates, ",") {
		n, err := strconv.Atoi(strings.TrimSpace(r))
		if err != nil || n < 100 {
			return fmt.Errorf("-rates: %q is not a rate of at least 100", r)
		}
		cfg.rates = append(cfg.rates, n)
	}
	dir, err := os.MkdirTemp("", "keypool-fanout")
	if err != nil {
		return err
	}
	defer os.RemoveAll(dir)
	if cfg.serverBin == "" {
		cfg.serverBin = filepath.Join(dir, "keypool")
		build := exec.CommandContext(ctx, "go", "build", "-o", cfg.serverBin, ".")
		build.Stdout, build.Stderr = os.Stderr, os.Stderr
		if err := build.Run(); err != nil {
			return fmt.Errorf("building keypool: %w", err)
		}
	}
	fmt.Fprintf(out, "keypool-fanout: %d subscribers, GOMAXPROCS %d, %d CPUs, subscribers at nice %d, %s\n",
		cfg.subscribers, runtime.GOMAXPROCS(0), runtime.NumCPU(), cfg.nice, time.Now().UTC().Format(time.RFC3339))
	for _, part := range cfg.parts {
		var err error
		switch part {
		case "requests":
			err = measureRequests(ctx, cfg, out)
		case "broadcast":
			err = measureBroadcast(ctx, cfg, out)
		default:
			err = fmt.Errorf("-parts: unknown part %q", part)
		}
		if err != nil {
			return err
		}
	}
	return nil
}

// server is a process serving websockets under test: keypool, or the raw broadcast.
type server struct {
	cmd  *exec.Cmd
	base string // http://127.0.0.1:PORT
}

func startKeypool(ctx context.Context, cfg config) (*server, error) {
	addr, err := harness.FreeAddr()
	if err != nil {
		return nil, err
	}
	args := append([]string{"-addr", addr, "-log-level", "warn"}, strings.Fields(cfg.serverArgs)...)
	return startServer(ctx, exec.CommandContext(ctx, cfg.serverBin, args...), addr)
}

func startRaw(ctx context.Context) (*server, error) {
	addr, err := harness.FreeAddr()
	if err != nil {
		return nil, err
	}
	self, err := os.Executable()
	if err != nil {
		return nil, err
	}
	return startServer(ctx, exec.CommandContext(ctx, self, "-serve-raw", addr), addr)
}

func startServer(ctx context.Context, cmd *exec.Cmd, addr string) (*server, error) {
	cmd.Stderr = os.Stderr
	if err := cmd.Start(); err != nil {
		return nil, err
	}
	s := &server{cmd: cmd, base: "http://" + addr}
	if err := harness.WaitUp(ctx, s.base+"/healthz"); err != nil {
		s.stop()
		return nil, err
	}
	return s, nil
}

func (s *server) stop() { harness.StopProcess(s.cmd, 10*time.Second) }

func (s *server) ws() string { return "ws" + strings.TrimPrefix(s.base, "http") + "/graphql" }

// startSubscribers starts the subscriber process and waits until it has subscribed.
func startSubscribers(ctx context.Context, cfg config, url, query string, resubscribe bool) (*subscriberProcess, error) {
	self, err := os.Executable()
	if err != nil {
		return nil, err
	}
	args := []string{self, "-subscribe", url, "-subscribers", strconv.Itoa(cfg.subscribers), "-query", query,
		"-resubscribe=" + strconv.FormatBool(resubscribe)}
	if cfg.nice != 0 {
		args = append([]string{"nice", "-n", strconv.Itoa(cfg.nice)}, args...)
	}
	cmd := exec.CommandContext(ctx, args[0], args[1:]...)
	cmd.Stderr = os.Stderr
	stdin, err := cmd.StdinPipe()
	if err != nil {
		return nil, err
	}
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		return nil, err
	}
	if err := cmd.Start(); err != nil {
		return nil, err
	}
	p := &subscriberProcess{stdin: stdin, stdout: bufio.NewReader(stdout), pid: cmd.Process.Pid, wait: func() { harness.StopProcess(cmd, 10*time.Second) }}
	line, err := p.stdout.ReadString('\n')
	if err != nil || strings.TrimSpace(line) != "ready" {
		p.stop()
		return nil, fmt.Errorf("the subscribers did not start: %q %v", line, err)
	}
	return p, nil
}

// latencies are one kind of request's: when each started and how long it took.
type latencies struct {
	took   []time.Duration
	errors int
}

func (l *latencies) add(d time.Duration, err error) {
	if err != nil {
		l.errors++
		return
	}
	l.took = append(l.took, d)
}

func (l latencies) percentile(p float64) time.Duration {
	if len(l.took) == 0 {
		return 0
	}
	s := slices.Clone(l.took)
	slices.Sort(s)
	return s[min(len(s)-1, int(p*float64(len(s))))]
}

func (l latencies) max() time.Duration {
	if len(l.took) == 0 {
		return 0
	}
	return slices.Max(l.took)
}

// requestsRun is one run of the requests part.
type requestsRun struct {
	name               string
	elapsed            time.Duration
	generate, stats    latencies
	published          int64
	subs               *subscriberReport
	serverCPU, subsCPU float64 // cores kept busy
	metrics            map[string]float64
}

func measureRequests(ctx context.Context, cfg config, out io.Writer) error {
	var runs []requestsRun
	for _, withSubscribers := range []bool{false, true} {
		r, err := requestsOnce(ctx, cfg, withSubscribers)
		if err != nil {
			return err
		}
		runs = append(runs, r)
	}
	pace := "back to back"
	if cfg.rate > 0 {
		pace = fmt.Sprintf("paced at %d events/s", cfg.rate)
	}
	fmt.Fprintf(out, "\nrequests: generateKeys(count: %d) %s, stats every %v, %v per run\n\n", cfg.count, pace, cfg.statsEvery, cfg.duration)
	fmt.Fprintln(out, "| run | generateKeys calls/s | generate p50 / p99 / max | stats p50 / p99 / max | errors | server CPU | subscriber CPU |")
	fmt.Fprintln(out, "| --- | ---: | ---: | ---: | ---: | ---: | ---: |")
	for _, r := range runs {
		fmt.Fprintf(out, "| %s | %.0f | %v / %v / %v | %v / %v / %v | %d | %.2f | %.2f |\n", r.name,
			float64(len(r.generate.took))/r.elapsed.Seconds(),
			ms(r.generate.percentile(0.5)), ms(r.generate.percentile(0.99)), ms(r.generate.max()),
			ms(r.stats.percentile(0.5)), ms(r.stats.percentile(0.99)), ms(r.stats.max()),
			r.generate.errors+r.stats.errors, r.serverCPU, r.subsCPU)
	}
	base, loaded := runs[0], runs[1]
	ratio := float64(len(loaded.generate.took)) / float64(max(1, len(base.generate.took)))
	slowest := max(loaded.generate.max(), loaded.stats.max())
	s := loaded.subs
	fmt.Fprintf(out, "\nwith %d subscribers: %d events published; subscribers: %d kept up (every event, in order), %d cut with SLOW_CONSUMER (%d cuts, %d resumptions answered EVENTS_COMPACTED), %d with a problem%s; %d events received (avg %.0f, min %d per socket)\n",
		s.Sockets, loaded.published, s.KeptUp, s.Cut, s.Cuts, s.Compacted, s.Problems, example(s.Example), s.Received, s.AvgGot, s.MinGot)
	fmt.Fprint(out, "server metrics:")
	for _, name := range fanoutMetrics {
		fmt.Fprintf(out, " %s %.0f", strings.TrimPrefix(name, "keypool_"), loaded.metrics[name])
	}
	fmt.Fprintln(out)
	if cuts := loaded.metrics["keypool_slow_consumer_cuts_total"]; cuts > 0 {
		fmt.Fprintf(out, "cuts told: the subscribers read %d SLOW_CONSUMER errors of the server's %.0f cuts (%.1f%%)\n", s.Cuts, cuts, 100*float64(s.Cuts)/cuts)
	}
	fmt.Fprintf(out, "\n| target | measured | met? |\n| --- | --- | --- |\n")
	fmt.Fprintf(out, "| stats p99 < 20 ms with subscribers | %v | %s |\n", ms(loaded.stats.percentile(0.99)), yes(loaded.stats.percentile(0.99) < 20*time.Millisecond))
	fmt.Fprintf(out, "| no request over 250 ms with subscribers | slowest %v | %s |\n", ms(slowest), yes(slowest <= 250*time.Millisecond && loaded.generate.errors+loaded.stats.errors == 0))
	if cfg.rate == 0 {
		fmt.Fprintf(out, "| generateKeys throughput >= 0.5 of no subscribers | %.2f | %s |\n", ratio, yes(ratio >= 0.5))
	}
	fmt.Fprintf(out, "| every subscriber gets every event in order or is cut with SLOW_CONSUMER | %d + %d of %d, %d problems | %s |\n",
		s.KeptUp, s.Cut, s.Sockets, s.Problems, yes(s.Problems == 0 && s.KeptUp+s.Cut == s.Sockets))
	return nil
}

var fanoutMetrics = []string{
	"keypool_fanout_frames_total", "keypool_fanout_bytes_total", "keypool_fanout_writes_total",
	"keypool_fanout_coalesced_writes_total", "keypool_fanout_encodes_total", "keypool_fanout_stalls_total",
	"keypool_slow_consumer_cuts_total",
}

func example(s string) string {
	if s == "" {
		return ""
	}
	return " (e.g. " + s + ")"
}

func yes(ok bool) string {
	if ok {
		return "yes"
	}
	return "**no**"
}

func ms(d time.Duration) string {
	switch {
	case d >= 100*time.Millisecond:
		return d.Round(time.Millisecond).String()
	case d >= time.Millisecond:
		return d.Round(10 * time.Microsecond).String()
	default:
		return d.Round(time.Microsecond).String()
	}
}

func requestsOnce(ctx context.Context, cfg config, withSubscribers bool) (requestsRun, error) {
	r := requestsRun{name: "no subscribers"}
	srv, err := startKeypool(ctx, cfg)
	if err != nil {
		return r, err
	}
	defer srv.stop()
	var subs *subscriberProcess
	if withSubscribers {
		r.name = fmt.Sprintf("%d subscribers", cfg.subscribers)
		subs, err = startSubscribers(ctx, cfg, srv.ws(),
			`subscription($after: Int) { keyEvents(types: [GENERATED], after: $after) { seq type keyId at } }`, cfg.resubscribe)
		if err != nil {
			return r, err
		}
		defer subs.stop()
		if err := waitMetric(ctx, srv.base, "keypool_subscribers", float64(cfg.subscribers)); err != nil {
			return r, err
		}
	}
	gen, stats := newClient(), newClient()
	generate := []byte(fmt.Sprintf(`{"query":"mutation { generateKeys(count: %d) { id } }"}`, cfg.count))
	statsQuery := []byte(`{"query":"{ stats { total available blocked } }"}`)
	cpu0 := cpuSeconds(srv.cmd.Process.Pid)
	var subsCPU0 float64
	if subs != nil {
		subsCPU0 = cpuSeconds(subs.pid)
	}
	start := time.Now()
	deadline := start.Add(cfg.duration)
	var wg sync.WaitGroup
	wg.Go(func() {
		var every time.Duration // between calls; 0: back to back
		if cfg.rate > 0 {
			every = time.Second * time.Duration(cfg.count) / time.Duration(cfg.rate)
		}
		next := time.Now()
		for time.Now().Before(deadline) && ctx.Err() == nil {
			t0 := time.Now()
			_, err := post(ctx, gen, srv.base+"/graphql", generate)
			r.generate.add(time.Since(t0), err)
			if every > 0 {
				next = next.Add(every)
				time.Sleep(time.Until(next))
			}
		}
	})
	wg.Go(func() {
		next := time.Now()
		for time.Now().Before(deadline) && ctx.Err() == nil {
			t0 := time.Now()
			_, err := post(ctx, stats, srv.base+"/graphql", statsQuery)
			r.stats.add(time.Since(t0), err)
			next = next.Add(cfg.statsEvery)
			time.Sleep(time.Until(next))
		}
	})
	wg.Wait()
	r.elapsed = time.Since(start)
	r.serverCPU = (cpuSeconds(srv.cmd.Process.Pid) - cpu0) / r.elapsed.Seconds()
	if subs != nil {
		r.subsCPU = (cpuSeconds(subs.pid) - subsCPU0) / r.elapsed.Seconds()
	}
	r.published = int64(len(r.generate.took) * cfg.count)
	if err := ctx.Err(); err != nil {
		return r, err
	}
	if subs != nil {
		// Nothing more is published: let whoever is behind catch up (or be cut).
		var rep subscriberReport
		for wait := time.Now().Add(60 * time.Second); ; {
			if rep, err = subs.report(r.published); err != nil {
				return r, err
			}
			if rep.KeptUp+rep.Cut+rep.Problems == rep.Sockets || time.Now().After(wait) {
				break
			}
			time.Sleep(500 * time.Millisecond)
		}
		r.subs = &rep
		// Sockets that were cut and resumed are counted as cut; the ones that never
		// were must have everything.
	}
	r.metrics, err = scrape(ctx, srv.base)
	return r, err
}

// broadcastRun is what one offered rate delivered from one server.
type broadcastRun struct {
	target     string
	rate       int
	elapsed    time.Duration
	published  int64
	inWindow   subscriberReport // at the end of the window
	afterGrace subscriberReport
	serverCPU  float64
	dropped    int
}

func (r broadcastRun) deliveredPerSecond() float64 {
	return float64(r.inWindow.Received) / r.elapsed.Seconds()
}

func (r broadcastRun) sustained() bool {
	return r.afterGrace.KeptUp == r.afterGrace.Sockets && float64(r.published) >= 0.95*float64(r.rate)*r.elapsed.Seconds()
}

func measureBroadcast(ctx context.Context, cfg config, out io.Writer) error {
	byTarget := map[string][]broadcastRun{}
	for _, rate := range cfg.rates {
		for _, target := range []string{"raw", "keypool"} {
			r, err := broadcastOnce(ctx, cfg, target, rate)
			if err != nil {
				return err
			}
			byTarget[target] = append(byTarget[target], r)
		}
	}
	fmt.Fprintf(out, "\nbroadcast (issue 14): %d subscribers of keyEvents { seq type keyId at }, each rate for %v, 3 s to catch up\n\n",
		cfg.subscribers, cfg.rateDuration)
	fmt.Fprintln(out, "| offered events/s | target | published | delivered in the window (msg/s) | kept up | cut or dropped | server CPU | keypool / raw delivered |")
	fmt.Fprintln(out, "| ---: | --- | ---: | ---: | ---: | ---: | ---: | ---: |")
	best := map[string]int{}
	for i, rate := range cfg.rates {
		for _, target := range []string{"raw", "keypool"} {
			r := byTarget[target][i]
			ratio := ""
			if target == "keypool" {
				ratio = fmt.Sprintf("%.2f", r.deliveredPerSecond()/max(1, byTarget["raw"][i].deliveredPerSecond()))
			}
			fmt.Fprintf(out, "| %d | %s | %d | %.0f | %d/%d | %d | %.2f | %s |\n", rate, target, r.published, r.deliveredPerSecond(),
				r.afterGrace.KeptUp, r.afterGrace.Sockets, r.afterGrace.Cut+r.dropped, r.serverCPU, ratio)
			if r.sustained() {
				best[target] = max(best[target], rate)
			}
			if r.afterGrace.Problems > 0 && target == "keypool" {
				fmt.Fprintf(out, "|  | (keypool: %d subscribers with a problem%s) |||||||\n", r.afterGrace.Problems, example(r.afterGrace.Example))
			}
		}
	}
	last := len(cfg.rates) - 1
	top := byTarget["keypool"][last].deliveredPerSecond() / max(1, byTarget["raw"][last].deliveredPerSecond())
	fmt.Fprintf(out, "\nhighest rate every subscriber kept up with: raw %d/s, keypool %d/s (%.2f); delivered at %d/s offered: keypool / raw %.2f\n",
		best["raw"], best["keypool"], float64(best["keypool"])/float64(max(1, best["raw"])), cfg.rates[last], top)
	return nil
}

func broadcastOnce(ctx context.Context, cfg config, target string, rate int) (broadcastRun, error) {
	r := broadcastRun{target: target, rate: rate}
	var srv *server
	var err error
	if target == "raw" {
		srv, err = startRaw(ctx)
	} else {
		srv, err = startKeypool(ctx, cfg)
	}
	if err != nil {
		return r, err
	}
	defer srv.stop()
	subs, err := startSubscribers(ctx, cfg, srv.ws(),
		`subscription($after: Int) { keyEvents(after: $after) { seq type keyId at } }`, false)
	if err != nil {
		return r, err
	}
	defer subs.stop()
	if target == "raw" {
		err = waitRawSockets(ctx, srv.base, cfg.subscribers)
	} else {
		err = waitMetric(ctx, srv.base, "keypool_subscribers", float64(cfg.subscribers))
	}
	if err != nil {
		return r, err
	}
	client := newClient()
	publish := func(n int) error {
		if target == "raw" {
			_, err := post(ctx, client, srv.base+"/publish?n="+strconv.Itoa(n), nil)
			return err
		}
		_, err := post(ctx, client, srv.base+"/graphql", []byte(fmt.Sprintf(`{"query":"mutation { generateKeys(count: %d) { id } }"}`, n)))
		return err
	}
	cpu0 := cpuSeconds(srv.cmd.Process.Pid)
	start := time.Now()
	ticker := time.NewTicker(10 * time.Millisecond)
	for now := start; now.Sub(start) < cfg.rateDuration && ctx.Err() == nil; now = <-ticker.C {
		due := int64(float64(rate) * now.Sub(start).Seconds())
		for due > r.published {
			n := int(min(due-r.published, 10000))
			if err := publish(n); err != nil {
				ticker.Stop()
				return r, err
			}
			r.published += int64(n)
		}
	}
	ticker.Stop()
	r.elapsed = time.Since(start)
	if r.inWindow, err = subs.report(r.published); err != nil {
		return r, err
	}
	r.serverCPU = (cpuSeconds(srv.cmd.Process.Pid) - cpu0) / r.elapsed.Seconds()
	for wait := time.Now().Add(3 * time.Second); ; time.Sleep(100 * time.Millisecond) {
		if r.afterGrace, err = subs.report(r.published); err != nil {
			return r, err
		}
		if r.afterGrace.KeptUp+r.afterGrace.Cut+r.afterGrace.Problems == r.afterGrace.Sockets || time.Now().After(wait) {
			break
		}
	}
	if target == "raw" {
		var st struct{ Dropped int }
		if b, err := get(ctx, client, srv.base+"/stats"); err == nil {
			_ = json.Unmarshal(b, &st)
		}
		r.dropped = st.Dropped
	}
	return r, ctx.Err()
}

func waitRawSockets(ctx context.Context, base string, n int) error {
	client := newClient()
	for deadline := time.Now().Add(60 * time.Second); time.Now().Before(deadline); time.Sleep(50 * time.Millisecond) {
		var st struct{ Sockets int }
		if b, err := get(ctx, client, base+"/stats"); err == nil && json.Unmarshal(b, &st) == nil && st.Sockets == n {
			return nil
		}
	}
	return fmt.Errorf("the raw broadcast did not get %d sockets", n)
}

// waitMetric waits until keypool's /metrics shows name at value.
func waitMetric(ctx context.Context, base, name string, value float64) error {
	for deadline := time.Now().Add(60 * time.Second); time.Now().Before(deadline); time.Sleep(50 * time.Millisecond) {
		m, err := scrape(ctx, base)
		if err == nil && m[name] == value {
			return nil
		}
	}
	return fmt.Errorf("%s did not reach %v", name, value)
}

// scrape reads keypool's unlabelled metrics.
func scrape(ctx context.Context, base string) (map[string]float64, error) {
	b, err := get(ctx, http.DefaultClient, base+"/metrics")
	if err != nil {
		return nil, err
	}
	m := map[string]float64{}
	for line := range strings.SplitSeq(string(b), "\n") {
		name, value, ok := strings.Cut(line, " ")
		if !ok || strings.HasPrefix(line, "#") || strings.Contains(name, "{") {
			continue
		}
		if v, err := strconv.ParseFloat(value, 64); err == nil {
			m[name] = v
		}
	}
	return m, nil
}

func newClient() *http.Client {
	return &http.Client{Timeout: 60 * time.Second, Transport: &http.Transport{MaxIdleConnsPerHost: 4}}
}

func post(ctx context.Context, c *http.Client, url string, body []byte) ([]byte, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, url, strings.NewReader(string(body)))
	if err != nil {
		return nil, err
	}
	req.Header.Set("Content-Type", "application/json")
	return do(c, req)
}

func get(ctx context.Context, c *http.Client, url string) ([]byte, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return nil, err
	}
	return do(c, req)
}

func do(c *http.Client, req *http.Request) ([]byte, error) {
	res, err := c.Do(req)
	if err != nil {
		return nil, err
	}
	defer res.Body.Close()
	b, err := io.ReadAll(res.Body)
	if err != nil {
		return nil, err
	}
	if res.StatusCode != http.StatusOK || strings.Contains(string(b), `"errors":[`) {
		return nil, fmt.Errorf("%s: %d %.200s", req.URL.Path, res.StatusCode, b)
	}
	return b, nil
}

// cpuSeconds is the CPU seconds (user and system) a process has used; 0 where /proc
// cannot say.
func cpuSeconds(pid int) float64 {
	d, err := harness.ProcessCPU(pid)
	if err != nil {
		return 0
	}
	return d.Seconds()
}
