// Command keypool-load measures keypool under load against a plain net/http handler.
//
// In one run it builds and starts the real server (a separate process, in-memory pool),
// a plain handler that answers a lease-shaped JSON body of the same size, and two
// floors: gqlgen's (keypool's schema on handler.New with constant answers) and net/http's
// ServeMux (REST's two routes answering recorded answers) (all separate processes: this
// program re-executed). wrk, a C load generator (Debian's wrk), then
// drives acquire→unblock cycles, one connection per wrk thread, against each in turn,
// and the program prints req/s, p50/p99/p99.9 latency, the ratios to the plain handler
// and the CPU the server and wrk each used.
//
//	go run ./cmd/keypool-load                      # 1e3 keys, 8 connections, 10 s per target
//	go run ./cmd/keypool-load -keys 10000000       # the same cycle on a pool of 1e7
//	go run ./cmd/keypool-load -compare-keys 10000000   # 1e3 and 1e7, each pair back to back, and their quotients
//	go run ./cmd/keypool-load -storm 1000000       # 1e6 more keys expire together mid-run (Go driver)
//	go run ./cmd/keypool-load -soak 10m            # mixed load at half the REST maximum (Go driver)
//
// Every request goes to 127.0.0.1 only; every loop is bounded by -duration.
package main

import (
	"bytes"
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
	"strings"
	"sync"
	"text/tabwriter"
	"time"

	"github.com/keypool/keypool/internal/harness"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt)
	defer stop()
	if err := run(ctx, os.Args[1:], os.Stdout); err != nil {
		fmt.Fprintln(os.Stderr, "keypool-load:", err)
		os.Exit(1)
	}
}

type config struct {
	duration    time.Duration
	warmup      time.Duration
	rounds      int
	concurrency int
	keys        int
	storm       int
	soak        time.Duration
	targets     []string
	serverBin   string
	driver      string
	pin         bool
	serverArgs  string
	plainAddr   string // set in the re-executed plain-server process (see startHelper)
	plainSize   int
	floorAddr   string // set in the re-executed gqlgen-floor process
	muxAddr     string // set in the re-executed ServeMux-floor process
	muxAnswers  string
	compareKeys int
}

func run(ctx context.Context, args []string, out io.Writer) error {
	var cfg config
	var targets string
	fs := flag.NewFlagSet("keypool-load", flag.ContinueOnError)
	fs.DurationVar(&cfg.duration, "duration", 10*time.Second, "how long to drive each target")
	fs.DurationVar(&cfg.warmup, "warmup", 2*time.Second, "unmeasured load before each target")
	fs.IntVar(&cfg.rounds, "rounds", 1, "run the targets this many times in turn and also print each ratio's median over the rounds (with -storm: the storm's p99.9 ratio): on a noisy machine, ratios within a round move together")
	fs.IntVar(&cfg.concurrency, "concurrency", 8, "concurrent connections, each alternating acquire and unblock")
	fs.IntVar(&cfg.keys, "keys", 1000, "keys in the pool during the run")
	fs.IntVar(&cfg.compareKeys, "compare-keys", 0, "also start a keypool with this many keys, drive each keypool target against it right after the one with -keys, and print the medians of each pair's quotients of rate and p99 (wrk only)")
	fs.IntVar(&cfg.storm, "storm", 0, "extra keys whose keep-alive deadlines all fall in the middle of the GraphQL and REST runs")
	fs.DurationVar(&cfg.soak, "soak", 0, "instead of the comparison: mixed REST load at half the measured maximum rate for this long, reporting RSS and goroutines")
	fs.StringVar(&targets, "targets", "plain,gqlgen,mux,graphql,rest", "comma-separated targets, in order (gqlgen and mux: gqlgen's and net/http ServeMux's floors, wrk only)")
	fs.StringVar(&cfg.driver, "driver", "wrk", "load generator: wrk, or go (this program's own client; storm and soak always use it)")
	fs.BoolVar(&cfg.pin, "pin", runtime.NumCPU() >= 2, "run the servers on CPU 0 and the load generator on the others (taskset), so that neither takes the other's cores")
	fs.StringVar(&cfg.serverArgs, "server-args", "", "extra flags for keypool, space-separated (e.g. \"-gc-percent 400\")")
	fs.StringVar(&cfg.serverBin, "server", "", "a built keypool binary (default: go build the module at the working directory)")
	fs.StringVar(&cfg.plainAddr, "serve-plain", "", "internal: serve the plain handler on this address")
	fs.IntVar(&cfg.plainSize, "plain-size", 0, "internal: body size of the plain handler")
	fs.StringVar(&cfg.floorAddr, "serve-gqlgen", "", "internal: serve gqlgen's floor on this address")
	fs.StringVar(&cfg.muxAddr, "serve-mux", "", "internal: serve ServeMux's floor on this address")
	fs.StringVar(&cfg.muxAnswers, "mux-answers", "", "internal: directory of the answers ServeMux's floor replays")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if cfg.plainAddr != "" {
		return servePlain(ctx, cfg.plainAddr, cfg.plainSize)
	}
	if cfg.floorAddr != "" {
		return serveFloor(ctx, cfg.floorAddr)
	}
	if cfg.muxAddr != "" {
		return serveMuxFloor(ctx, cfg.muxAddr, cfg.muxAnswers)
	}
	if cfg.storm > 0 || cfg.soak > 0 {
		cfg.driver = "go"
	}
	cfg.targets = strings.Split(targets, ",")
	if cfg.compareKeys > 0 && cfg.driver != "wrk" {
		return fmt.Errorf("-compare-keys needs -driver wrk")
	}
	return measure(ctx, cfg, out)
}

