package redisstore

import (
	"context"
	"encoding/base64"
	"fmt"
	"math/rand/v2"
	"os"
	"os/exec"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/jonboulle/clockwork"

	"github.com/keypool/keypool/keystore"
)

// benchKeys is the size of the pool the benchmarks work on.
const benchKeys = 100_000

// benchPool starts a redis-server and fills a pool of benchKeys keys through a Store
// on the real clock (scripts on Redis's TIME, as in production).
func benchPool(b *testing.B) (*redisServer, testStore) {
	b.Helper()
	srv := startRedis(b)
	s := openNamespace(b, srv, clockwork.NewRealClock(), keystore.Options{}, "bench")
	for range benchKeys / keystore.DefaultMaxGenerate {
		must(s.Generate(context.Background(), "", keystore.DefaultMaxGenerate))(b)
	}
	return srv, s
}

// BenchmarkAcquireUnblock measures one acquire+unblock cycle through the Store (two
// script calls, one goroutine), on a pool of 1e5 keys.
//
//	go test -run '^$' -bench 'AcquireUnblock' -benchtime 20000x ./keystore/redisstore
func BenchmarkAcquireUnblock(b *testing.B) {
	srv, s := benchPool(b)
	ctx := context.Background()
	redis0, go0 := redisCPU(b, srv), processCPU()
	b.ResetTimer()
	for b.Loop() {
		k := must(s.Acquire(ctx, keystore.AcquireOptions{}))(b)
		must(s.Unblock(ctx, k.ID, k.Lease.Token))(b)
	}
	b.StopTimer()
	reportCPU(b, srv, redis0, go0)
	logCommandStats(b, srv)
}

// BenchmarkAcquireUnblockReplicated is BenchmarkAcquireUnblock on a primary with one
// replica on loopback: without WAIT (replicas=0), and with every request confirmed by
// the replica (replicas=1, the server's -redis-min-replicas 1): what WAIT costs per
// cycle. Both runs share the primary and its replica, each in a namespace of its own.
//
//	go test -run '^$' -bench 'AcquireUnblockReplicated' -benchtime 20000x -count 3 -v ./keystore/redisstore
func BenchmarkAcquireUnblockReplicated(b *testing.B) {
	if _, err := exec.LookPath("redis-server"); err != nil {
		b.Skip("redis-server not installed: apt-get install redis-server")
	}
	dir, err := os.MkdirTemp("", "repl")
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { os.RemoveAll(dir) })
	primary := startTCPRedis(b, dir, "primary", freePort(b))
	replica := startTCPRedis(b, dir, "replica", freePort(b), "--replicaof", "127.0.0.1", strconv.Itoa(primary.port))
	waitUntil(b, 30*time.Second, "the replica is in sync", func() bool {
		info, err := replica.do("INFO", "replication").ToString()
		return err == nil && strings.Contains(info, "master_link_status:up")
	})
	for _, n := range []int{0, 1} {
		b.Run(fmt.Sprintf("replicas=%d", n), func(b *testing.B) {
			ctx := context.Background()
			s := openAt(b, "redis://"+primary.addr()+"/0", clockwork.NewRealClock(), keystore.Options{},
				fmt.Sprintf("repl%d", n), WithMinReplicas(n))
			for range benchKeys / keystore.DefaultMaxGenerate {
				must(s.Generate(ctx, "", keystore.DefaultMaxGenerate))(b)
			}
			b.ResetTimer()
			for b.Loop() {
				k := must(s.Acquire(ctx, keystore.AcquireOptions{}))(b)
				must(s.Unblock(ctx, k.ID, k.Lease.Token))(b)
			}
		})
	}
}

// redisCPU returns the CPU time redis-server's main thread has used.
func redisCPU(b *testing.B, srv *redisServer) time.Duration {
	var total float64
	for _, field := range []string{"used_cpu_user_main_thread", "used_cpu_sys_main_thread"} {
		v, err := strconv.ParseFloat(srv.info("cpu", field), 64)
		if err != nil {
			b.Fatal(err)
		}
		total += v
	}
	return time.Duration(total * float64(time.Second))
}

