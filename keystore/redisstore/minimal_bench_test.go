package redisstore

import (
	"context"
	"fmt"
	"os/exec"
	"strconv"
	"strings"
	"testing"

	"github.com/jonboulle/clockwork"

	"github.com/keypool/keypool/keystore"
)

// runRedisBenchmark has redis-benchmark send n calls from clients connections (each
// call: the command and arguments given, with redis-benchmark's __rand_int__ drawn
// from 100000) to srv, and returns the calls per second and the Redis CPU per call in
// µs. A call that Redis answers with an error fails b: redis-benchmark counts it like
// any other.
func runRedisBenchmark(b *testing.B, srv *redisServer, rdb *admin, clients, n int, call ...string) (rate, cpu float64) {
	b.Helper()
	args := append([]string{"-s", srv.sock, "-n", strconv.Itoa(n), "-c", strconv.Itoa(clients), "-r", "100000", "--csv"}, call...)
	cpu0, failed0 := redisCPU(b, srv), failedScripts(b, rdb)
	out, err := exec.Command("redis-benchmark", args...).CombinedOutput()
	used := redisCPU(b, srv) - cpu0
	if err != nil {
		b.Fatalf("redis-benchmark: %v\n%s", err, out)
	}
	if failed := failedScripts(b, rdb) - failed0; failed > 0 {
		b.Fatalf("%d of redis-benchmark's %d calls failed: %s", failed, n, must(rdb.do("INFO", "errorstats").ToString())(b))
	}
	// --csv prints a header line, then "test","rps",…
	lines := strings.Split(strings.TrimSpace(string(out)), "\n")
	fields := strings.Split(lines[len(lines)-1], ",")
	rate, err = strconv.ParseFloat(strings.Trim(fields[1], `"`), 64)
	if err != nil {
		b.Fatalf("redis-benchmark output %q: %v", out, err)
	}
	return rate, float64(used.Microseconds()) / float64(n)
}

// The minimal lease design that issue 28 measures keypool's scripts against: a set of
// AVAILABLE key numbers, a sorted set of lease deadlines, a fence counter and a hash a
// key, and nothing else (no request slots, no pool check, no events, no keep-alive, no
// listing order, no counters). Its two scripts are a Redis Functions library, called as
// keypool's are.
const minimalLibrary = `#!lua name=minimal
redis.register_function('minimal_acquire', function(KEYS, ARGV)
  local n = redis.call('SRANDMEMBER', KEYS[1])
  if not n then return {0} end
  redis.call('SREM', KEYS[1], n)
  redis.call('ZADD', KEYS[2], ARGV[1], n)
  local f = redis.call('INCR', KEYS[3])
  redis.call('HSET', KEYS[4] .. n, 'f', f)
  return {1, tonumber(n), f}
end)
redis.register_function('minimal_unblock', function(KEYS, ARGV)
  local n = tonumber(ARGV[1])
  if redis.call('ZREM', KEYS[2], n) == 0 then return {0} end
  redis.call('SADD', KEYS[1], n)
  redis.call('HSET', KEYS[4] .. n, 'f', 0)
  return {1}
end)
`

// minimalKeys are the minimal design's keys, under a hash tag of their own.
var minimalKeys = []string{"4", "{min}:avail", "{min}:leases", "{min}:fence", "{min}:k:"}

// versus is a Redis with a pool of benchKeys keys and the minimal design's keys, which
// redis-benchmark drives (FCALL, no Go in the path) at 16 connections.
type versus struct {
	b    *testing.B
	srv  *redisServer
	rdb  *admin
	pool string
}

const versusClients = 16