// result is what one target sustained.
type result struct {
	target     string
	requests   int
	errors     int
	elapsed    time.Duration
	latencies  []time.Duration
	p50, p99   time.Duration
	p999, pmax time.Duration
	samples    []sample // every request, for a look at one window of the run
	// serverCPU and driverCPU are the cores the server and the load generator kept
	// busy (CPU seconds per second of the run); zero when not measured.
	serverCPU, driverCPU float64
}

// sample is one request: when it started and how long it took.
type sample struct {
	start   time.Time
	latency time.Duration
}

func (r result) rate() float64 { return float64(r.requests) / r.elapsed.Seconds() }

// measure runs cfg and reports it to out.
func measure(ctx context.Context, cfg config, out io.Writer) error {
	dir, err := os.MkdirTemp("", "keypool-load")
	if err != nil {
		return err
	}
	defer os.RemoveAll(dir)

	bin := cfg.serverBin
	if bin == "" {
		bin = filepath.Join(dir, "keypool")
		build := exec.CommandContext(ctx, "go", "build", "-o", bin, ".")
		build.Stdout, build.Stderr = os.Stderr, os.Stderr
		if err := build.Run(); err != nil {
			return fmt.Errorf("building keypool: %w", err)
		}
	}
	client := newClient(cfg.concurrency)
	server, err := startKeypool(ctx, cfg, client, bin, cfg.keys)
	if err != nil {
		return err
	}
	defer harness.StopProcess(server.cmd, 5*time.Second)
	base, pool := server.base, server.ids
	if cfg.storm > 0 {
		go keepPoolAlive(ctx, client, base, pool)
	}
	// The plain handler answers the size of a REST acquire, the larger of the two replies.
	sample, err := post(ctx, client, base+"/v1/keys/acquire", nil)
	if err != nil {
		return err
	}
	lease, err := parseLease(sample)
	if err != nil {
		return err
	}
	unblocked, err := post(ctx, client, base+"/v1/keys/"+lease.Key.ID+"/unblock", nil)
	if err != nil {
		return err
	}
	// ServeMux's floor replays these two answers.
	if err := os.WriteFile(filepath.Join(dir, acquireAnswer), sample, 0o644); err != nil {
		return err
	}
	if err := os.WriteFile(filepath.Join(dir, unblockAnswer), unblocked, 0o644); err != nil {
		return err
	}

	if cfg.soak > 0 {
		return soak(ctx, cfg, client, base, pool, out)
	}

	self, err := os.Executable()
	if err != nil {
		return err
	}
	plain, plainURL, err := startHelper(ctx, cfg, self, "-serve-plain", "-plain-size", fmt.Sprint(len(sample)))
	if err != nil {
		return err
	}
	defer harness.StopProcess(plain, 5*time.Second)

	if cfg.driver == "wrk" {
		var big *keypoolProc
		if cfg.compareKeys > 0 {
			if big, err = startKeypool(ctx, cfg, client, bin, cfg.compareKeys); err != nil {
				return err
			}
			defer harness.StopProcess(big.cmd, 5*time.Second)
		}
		return measureWrk(ctx, cfg, dir, out, server, big, plain.Process.Pid, plainURL, self, len(sample))
	}
	fmt.Fprintf(out, "keypool-load: %d clients, %v per target after %v warm-up, %d keys in the pool, %d-byte replies, GOMAXPROCS %d\n",
		cfg.concurrency, cfg.duration, cfg.warmup, cfg.keys, len(sample), runtime.GOMAXPROCS(0))
	stormRatios := map[string][]float64{} // p99.9 in the storm over p99.9 before it
	for round := range cfg.rounds {
		var results []result
		for _, target := range cfg.targets {
			cycle, err := cycleFor(target, base, plainURL)
			if err != nil {
				return err
			}
			if cfg.warmup > 0 {
				drive(ctx, client, cfg.concurrency, cfg.warmup, cycle)
			}
			duration := cfg.duration
			var stormFrom, stormTo time.Time
			if cfg.storm > 0 && target != "plain" {
				generated := time.Now()
				if err := generate(ctx, client, base, cfg.storm, cfg.concurrency); err != nil {
					return err
				}
				// The storm's deadlines span the generation; its window runs until two
				// seconds after the last, time enough to drain a million.
				stormFrom, stormTo = generated.Add(stormTTL), time.Now().Add(stormTTL+2*time.Second)
				fmt.Fprintf(out, "%s: %d storm keys generated in %v; their keep-alive deadlines fall %v later\n",
					target, cfg.storm, time.Since(generated).Round(time.Millisecond), stormTTL)
				duration = max(duration, time.Until(stormTo.Add(3*time.Second)))
			}
			r := drive(ctx, client, cfg.concurrency, duration, cycle)
			r.target = target
			results = append(results, r)
			if !stormFrom.IsZero() {
				in, before := r.window(target+" in storm", stormFrom, stormTo), r.window(target+" before", stormFrom.Add(-stormTo.Sub(stormFrom)), stormFrom)
				results = append(results, in, before)
				stormRatios[target] = append(stormRatios[target], float64(in.p999)/float64(before.p999))
			}
			if ctx.Err() != nil {
				return ctx.Err()
			}
		}
		if cfg.rounds > 1 {
			fmt.Fprintf(out, "round %d of %d:\n", round+1, cfg.rounds)
		}
		report(out, results)
	}
	if len(stormRatios) > 0 {
		printMedians(out, fmt.Sprintf("p99.9 in the storm / before it, median over %d rounds:", cfg.rounds), cfg.targets, stormRatios)
	}
	return nil
}