// processCPU returns the CPU time this process (the store, its client and the
// benchmark loop) has used.
func processCPU() time.Duration {
	var ru syscall.Rusage
	_ = syscall.Getrusage(syscall.RUSAGE_SELF, &ru)
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// logCommandStats logs what Redis spent on the scripts and on the stream readers.
func logCommandStats(b *testing.B, srv *redisServer) {
	rdb := srv.client()
	defer rdb.Close()
	text := must(rdb.do("INFO", "commandstats").ToString())(b)
	for _, line := range strings.Split(text, "\n") {
		if strings.HasPrefix(line, "cmdstat_fcall:") || strings.HasPrefix(line, "cmdstat_xread:") {
			b.Log(strings.TrimSpace(line))
		}
	}
}

// BenchmarkAcquireUnblockParallel is the same with GOMAXPROCS×16 goroutines (the
// Redis client's pool holds 10 connections per GOMAXPROCS).
//
//	go test -run '^$' -bench 'AcquireUnblockParallel' -benchtime 40000x ./keystore/redisstore
func BenchmarkAcquireUnblockParallel(b *testing.B) {
	srv, s := benchPool(b)
	ctx := context.Background()
	b.SetParallelism(16)
	redis0, go0 := redisCPU(b, srv), processCPU()
	b.ResetTimer()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			k, err := s.Acquire(ctx, keystore.AcquireOptions{})
			if err != nil {
				b.Error(err)
				return
			}
			if _, err := s.Unblock(ctx, k.ID, k.Lease.Token); err != nil {
				b.Error(err)
				return
			}
		}
	})
	b.StopTimer()
	reportCPU(b, srv, redis0, go0)
	logCommandStats(b, srv)
}

// reportCPU reports the cycles per second and the CPU that Redis and this process
// spent per cycle since redis0 and go0 were read.
func reportCPU(b *testing.B, srv *redisServer, redis0, go0 time.Duration) {
	n := float64(b.N)
	b.ReportMetric(n/b.Elapsed().Seconds(), "cycles/s")
	b.ReportMetric(float64((redisCPU(b, srv)-redis0).Microseconds())/n, "redis-cpu-µs/cycle")
	b.ReportMetric(float64((processCPU()-go0).Microseconds())/n, "go-cpu-µs/cycle")
}

// BenchmarkLuaDirect drives the same acquire and unblock scripts with redis-benchmark
// (FCALL, no Go in the path) on a pool of 1e5 keys, and measures Redis's memory per
// key. It runs once whatever -benchtime says; it logs every command it runs.
//
//	go test -run '^$' -bench 'LuaDirect' -benchtime 1x -v ./keystore/redisstore
func BenchmarkLuaDirect(b *testing.B) {
	if _, err := exec.LookPath("redis-benchmark"); err != nil {
		b.Skip("redis-benchmark not installed: apt-get install redis-tools")
	}
	srv := startRedis(b)
	ctx := context.Background()
	rdb := srv.client()
	defer rdb.Close()
	used := func() int64 {
		n, err := strconv.ParseInt(srv.info("memory", "used_memory"), 10, 64)
		if err != nil {
			b.Fatal(err)
		}
		return n
	}

	// Memory per key: used_memory before and after 1e5 keys, with and without the
	// event stream (it keeps the newest 65536 GENERATED events here).
	before := used()
	s := openNamespace(b, srv, clockwork.NewRealClock(), keystore.Options{}, "bench")
	for range benchKeys / keystore.DefaultMaxGenerate {
		must(s.Generate(ctx, "", keystore.DefaultMaxGenerate))(b)
	}
	if err := s.Close(); err != nil {
		b.Fatal(err)
	}
	withStream := used()
	pool := must(rdb.do("HGET", "{bench:default}:meta", "id").ToString())(b)
	stream := "{bench:default}:events:" + pool
	streamLen := must(rdb.do("XLEN", stream).AsInt64())(b)
	must(rdb.do("DEL", stream).AsInt64())(b)
	withoutStream := used()
	b.Logf("used_memory: %d before, %d with 1e5 keys and a stream of %d events, %d without the stream",
		before, withStream, streamLen, withoutStream)
	b.ReportMetric(float64(withStream-before)/benchKeys, "B/key+stream")
	b.ReportMetric(float64(withoutStream-before)/benchKeys, "B/key")

	run := func(name string, n, clients int, args ...string) (float64, float64) {
		call := append(append([]string{"FCALL", defaultLibrary.fn(scripts[name], false)}, luaCommon(pool)...), args...)
		b.Logf("redis-benchmark -c %d -n %d %s", clients, n, strings.Join(call, " "))
		rps, perCall := runRedisBenchmark(b, srv, rdb, clients, n, call...)
		b.Logf("%s: %.0f calls/s, Redis CPU %.1f µs/call", name, rps, perCall)
		return rps, perCall
	}
	// Each round acquires a quarter of the pool, so the unblocks that follow (random
	// key numbers) find about a quarter to a half of their keys BLOCKED; the others
	// answer NOT_BLOCKED after the same lookups.
	for _, clients := range []int{1, 16} {
		acquire, acquireCPU := run("acquire", benchKeys/4, clients, "60000000", "__rand_int__")
		unblock, unblockCPU := run("unblock", benchKeys/4, clients, "__rand_int__", "0")
		b.Logf("%d connection(s): acquire %.0f calls/s, unblock %.0f calls/s, so %.0f cycles/s",
			clients, acquire, unblock, 1/(1/acquire+1/unblock))
		b.ReportMetric(1/(1/acquire+1/unblock), fmt.Sprintf("cycles/s@c%d", clients))
		b.ReportMetric(acquireCPU+unblockCPU, fmt.Sprintf("redis-cpu-µs/cycle@c%d", clients))
	}
	st := must(rdb.do("ZCARD", "{bench:default}:avail").AsInt64())(b)
	if st == 0 || st == benchKeys {
		b.Fatalf("the scripts did not run as intended: %d keys AVAILABLE", st)
	}
}