func newVersus(b *testing.B) *versus {
	if _, err := exec.LookPath("redis-benchmark"); err != nil {
		b.Skip("redis-benchmark not installed: apt-get install redis-tools")
	}
	srv := startRedis(b)
	ctx := context.Background()
	rdb := srv.client()
	b.Cleanup(rdb.Close)
	s := openNamespace(b, srv, clockwork.NewRealClock(), keystore.Options{}, "bench")
	for range benchKeys / keystore.DefaultMaxGenerate {
		must(s.Generate(ctx, "", keystore.DefaultMaxGenerate))(b)
	}
	if err := s.Close(); err != nil { // redis-benchmark alone drives Redis
		b.Fatal(err)
	}
	must(rdb.do("FUNCTION", "LOAD", minimalLibrary).ToString())(b)
	b.Logf("redis-benchmark -s SOCKET -n N -c %d -r 100000 --csv FCALL FUNCTION KEYS… ARGS…", versusClients)
	return &versus{b: b, srv: srv, rdb: rdb, pool: must(rdb.do("HGET", "{bench:default}:meta", "id").ToString())(b)}
}

// cycle is what a round measured: acquires and unblocks a second, and the Redis CPU
// of each; rate and cpu are those of an acquire and an unblock together.
type cycle struct{ acquire, acquireCPU, unblock, unblockCPU float64 }

func (c cycle) rate() float64 { return 1 / (1/c.acquire + 1/c.unblock) }
func (c cycle) cpu() float64  { return c.acquireCPU + c.unblockCPU }
func (c cycle) String() string {
	return fmt.Sprintf("acquire %.0f/s (%.1f µs), unblock %.0f/s (%.1f µs), %.0f cycles/s", c.acquire, c.acquireCPU, c.unblock, c.unblockCPU, c.rate())
}

// keypool runs a round of lib's scripts: acquires that lease every key of the pool,
// then unblocks of benchKeys/4 random key numbers (most of them BLOCKED), each with a
// request slot of its own unless slots is false; then it frees every key again.
func (v *versus) keypool(lib *library, slots bool) cycle {
	common := luaCommon(v.pool)
	if !slots {
		common[7] = "" // ARGV[6]
	}
	run := func(name string, n int, args ...string) (float64, float64) {
		call := append(append([]string{"FCALL", lib.fn(scripts[name], false)}, common...), args...)
		return runRedisBenchmark(v.b, v.srv, v.rdb, versusClients, n, call...)
	}
	var c cycle
	c.acquire, c.acquireCPU = run("acquire", benchKeys, "60000000", "__rand_int__")
	c.unblock, c.unblockCPU = run("unblock", benchKeys/4, "__rand_int__", "0")
	freeAll(v.b, v.rdb)
	return c
}

// minimal runs a round of the minimal design's: acquires of every key, then unblocks
// of benchKeys/4 random numbers.
func (v *versus) minimal() cycle {
	b, rdb := v.b, v.rdb
	must(rdb.do("DEL", "{min}:avail", "{min}:leases").AsInt64())(b)
	for from := 0; from < benchKeys; from += 10000 {
		members := []string{"SADD", "{min}:avail"}
		for n := from; n < from+10000; n++ {
			members = append(members, strconv.Itoa(n))
		}
		must(rdb.do(members...).AsInt64())(b)
	}
	run := func(fn string, n int, arg string) (float64, float64) {
		call := append(append([]string{"FCALL", fn}, minimalKeys...), arg)
		return runRedisBenchmark(b, v.srv, rdb, versusClients, n, call...)
	}
	var c cycle
	c.acquire, c.acquireCPU = run("minimal_acquire", benchKeys, "60000000")
	if left := must(rdb.do("SCARD", "{min}:avail").AsInt64())(b); left != 0 {
		b.Fatalf("the minimal acquire round left %d keys AVAILABLE", left)
	}
	c.unblock, c.unblockCPU = run("minimal_unblock", benchKeys/4, "__rand_int__")
	return c
}