// keypoolProc is a keypool server under test, with the ids of the keys seeded.
type keypoolProc struct {
	cmd  *exec.Cmd
	base string
	keys int
	ids  []string
}

// startKeypool starts the keypool binary bin and seeds its pool with keys keys.
func startKeypool(ctx context.Context, cfg config, client *http.Client, bin string, keys int) (*keypoolProc, error) {
	keepAliveTTL := time.Hour
	if cfg.storm > 0 {
		// Storm keys are generated just before each measured keypool target and all
		// expire stormTTL later, mid-run; a keeper keeps the cycling pool alive.
		keepAliveTTL = stormTTL
	}
	addr, err := harness.FreeAddr()
	if err != nil {
		return nil, err
	}
	cmd := pinned(ctx, cfg, serverCPUs, bin, append([]string{"-addr", addr, "-keepalive-ttl", keepAliveTTL.String(),
		"-max-generate", "10000", "-log-format", "json"}, strings.Fields(cfg.serverArgs)...)...)
	cmd.Stderr = os.Stderr
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("starting keypool: %w", err)
	}
	p := &keypoolProc{cmd: cmd, base: "http://" + addr, keys: keys}
	if err := harness.WaitUp(ctx, p.base+"/healthz"); err != nil {
		harness.StopProcess(cmd, 5*time.Second)
		return nil, fmt.Errorf("keypool did not come up: %w", err)
	}
	if p.ids, err = seed(ctx, client, p.base, keys); err != nil {
		harness.StopProcess(cmd, 5*time.Second)
		return nil, err
	}
	return p, nil
}