// luaCommon returns the default pool's key (its meta hash) and the common arguments of
// its scripts for one run of redis-benchmark: prefix, "T" (Redis's TIME), stream
// length, replica, pool id, then a request slot and generation. The slot is drawn from
// 10^15 (three random numbers) after a prefix of the run's own, so that each call
// records its reply in a fresh slot, as the Store's requests do, rather than replaying
// an earlier one: redis-benchmark seeds its random numbers with time(NULL) ^ getpid(),
// so two runs a few seconds and a few pids apart may draw the same ones.
func luaCommon(pool string) []string {
	slot := strconv.FormatUint(randomUint64(), 36) + ":__rand_int__:__rand_int__:__rand_int__"
	return []string{"1", "{bench:default}:meta", "{bench:default}:", "T", "65536", "redis-benchmark", pool, slot, "1"}
}

// BenchmarkExpiryStorm measures a storm: 1e5 keep-alive deadlines due at one instant,
// applied by the expirer in batches of expiryBatch. It reports how long Generate of
// MaxGenerate keys holds Redis, how long the storm takes, and the longest single
// expirer script (from SLOWLOG), which is how long a request may wait behind it.
// It runs once whatever -benchtime says.
//
//	go test -run '^$' -bench 'ExpiryStorm' -benchtime 1x -v ./keystore/redisstore
func BenchmarkExpiryStorm(b *testing.B) {
	srv := startRedis(b)
	clock := newFakeClock()
	s := openNamespace(b, srv, clock, keystore.Options{KeepAliveTTL: time.Minute}, "storm")
	ctx := context.Background()
	rdb := srv.client()
	defer rdb.Close()
	// Log what takes over 100µs: the commands inside scripts are logged too, and at 0
	// they would push the scripts out of the log.
	must(rdb.do("CONFIG", "SET", "slowlog-log-slower-than", "100").ToString())(b)
	must(rdb.do("CONFIG", "SET", "slowlog-max-len", "100000").ToString())(b)
	slowest := func(fn string) (time.Duration, int) {
		entries := must(rdb.do("SLOWLOG", "GET", "-1").ToArray())(b)
		var longest time.Duration
		n := 0
		for _, e := range entries {
			// id, timestamp, duration in µs, arguments, …
			fields := must(e.ToArray())(b)
			args := must(fields[3].AsStrSlice())(b)
			if len(args) > 1 && strings.EqualFold(args[0], "fcall") && args[1] == fn {
				longest = max(longest, time.Duration(must(fields[2].AsInt64())(b))*time.Microsecond)
				n++
			}
		}
		must(rdb.do("SLOWLOG", "RESET").ToString())(b)
		return longest, n
	}

	must(rdb.do("SLOWLOG", "RESET").ToString())(b)
	cpu0 := redisCPU(b, srv)
	for range benchKeys / keystore.DefaultMaxGenerate {
		must(s.Generate(ctx, "", keystore.DefaultMaxGenerate))(b)
	}
	generateCPU := (redisCPU(b, srv) - cpu0) / (benchKeys / keystore.DefaultMaxGenerate)
	generate, calls := slowest(defaultLibrary.fn(scriptGenerate, false))
	b.Logf("Generate(%d): longest script %v (%d over 100µs), Redis CPU %v per call",
		keystore.DefaultMaxGenerate, generate, calls, generateCPU)

	cpu0 = redisCPU(b, srv)
	b.ResetTimer()
	clock.Advance(time.Minute)
	for must(rdb.do("ZCARD", "{storm:default}:alive").AsInt64())(b) > 0 {
		time.Sleep(time.Millisecond) // polling the storm's progress, not a TTL rule
	}
	elapsed := b.Elapsed()
	b.StopTimer()
	stormCPU := redisCPU(b, srv) - cpu0
	batch, batches := slowest(defaultLibrary.fn(scriptExpire, false))
	b.Logf("storm of %d: applied in %v, longest expirer script %v (%d over 100µs), Redis CPU %v (%v per batch of %d)",
		benchKeys, elapsed, batch, batches, stormCPU, stormCPU/time.Duration(max(batches, 1)), expiryBatch)
	b.ReportMetric(float64(stormCPU.Microseconds())/benchKeys, "redis-cpu-µs/expiry")
	b.ReportMetric(float64(generateCPU.Milliseconds()), "redis-cpu-ms/Generate(10000)")
	b.ReportMetric(float64(benchKeys)/elapsed.Seconds(), "expiries/s")
	b.ReportMetric(float64(batch.Microseconds()), "µs/longest-batch")
	b.ReportMetric(float64(generate.Milliseconds()), "ms/Generate(10000)")
}

