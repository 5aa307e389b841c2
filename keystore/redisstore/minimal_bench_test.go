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

// BenchmarkVersusMinimal drives keypool's acquire and unblock scripts and the minimal
// design's with redis-benchmark (FCALL, 16 connections, no Go in the path), taking
// turns versusRounds times, each on a pool of benchKeys keys: an acquire round that
// leases every key, then an unblock round of benchKeys/4 random key numbers (most of
// them BLOCKED), as BenchmarkVersusLua does. It reports the median over the rounds of
// keypool's cycle rate over the minimal design's (issue 28's target: at least 0.6) and
// of their Redis CPU per cycle. It runs once whatever -benchtime says.
//
//	go test -run '^$' -bench 'VersusMinimal' -benchtime 2x -count 1 -v ./keystore/redisstore
func BenchmarkVersusMinimal(b *testing.B) {
	if b.N == 1 {
		return // the framework's first probe: only the -benchtime Nx run is measured
	}
	if _, err := exec.LookPath("redis-benchmark"); err != nil {
		b.Skip("redis-benchmark not installed: apt-get install redis-tools")
	}
	const clients = 16
	srv := startRedis(b)
	ctx := context.Background()
	rdb := srv.client()
	defer rdb.Close()
	s := openNamespace(b, srv, clockwork.NewRealClock(), keystore.Options{}, "bench")
	for range benchKeys / keystore.DefaultMaxGenerate {
		must(s.Generate(ctx, "", keystore.DefaultMaxGenerate))(b)
	}
	if err := s.Close(); err != nil { // redis-benchmark alone drives Redis
		b.Fatal(err)
	}
	pool := must(rdb.do("HGET", "{bench:default}:meta", "id").ToString())(b)
	must(rdb.do("FUNCTION", "LOAD", minimalLibrary).ToString())(b)
	fillMinimal := func() {
		must(rdb.do("DEL", "{min}:avail", "{min}:leases").AsInt64())(b)
		for from := 0; from < benchKeys; from += 10000 {
			members := []string{"SADD", "{min}:avail"}
			for n := from; n < from+10000; n++ {
				members = append(members, strconv.Itoa(n))
			}
			must(rdb.do(members...).AsInt64())(b)
		}
	}
	keypool := func(name string, n int, args ...string) (float64, float64) {
		call := append(append([]string{"FCALL", defaultLibrary.fn(scripts[name], false)}, luaCommon(pool)...), args...)
		return runRedisBenchmark(b, srv, rdb, clients, n, call...)
	}
	minimal := func(fn string, n int, arg string) (float64, float64) {
		call := append(append([]string{"FCALL", fn}, minimalKeys...), arg)
		return runRedisBenchmark(b, srv, rdb, clients, n, call...)
	}
	b.Logf("redis-benchmark -s SOCKET -n N -c %d -r 100000 --csv FCALL FUNCTION KEYS… ARGS…", clients)
	var rates, cpus []float64
	for round := range versusRounds {
		if round > 0 {
			freeAll(b, rdb)
		}
		fillMinimal()
		acquire, acquireCPU := keypool("acquire", benchKeys, "60000000", "__rand_int__")
		unblock, unblockCPU := keypool("unblock", benchKeys/4, "__rand_int__", "0")
		minAcquire, minAcquireCPU := minimal("minimal_acquire", benchKeys, "60000000")
		if left := must(rdb.do("SCARD", "{min}:avail").AsInt64())(b); left != 0 {
			b.Fatalf("the minimal acquire round left %d keys AVAILABLE", left)
		}
		minUnblock, minUnblockCPU := minimal("minimal_unblock", benchKeys/4, "__rand_int__")
		rate, minRate := 1/(1/acquire+1/unblock), 1/(1/minAcquire+1/minUnblock)
		cpu, minCPU := acquireCPU+unblockCPU, minAcquireCPU+minUnblockCPU
		b.Logf("round %d: keypool acquire %.0f/s (%.1f µs), unblock %.0f/s (%.1f µs), %.0f cycles/s; "+
			"minimal acquire %.0f/s (%.1f µs), unblock %.0f/s (%.1f µs), %.0f cycles/s; rate ratio %.2f, Redis CPU %.2fx",
			round+1, acquire, acquireCPU, unblock, unblockCPU, rate, minAcquire, minAcquireCPU, minUnblock, minUnblockCPU, minRate,
			rate/minRate, cpu/minCPU)
		rates = append(rates, rate/minRate)
		cpus = append(cpus, cpu/minCPU)
	}
	b.ReportMetric(median(rates), "rate-ratio")
	b.ReportMetric(median(cpus), fmt.Sprintf("redis-cpu-ratio@c%d", clients))
}