// stormTTL is the keep-alive TTL of a storm run: long enough to generate a million keys
// before the first of them expires.
const stormTTL = 20 * time.Second

// generate creates n keys as fast as the server takes them, from parallel clients.
func generate(ctx context.Context, c *http.Client, base string, n, clients int) error {
	batches := make(chan int, n/10000+1)
	for ; n > 0; n -= 10000 {
		batches <- min(n, 10000)
	}
	close(batches)
	errs := make(chan error, clients)
	for range clients {
		go func() {
			for b := range batches {
				if _, err := post(ctx, c, base+"/v1/keys", []byte(fmt.Sprintf(`{"count":%d}`, b))); err != nil {
					errs <- err
					return
				}
			}
			errs <- nil
		}()
	}
	var first error
	for range clients {
		if err := <-errs; err != nil && first == nil {
			first = err
		}
	}
	return first
}

// keepPoolAlive keeps the cycling pool's keys alive through a storm run.
func keepPoolAlive(ctx context.Context, c *http.Client, base string, ids []string) {
	tick := time.NewTicker(stormTTL / 4)
	defer tick.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
			for _, id := range ids {
				_, _ = post(ctx, c, base+"/v1/keys/"+id+"/keepalive", nil)
			}
		}
	}
}

// cycle is one acquire→unblock round trip: two requests.
type cycle func(ctx context.Context, client *http.Client, lat *[]sample) error

func cycleFor(target, keypool, plain string) (cycle, error) {
	switch target {
	case "plain":
		return func(ctx context.Context, c *http.Client, lat *[]sample) error {
			if _, err := timed(ctx, c, plain+"/acquire", nil, lat); err != nil {
				return err
			}
			_, err := timed(ctx, c, plain+"/unblock", nil, lat)
			return err
		}, nil
	case "rest":
		return func(ctx context.Context, c *http.Client, lat *[]sample) error {
			body, err := timed(ctx, c, keypool+"/v1/keys/acquire", nil, lat)
			if err != nil {
				return err
			}
			l, err := parseLease(body)
			if err != nil {
				return err
			}
			_, err = timed(ctx, c, keypool+"/v1/keys/"+l.Key.ID+"/unblock", []byte(`{"token":"`+l.Token+`"}`), lat)
			return err
		}, nil
	case "graphql":
		acquire := []byte(`{"query":"mutation { acquireKey { token key { id } } }"}`)
		return func(ctx context.Context, c *http.Client, lat *[]sample) error {
			body, err := timed(ctx, c, keypool+"/graphql", acquire, lat)
			if err != nil {
				return err
			}
			var r struct {
				Data struct {
					AcquireKey *struct {
						Token string `json:"token"`
						Key   struct {
							ID string `json:"id"`
						} `json:"key"`
					} `json:"acquireKey"`
				} `json:"data"`
			}
			if err := json.Unmarshal(body, &r); err != nil {
				return err
			}
			if r.Data.AcquireKey == nil {
				return fmt.Errorf("acquireKey: %s", body)
			}
			l := r.Data.AcquireKey
			unblock := `{"query":"mutation($id: ID!, $token: ID) { unblockKey(id: $id, token: $token) { id } }","variables":{"id":"` + l.Key.ID + `","token":"` + l.Token + `"}}`
			body, err = timed(ctx, c, keypool+"/graphql", []byte(unblock), lat)
			if err == nil && bytes.Contains(body, []byte(`"errors"`)) {
				err = fmt.Errorf("unblockKey: %s", body)
			}
			return err
		}, nil
	}
	return nil, fmt.Errorf("unknown target %q (plain, graphql, rest)", target)
}

// drive runs cycles from concurrency clients for d and gathers every request's latency.
func drive(ctx context.Context, client *http.Client, concurrency int, d time.Duration, c cycle) result {
	ctx, cancel := context.WithTimeout(ctx, d)
	defer cancel()
	var mu sync.Mutex
	var r result
	var wg sync.WaitGroup
	start := time.Now()
	for range concurrency {
		wg.Add(1)
		go func() {
			defer wg.Done()
			lat := make([]sample, 0, 1<<16)
			errs := 0
			for ctx.Err() == nil {
				if err := c(ctx, client, &lat); err != nil && ctx.Err() == nil {
					errs++
				}
			}
			mu.Lock()
			r.samples = append(r.samples, lat...)
			r.errors += errs
			mu.Unlock()
		}()
	}
	wg.Wait()
	r.elapsed = time.Since(start)
	r.summarize(func(sample) bool { return true })
	return r
}