// BenchmarkVersusLua compares, in one run on one redis-server, acquire+unblock cycles
// through the Store (c goroutines) with redis-benchmark driving the same two scripts
// at the same concurrency (c connections; FCALL, no Go in the path), for c = 16 and
// c = 1, on a pool of 1e5 keys, scripts on Redis's TIME. The two take turns, three
// rounds each (b.N/3 Store cycles a round), so that the load other programs put on
// the machine falls on both alike; it reports the median of the rounds' ratios: of
// cycle rates, and of Redis CPU per cycle (INFO cpu, main thread). The Store is closed
// while redis-benchmark runs, so that its stream reader and expirer cost it nothing.
//
// redis-benchmark cannot pass a reply to the next call, so its cycle is computed from
// two rounds as 1/(1/acquire + 1/unblock). Its unblock round is measured after an
// acquire round has leased every key, so that most unblocks find their key BLOCKED
// and do the work the Store's unblocks do. The ratios against the old way of
// BenchmarkLuaDirect (BENCHMARKS.md, "Redis store") are reported too, as "-old": an acquire round leasing a quarter of the pool, then an unblock round on
// random keys, of which most answer NOT_BLOCKED after a lookup.
//
//	go test -run '^$' -bench 'VersusLua' -benchtime 60000x -count 1 -v ./keystore/redisstore
func BenchmarkVersusLua(b *testing.B) {
	for _, clients := range []int{16, 1} {
		b.Run(fmt.Sprintf("c=%d", clients), func(b *testing.B) { versusLua(b, clients) })
	}
}

// versusRounds is how many turns the Store and redis-benchmark each take.
const versusRounds = 3