// BenchmarkVersusMinimal drives keypool's acquire and unblock scripts and the minimal
// design's with redis-benchmark, taking turns versusRounds times (versus.keypool,
// versus.minimal), as BenchmarkVersusLua does. It reports the median over the rounds
// of keypool's cycle rate over the minimal design's (issue 28's target: at least 0.6)
// and of their Redis CPU per cycle. It runs once whatever -benchtime says.
//
//	go test -run '^$' -bench 'VersusMinimal' -benchtime 2x -count 1 -v ./keystore/redisstore
func BenchmarkVersusMinimal(b *testing.B) {
	if b.N == 1 {
		return // the framework's first probe: only the -benchtime Nx run is measured
	}
	v := newVersus(b)
	var rates, cpus []float64
	for round := range versusRounds {
		keypool, minimal := v.keypool(defaultLibrary, true), v.minimal()
		b.Logf("round %d: keypool %v; minimal %v; rate ratio %.2f, Redis CPU %.2fx",
			round+1, keypool, minimal, keypool.rate()/minimal.rate(), keypool.cpu()/minimal.cpu())
		rates = append(rates, keypool.rate()/minimal.rate())
		cpus = append(cpus, keypool.cpu()/minimal.cpu())
	}
	b.ReportMetric(median(rates), "rate-ratio")
	b.ReportMetric(median(cpus), fmt.Sprintf("redis-cpu-ratio@c%d", versusClients))
}

// scriptParts are the parts of keypool's acquire and unblock that the minimal design
// lacks, each as what its scripts are without it (measurement only: no Store runs
// them), for BenchmarkScriptParts.
var scriptParts = []struct {
	name      string
	slots     bool
	base, acq [][2]string // replacements in libraryBase and acquireSource
}{
	{name: "as they are", slots: true},
	{name: "without the replies recorded (no request slot)", slots: false},
	{name: "without events (no XADD)", slots: true, base: [][2]string{noXADD}},
	{name: "without the BLOCKED listing index", slots: true, base: [][2]string{noBlockedZREM}, acq: [][2]string{noBlockedZADD}},
	{name: "without all three", slots: false, base: [][2]string{noXADD, noBlockedZREM}, acq: [][2]string{noBlockedZADD}},
}

var (
	noXADD        = [2]string{"  redis.call('XADD', STREAM, 'MAXLEN', '~', RETENTION, I(SEQ) .. '-0', 't', typ, 'k', n, 'at', ats, ...)\n", ""}
	noBlockedZREM = [2]string{"  redis.call('ZREM', BLOCKED, n)\n  v[FF] = 0", "  v[FF] = 0"}
	noBlockedZADD = [2]string{"  redis.call('ZADD', BLOCKED, n, n)\n", ""}
)

// BenchmarkScriptParts measures what each part of keypool's scripts that the minimal
// design lacks costs: it runs, versusRounds times, the minimal design and keypool's
// scripts as they are and without each part (scriptParts), and reports for each the
// median over the rounds of its cycle rate over the minimal design's.
//
//	go test -run '^$' -bench 'ScriptParts' -benchtime 2x -count 1 -v ./keystore/redisstore
func BenchmarkScriptParts(b *testing.B) {
	if b.N == 1 {
		return // the framework's first probe: only the -benchtime Nx run is measured
	}
	v := newVersus(b)
	libs := make([]*library, len(scriptParts))
	for i, part := range scriptParts {
		base, acquire := libraryBase, acquireSource
		for _, r := range part.base {
			if !strings.Contains(base, r[0]) {
				b.Fatalf("%s: %q is not in the library", part.name, r[0])
			}
			base = strings.Replace(base, r[0], r[1], 1)
		}
		for _, r := range part.acq {
			if !strings.Contains(acquire, r[0]) {
				b.Fatalf("%s: %q is not in the acquire script", part.name, r[0])
			}
			acquire = strings.Replace(acquire, r[0], r[1], 1)
		}
		set := defaultScripts
		set.acquire = poolFn("acquire", acquire)
		libs[i] = newLibraryFrom(base, set)
		must(v.rdb.do("FUNCTION", "LOAD", "REPLACE", libs[i].src).ToString())(b)
	}
	ratios := make([][]float64, len(scriptParts))
	for round := range versusRounds {
		minimal := v.minimal()
		b.Logf("round %d: minimal %v", round+1, minimal)
		for i, part := range scriptParts {
			c := v.keypool(libs[i], part.slots)
			ratios[i] = append(ratios[i], c.rate()/minimal.rate())
			b.Logf("round %d: %s: %v; rate ratio %.2f", round+1, part.name, c, c.rate()/minimal.rate())
		}
	}
	for i, part := range scriptParts {
		b.Logf("%s: median rate ratio %.2f", part.name, median(ratios[i]))
	}
}