// summarize sets the counts and percentiles from the samples that keep selects.
func (r *result) summarize(keep func(sample) bool) {
	r.latencies = r.latencies[:0]
	for _, s := range r.samples {
		if keep(s) {
			r.latencies = append(r.latencies, s.latency)
		}
	}
	r.requests = len(r.latencies)
	slices.Sort(r.latencies)
	r.p50, r.p99, r.p999 = percentile(r.latencies, 0.50), percentile(r.latencies, 0.99), percentile(r.latencies, 0.999)
	r.pmax = 0
	if len(r.latencies) > 0 {
		r.pmax = r.latencies[len(r.latencies)-1]
	}
}

// window returns r restricted to the requests that started in [from, to).
func (r result) window(name string, from, to time.Time) result {
	w := result{target: name, samples: r.samples, elapsed: to.Sub(from)}
	w.summarize(func(s sample) bool { return !s.start.Before(from) && s.start.Before(to) })
	return w
}

func percentile(sorted []time.Duration, p float64) time.Duration {
	if len(sorted) == 0 {
		return 0
	}
	return sorted[min(int(float64(len(sorted))*p), len(sorted)-1)]
}

func report(out io.Writer, results []result) {
	var plain float64
	for _, r := range results {
		if r.target == "plain" {
			plain = r.rate()
		}
	}
	w := tabwriter.NewWriter(out, 0, 0, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintln(w, "target\treq/s\tp50\tp99\tp99.9\tmax\terrors\tvs plain\tserver CPU\tdriver CPU\t")
	for _, r := range results {
		ratio := "-"
		if plain > 0 {
			ratio = fmt.Sprintf("%.2f", r.rate()/plain)
		}
		cpu := func(v float64) string {
			if v == 0 {
				return "-"
			}
			return fmt.Sprintf("%.2f", v)
		}
		fmt.Fprintf(w, "%s\t%.0f\t%v\t%v\t%v\t%v\t%d\t%s\t%s\t%s\t\n", r.target, r.rate(),
			r.p50.Round(time.Microsecond), r.p99.Round(time.Microsecond), r.p999.Round(time.Microsecond), r.pmax.Round(time.Microsecond), r.errors, ratio,
			cpu(r.serverCPU), cpu(r.driverCPU))
	}
	w.Flush()
}

// lease is the part of a REST lease a cycle needs.
type lease struct {
	Token string `json:"token"`
	Key   struct {
		ID string `json:"id"`
	} `json:"key"`
}

func parseLease(body []byte) (lease, error) {
	var l lease
	if err := json.Unmarshal(body, &l); err != nil || l.Key.ID == "" {
		return l, fmt.Errorf("REST acquire answered %q: %v", body, err)
	}
	return l, nil
}

func timed(ctx context.Context, c *http.Client, url string, body []byte, lat *[]sample) ([]byte, error) {
	start := time.Now()
	reply, err := post(ctx, c, url, body)
	if err == nil {
		*lat = append(*lat, sample{start, time.Since(start)})
	}
	return reply, err
}

func post(ctx context.Context, c *http.Client, url string, body []byte) ([]byte, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, url, bytes.NewReader(body))
	if err != nil {
		return nil, err
	}
	req.Header.Set("Content-Type", "application/json")
	resp, err := c.Do(req)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	reply, err := io.ReadAll(resp.Body)
	if err != nil {
		return nil, err
	}
	if resp.StatusCode >= 300 {
		return nil, fmt.Errorf("%s: %s: %s", url, resp.Status, reply)
	}
	return reply, nil
}

func newClient(concurrency int) *http.Client {
	t := http.DefaultTransport.(*http.Transport).Clone()
	t.MaxIdleConns = concurrency * 2
	t.MaxIdleConnsPerHost = concurrency * 2
	return &http.Client{Transport: t, Timeout: 10 * time.Second}
}