func versusLua(b *testing.B, clients int) {
	if b.N == 1 {
		return // the framework's first probe: only the -benchtime Nx run is measured
	}
	if _, err := exec.LookPath("redis-benchmark"); err != nil {
		b.Skip("redis-benchmark not installed: apt-get install redis-tools")
	}
	srv := startRedis(b)
	ctx := context.Background()
	rdb := srv.client()
	defer rdb.Close()
	open := func() testStore {
		return openNamespace(b, srv, clockwork.NewRealClock(), keystore.Options{}, "bench")
	}
	s := open()
	for range benchKeys / keystore.DefaultMaxGenerate {
		must(s.Generate(ctx, "", keystore.DefaultMaxGenerate))(b)
	}
	pool := must(rdb.do("HGET", "{bench:default}:meta", "id").ToString())(b)
	lua := func(name string, n int, args ...string) (rate, cpu float64) {
		call := append(append([]string{"FCALL", defaultLibrary.fn(scripts[name], false)}, luaCommon(pool)...), args...)
		return runRedisBenchmark(b, srv, rdb, clients, n, call...)
	}
	b.Logf("redis-benchmark -s SOCKET -n N -c %d -r 100000 --csv FCALL FUNCTION %s ARGS…", clients, strings.Join(luaCommon(pool), " "))
	blocked := func() int64 { return must(rdb.do("ZCARD", "{bench:default}:leases").AsInt64())(b) }

	var rateRatios, cpuRatios, oldRateRatios, oldCPURatios []float64
	per := max(b.N/versusRounds/clients, 1)
	for round := range versusRounds {
		if round > 0 {
			freeAll(b, rdb)
			s = open()
		}
		// The Store.
		redis0, go0 := redisCPU(b, srv), processCPU()
		start := time.Now()
		var wg sync.WaitGroup
		for range clients {
			wg.Add(1)
			go func() {
				defer wg.Done()
				for range per {
					k, err := s.Acquire(ctx, keystore.AcquireOptions{})
					if err != nil {
						b.Error(err)
						return
					}
					if _, err := s.Unblock(ctx, k.ID, k.Lease.Token); err != nil {
						b.Error(err)
						return
					}
				}
			}()
		}
		wg.Wait()
		cycles := float64(per * clients)
		storeRate := cycles / time.Since(start).Seconds()
		storeCPU := float64((redisCPU(b, srv) - redis0).Microseconds()) / cycles
		goCPU := float64((processCPU() - go0).Microseconds()) / cycles
		if err := s.Close(); err != nil {
			b.Fatal(err)
		}

		// redis-benchmark on the same scripts.
		acquire, acquireCPU := lua("acquire", benchKeys, "60000000", "__rand_int__")
		if n := blocked(); n != benchKeys {
			b.Fatalf("the acquire round leased %d keys, want all %d", n, benchKeys)
		}
		unblock, unblockCPU := lua("unblock", benchKeys/4, "__rand_int__", "0")
		// The old way: a quarter of the pool leased, then unblocks of random keys.
		freeAll(b, rdb)
		oldAcquire, oldAcquireCPU := lua("acquire", benchKeys/4, "60000000", "__rand_int__")
		oldUnblock, oldUnblockCPU := lua("unblock", benchKeys/4, "__rand_int__", "0")
		luaRate, luaCPU := 1/(1/acquire+1/unblock), acquireCPU+unblockCPU
		oldRate, oldCPU := 1/(1/oldAcquire+1/oldUnblock), oldAcquireCPU+oldUnblockCPU

		b.Logf("round %d: Store %.0f cycles/s, Redis CPU %.1f µs/cycle, Go CPU %.1f µs/cycle; "+
			"redis-benchmark acquire %.0f/s (%.1f µs), unblock %.0f/s (%.1f µs), %.0f cycles/s, %.1f µs/cycle; "+
			"the old way: acquire %.0f/s (%.1f µs), unblock %.0f/s (%.1f µs), %.0f cycles/s; ratios %.2f, CPU %.2fx (old %.2f, %.2fx)",
			round+1, storeRate, storeCPU, goCPU, acquire, acquireCPU, unblock, unblockCPU, luaRate, luaCPU,
			oldAcquire, oldAcquireCPU, oldUnblock, oldUnblockCPU, oldRate, storeRate/luaRate, storeCPU/luaCPU, storeRate/oldRate, storeCPU/oldCPU)
		rateRatios = append(rateRatios, storeRate/luaRate)
		cpuRatios = append(cpuRatios, storeCPU/luaCPU)
		oldRateRatios = append(oldRateRatios, storeRate/oldRate)
		oldCPURatios = append(oldCPURatios, storeCPU/oldCPU)
	}
	b.ReportMetric(median(rateRatios), "rate-ratio")
	b.ReportMetric(median(cpuRatios), "redis-cpu-ratio")
	b.ReportMetric(median(oldRateRatios), "rate-ratio-old")
	b.ReportMetric(median(oldCPURatios), "redis-cpu-ratio-old")
}

// failedScripts returns how many FCALL calls Redis has answered with an error.
func failedScripts(b *testing.B, rdb *admin) int64 {
	text := must(rdb.do("INFO", "commandstats").ToString())(b)
	for _, line := range strings.Split(text, "\n") {
		if rest, ok := strings.CutPrefix(strings.TrimSpace(line), "cmdstat_fcall:"); ok {
			for _, kv := range strings.Split(rest, ",") {
				if v, ok := strings.CutPrefix(kv, "failed_calls="); ok {
					return must(strconv.ParseInt(v, 10, 64))(b)
				}
			}
		}
	}
	return 0
}

func median(v []float64) float64 {
	v = slices.Clone(v)
	slices.Sort(v)
	return v[len(v)/2]
}