// seed fills the pool with n keys through REST and returns their ids.
func seed(ctx context.Context, c *http.Client, base string, n int) ([]string, error) {
	ids := make([]string, 0, n)
	for n > 0 {
		batch := min(n, 10000)
		reply, err := post(ctx, c, base+"/v1/keys", []byte(fmt.Sprintf(`{"count":%d}`, batch)))
		if err != nil {
			return nil, fmt.Errorf("seeding the pool: %w", err)
		}
		var created struct {
			Keys []struct {
				ID string `json:"id"`
			} `json:"keys"`
		}
		if err := json.Unmarshal(reply, &created); err != nil {
			return nil, fmt.Errorf("seeding the pool: %w", err)
		}
		for _, k := range created.Keys {
			ids = append(ids, k.ID)
		}
		n -= batch
	}
	return ids, nil
}

// servePlain is the baseline: a net/http handler that answers a fixed JSON body of the
// given size to every request, as fast as net/http allows.
func servePlain(ctx context.Context, addr string, size int) error {
	const head = `{"token":"plainTokenPlainToken00","key":{"id":"plainPlainPlainPlain00"},"pad":"`
	body := []byte(head + strings.Repeat("x", max(size-len(head)-2, 0)) + `"}`)
	mux := http.NewServeMux()
	mux.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		_, _ = io.Copy(io.Discard, r.Body)
		w.Header().Set("Content-Type", "application/json")
		_, _ = w.Write(body)
	})
	return serve(ctx, addr, mux)
}

// soak finds the REST maximum, then drives a mix of every operation at half that rate
// for cfg.soak, printing the server's RSS and goroutines at the start and the end.
func soak(ctx context.Context, cfg config, client *http.Client, base string, pool []string, out io.Writer) error {
	rest, err := cycleFor("rest", base, "")
	if err != nil {
		return err
	}
	maxRate := drive(ctx, client, cfg.concurrency, cfg.duration, rest).rate()
	rate := maxRate / 2
	before, err := processStats(ctx, client, base)
	if err != nil {
		return err
	}
	fmt.Fprintf(out, "soak: REST maximum %.0f req/s; mixed load at %.0f req/s for %v\n", maxRate, rate, cfg.soak)
	fmt.Fprintf(out, "soak: start: %s\n", before)

	ctx, cancel := context.WithTimeout(ctx, cfg.soak)
	defer cancel()
	interval := time.Duration(float64(time.Second) * float64(cfg.concurrency) / rate)
	var wg sync.WaitGroup
	var mu sync.Mutex
	failures := map[string]int{}
	for w := range cfg.concurrency {
		wg.Add(1)
		go func() {
			defer wg.Done()
			tick := time.NewTicker(interval)
			defer tick.Stop()
			for i := w; ; i++ {
				select {
				case <-ctx.Done():
					return
				case <-tick.C:
				}
				if op, err := mixedOp(ctx, client, base, pool, i); err != nil && ctx.Err() == nil {
					mu.Lock()
					failures[op]++
					mu.Unlock()
				}
			}
		}()
	}
	progress := time.NewTicker(time.Minute)
	defer progress.Stop()
	for done := false; !done; {
		select {
		case <-ctx.Done():
			done = true
		case <-progress.C:
			if s, err := processStats(context.Background(), client, base); err == nil {
				fmt.Fprintf(out, "soak: %s\n", s)
			}
		}
	}
	wg.Wait()
	after, err := processStats(context.Background(), client, base)
	if err != nil {
		return err
	}
	fmt.Fprintf(out, "soak: end:   %s\nsoak: unexpected failures by operation: %v\n", after, failures)
	return nil
}