// freeAll returns every BLOCKED key of the bench pool to AVAILABLE, off the clock and
// without events, in scripts of a few thousand keys.
func freeAll(b *testing.B, rdb *admin) {
	const free = `
local ns = redis.call('ZRANGE', KEYS[1], 0, 4999)
for _, n in ipairs(ns) do
  local v = {struct.unpack('` + keyFormat + `', redis.call('GET', KEYS[3] .. n))}
  v[3] = 0 -- the fence: no lease
  redis.call('SET', KEYS[3] .. n, struct.pack('` + keyFormat + `', unpack(v, 1, 16)))
  redis.call('ZADD', KEYS[2], n, n)
end
if #ns > 0 then
  redis.call('ZREM', KEYS[1], unpack(ns))
  redis.call('ZREM', KEYS[4], unpack(ns))
end
return #ns`
	for {
		n := must(rdb.do("EVAL", free, "4", "{bench:default}:leases", "{bench:default}:avail", "{bench:default}:k:", "{bench:default}:blocked").AsInt64())(b)
		if n == 0 {
			return
		}
	}
}

// BenchmarkListPage measures pages of List through the Store, in one pool of 1e3, then
// 1e5, then 1e6 AVAILABLE keys, 10 of them BLOCKED, scripts on Redis's TIME: a page of
// 100 AVAILABLE keys and a page of 100 keys of any state, each from a random key on
// (as a cursor of a walk names it), and the page of the 10 BLOCKED keys. A page costs
// O(log n + the page) in Redis: its cost should not grow with the pool, nor the rare
// state's page cost more than the common one's. Each size also reports the Redis CPU
// per page. The pool is filled through the Store, and each size is measured once the
// stream reader has caught up with the pool's events.
//
//	go test -run '^$' -bench 'ListPage' -benchtime 2000x -timeout 30m -v ./keystore/redisstore
func BenchmarkListPage(b *testing.B) {
	const pool, blocked = "list", 10
	srv := startRedis(b)
	s := openNamespace(b, srv, clockwork.NewRealClock(),
		keystore.Options{LeaseTTL: time.Hour, KeepAliveTTL: 4 * time.Hour}, "listbench")
	ctx := context.Background()
	have := 0
	for _, n := range []int{1e3, 1e5, 1e6} {
		start := time.Now()
		for have < n {
			count := min(keystore.DefaultMaxGenerate, n-have)
			must(s.Generate(ctx, pool, count))(b)
			have += count
		}
		if n == 1e3 {
			for range blocked {
				must(s.Acquire(ctx, keystore.AcquireOptions{Pool: pool}))(b)
			}
		}
		for { // the reader idle again
			err := s.b.CatchUp(ctx, pool)
			if err == nil {
				break
			}
			if time.Since(start) > 10*time.Minute {
				b.Fatal(err)
			}
		}
		p := s.b.reg.get(pool)
		b.Logf("%d keys in %v", n, time.Since(start).Round(time.Millisecond))
		st := must(s.Stats(ctx, pool))(b)
		if st.Total != n || st.Blocked != blocked {
			b.Fatalf("stats %+v, want %d keys, %d BLOCKED", st, n, blocked)
		}
		// Cursors naming random keys of the pool, as a walk's pages name their last (the
		// pool, then the key's position: on Redis, its number).
		cursors := make([]string, 1024)
		for i := range cursors {
			pos := p.keyN(int64(1 + rand.IntN(n-200)))
			cursors[i] = base64.RawURLEncoding.EncodeToString([]byte(pool + "/" + strconv.FormatUint(pos, 10)))
		}
		page := func(name string, opts func(i int) keystore.ListOptions, want int) {
			b.Run(fmt.Sprintf("keys=%d/%s", n, name), func(b *testing.B) {
				redis0 := redisCPU(b, srv)
				i := 0
				for b.Loop() {
					got := must(s.List(ctx, opts(i)))(b)
					if len(got.Keys) != want {
						b.Fatalf("a page of %d keys, want %d", len(got.Keys), want)
					}
					i++
				}
				b.ReportMetric(float64((redisCPU(b, srv)-redis0).Microseconds())/float64(b.N), "redis-cpu-µs/page")
			})
		}
		page("available-100", func(i int) keystore.ListOptions {
			return keystore.ListOptions{Pool: pool, Status: keystore.Available, First: 100, After: cursors[i%len(cursors)]}
		}, 100)
		page("any-100", func(i int) keystore.ListOptions {
			return keystore.ListOptions{Pool: pool, First: 100, After: cursors[i%len(cursors)]}
		}, 100)
		page("blocked-10", func(int) keystore.ListOptions {
			return keystore.ListOptions{Pool: pool, Status: keystore.Blocked, First: blocked}
		}, blocked)
	}
}