// mixedOp runs the i-th operation of a mix in which every route takes part; NOT_FOUND
// for acquire and answers about deleted keys are expected outcomes, not failures.
func mixedOp(ctx context.Context, c *http.Client, base string, pool []string, i int) (string, error) {
	id := pool[i%len(pool)]
	switch i % 8 {
	case 0, 1:
		body, err := post(ctx, c, base+"/v1/keys/acquire", nil)
		if err != nil {
			if strings.Contains(err.Error(), "404") {
				return "acquire", nil
			}
			return "acquire", err
		}
		l, err := parseLease(body)
		if err != nil {
			return "acquire", err
		}
		_, err = post(ctx, c, base+"/v1/keys/"+l.Key.ID+"/unblock", []byte(`{"token":"`+l.Token+`"}`))
		if err != nil && strings.Contains(err.Error(), "404") {
			return "unblock", nil // the key was a churn key (case 6), deleted under the lease
		}
		return "unblock", err
	case 2, 3:
		_, err := post(ctx, c, base+"/v1/keys/"+id+"/keepalive", nil)
		return "keepalive", err
	case 4:
		_, err := get(ctx, c, base+"/v1/keys/"+id)
		return "get", err
	case 5:
		_, err := get(ctx, c, base+"/v1/stats")
		return "stats", err
	case 6:
		// Churn: a new key and the deletion of it keep the pool's size steady.
		body, err := post(ctx, c, base+"/v1/keys", []byte(`{"count":1}`))
		if err != nil {
			return "generate", err
		}
		var created struct {
			Keys []struct {
				ID string `json:"id"`
			} `json:"keys"`
		}
		if err := json.Unmarshal(body, &created); err != nil || len(created.Keys) != 1 {
			return "generate", fmt.Errorf("generate answered %s", body)
		}
		req, _ := http.NewRequestWithContext(ctx, http.MethodDelete, base+"/v1/keys/"+created.Keys[0].ID, nil)
		resp, err := c.Do(req)
		if err != nil {
			return "delete", err
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusNoContent {
			return "delete", fmt.Errorf("delete answered %s", resp.Status)
		}
		return "delete", nil
	default:
		_, err := post(ctx, c, base+"/graphql", []byte(`{"query":"{ stats { total available blocked } }"}`))
		return "graphql stats", err
	}
}

func get(ctx context.Context, c *http.Client, url string) ([]byte, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return nil, err
	}
	resp, err := c.Do(req)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err == nil && resp.StatusCode != http.StatusOK {
		err = fmt.Errorf("%s: %s", url, resp.Status)
	}
	return body, err
}

// processStats reads the server's resident memory and goroutines from /metrics.
func processStats(ctx context.Context, c *http.Client, base string) (string, error) {
	body, err := get(ctx, c, base+"/metrics")
	if err != nil {
		return "", err
	}
	var rss, goroutines string
	for line := range strings.Lines(string(body)) {
		fields := strings.Fields(line)
		if len(fields) != 2 {
			continue
		}
		switch fields[0] {
		case "process_resident_memory_bytes":
			rss = fields[1]
		case "go_goroutines":
			goroutines = fields[1]
		}
	}
	var rssMiB float64
	fmt.Sscan(rss, &rssMiB)
	return fmt.Sprintf("rss %.1f MiB, goroutines %s", rssMiB/(1<<20), goroutines), nil
}

// The CPUs the servers and the load generator run on when pinned.
const (
	serverCPUs = "0"
	driverCPUs = "1-1023"
)

// pinned is exec.CommandContext, under taskset on cpus when cfg.pin is set. taskset
// execs the program, so the command's pid is the program's.
func pinned(ctx context.Context, cfg config, cpus, name string, args ...string) *exec.Cmd {
	if !cfg.pin {
		return exec.CommandContext(ctx, name, args...)
	}
	return exec.CommandContext(ctx, "taskset", append([]string{"-c", cpus, name}, args...)...)
}

// startHelper starts this program (self) again as one of its helper servers: args
// start with the flag that names it (-serve-plain, -serve-gqlgen, -serve-mux), which is
// given a free address, and go on with that server's own flags. It waits until the
// server answers; the caller stops it.
func startHelper(ctx context.Context, cfg config, self string, args ...string) (*exec.Cmd, string, error) {
	addr, err := harness.FreeAddr()
	if err != nil {
		return nil, "", err
	}
	flag := args[0]
	cmd := pinned(ctx, cfg, serverCPUs, self, append([]string{flag, addr}, args[1:]...)...)
	cmd.Stderr = os.Stderr
	if err := cmd.Start(); err != nil {
		return nil, "", err
	}
	url := "http://" + addr
	if err := harness.WaitUp(ctx, url+"/healthz"); err != nil {
		harness.StopProcess(cmd, 5*time.Second)
		return nil, "", fmt.Errorf("%s %s did not come up: %w", self, flag, err)
	}
	return cmd, url, nil
}
