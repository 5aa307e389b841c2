package redisstore

import (
	"crypto/sha1"
	"encoding/hex"
	"strconv"

	"github.com/redis/rueidis"

	"github.com/keypool/keypool/keystore"
)

// script is a Lua script and its SHA1, by which redis-benchmark calls it.
type script struct {
	lua *rueidis.Lua
	src string
	sha string
}

func newScript(src string) *script {
	sum := sha1.Sum([]byte(src))
	return &script{lua: rueidis.NewLuaScript(src), src: src, sha: hex.EncodeToString(sum[:])}
}

// Hash returns the script's SHA1.
func (s *script) Hash() string { return s.sha }

// The Redis layout, every name under one prefix such as "{keypool}:" (the braces are a
// hash tag, so that a cluster would keep the whole pool in one slot):
//
//	secret   STRING  the IDCodec secret, shared by every replica (SET NX at first start)
//	pool     STRING  an id of the pool derived from the secret, which every script checks
//	keyseq   STRING  INCR counter behind key ids
//	fence    STRING  INCR counter behind lease fences and tokens
//	seq      STRING  INCR counter behind event seqs
//	avail    SET     numbers of the AVAILABLE keys (SRANDMEMBER picks one)
//	leases   ZSET    numbers of the BLOCKED keys, scored by lease deadline
//	alive    ZSET    numbers of every key, scored by keep-alive deadline
//	k:<n>    HASH    one key: c created, e keep-alive deadline, f fence of the current
//	                 lease (0 when AVAILABLE), la acquired at, ld lease deadline,
//	                 n times acquired, x leases expired; a missing field is 0
//	events:<pool>
//	         STREAM  entry <seq>-0 per event: t type, k key number, at; d the deadline an
//	                 ACQUIRED or GENERATED set; by and ap (replica, applied at) on
//	                 RELEASED and EXPIRED. Named by the pool id, so that a replica of a
//	                 lost pool never reads the events of the pool made after it.
//	replies:<replica>
//	         HASH    the replies of one replica's requests, one field per request slot:
//	                 "<gen>:<reply>" (see below); it expires when the replica stops
//	                 running its expirer for longer than any lease can last
//
// Times are integers: microseconds since the Unix epoch when the scripts read Redis's
// TIME (exact in a Lua number and a sorted-set score until the year 2255), or, with the
// store's own clock (tests on a fake clock), nanoseconds since the instant the pool was
// created (exact for 104 days); the "clock" key records which, so that replicas agree.
//
// Every script takes ARGV[1] prefix, ARGV[2] now (not a number, such as "T": read
// Redis's TIME), ARGV[3] stream length (approximate MAXLEN), ARGV[4] replica id,
// ARGV[5] pool id, ARGV[6] request slot ("" for none) and ARGV[7] request generation,
// then its own arguments from ARGV[8], and no KEYS, so that redis-benchmark can drive it
// with "EVALSHA sha 0 args…". Replies are arrays of integers: {status, now, …} with
// status 1 for success or one of the codes below.
//
// Every script first refuses to act on a pool other than the one the replica joined
// (the pool id differs: Redis lost the pool, and perhaps a new one was made since).
//
// A request that changes the pool runs at most once, however often it is sent: it
// carries a slot of its replica and a generation that grows with every request of the
// replica. The script records its reply under the slot with the generation, in the
// same atomic step as its effects; sent again (a retry after a lost reply), it finds
// its generation there and returns the recorded reply without running. A request that
// finds a later generation in its slot is a stale copy of one its replica gave up on:
// it does nothing. A slot is reused only once its request has ended, so the hash holds
// one reply per request in flight.
const prelude = `
local P = ARGV[1]
local now = tonumber(ARGV[2])
if not now then
  local t = redis.call('TIME')
  now = tonumber(t[1]) * 1000000 + tonumber(t[2])
end
local RETENTION = ARGV[3]
local BY = ARGV[4]
local AVAIL, LEASES, ALIVE = P .. 'avail', P .. 'leases', P .. 'alive'
local STREAM = P .. 'events:' .. ARGV[5]
local REPLIES = P .. 'replies:' .. BY
local SLOT, GEN = ARGV[6], tonumber(ARGV[7])

-- I formats an integer for Redis; tostring would turn 16 digits into 1.764e+15.
local function I(x) return string.format('%d', x) end
-- num reads an integer field; a key's hash leaves out the fields that are still 0.
local function num(x) return tonumber(x) or 0 end

-- A reply is kept as its integers joined by commas.
local function encode(r)
  local parts = {}
  for i = 1, #r do parts[i] = I(r[i]) end
  return table.concat(parts, ',')
end
local function decode(text)
  local r = {}
  for part in string.gmatch(text, '[^,]+') do r[#r + 1] = tonumber(part) end
  return r
end
-- recorded returns the generation and the reply recorded in a slot, or nil.
local function recorded(slot)
  local rec = redis.call('HGET', REPLIES, slot)
  if not rec then return nil, nil end
  local sep = string.find(rec, ':', 1, true)
  return tonumber(string.sub(rec, 1, sep - 1)), decode(string.sub(rec, sep + 1))
end
-- done records r as the reply of this request, if it has a slot, and returns it.
local function done(r)
  if SLOT ~= '' then redis.call('HSET', REPLIES, SLOT, I(GEN) .. ':' .. encode(r)) end
  return r
end

local function emit(typ, n, at, ...)
  local seq = redis.call('INCR', P .. 'seq')
  redis.call('XADD', STREAM, 'MAXLEN', '~', RETENTION, I(seq) .. '-0',
    't', typ, 'k', n, 'at', I(at), ...)
end

local function expire_key(n, deadline)
  redis.call('DEL', P .. 'k:' .. n)
  redis.call('SREM', AVAIL, n)
  redis.call('ZREM', LEASES, n)
  redis.call('ZREM', ALIVE, n)
  emit('EXPIRED', n, deadline, 'by', BY, 'ap', I(now))
end

local function release(n, deadline)
  local h = P .. 'k:' .. n
  redis.call('HSET', h, 'f', 0)
  redis.call('HINCRBY', h, 'x', 1)
  redis.call('ZREM', LEASES, n)
  redis.call('SADD', AVAIL, n)
  emit('RELEASED', n, deadline, 'by', BY, 'ap', I(now))
end

-- unblock returns the BLOCKED key n to AVAILABLE at a client's request.
local function unblock(n)
  redis.call('HSET', P .. 'k:' .. n, 'f', 0)
  redis.call('ZREM', LEASES, n)
  redis.call('SADD', AVAIL, n)
  emit('UNBLOCKED', n, now)
end

-- settle applies the due transitions of key n, in deadline order, and reports whether
-- it still exists. A lease and a keep-alive that end at one instant end with the key.
local function settle(n)
  local v = redis.call('HMGET', P .. 'k:' .. n, 'e', 'f', 'ld')
  if not v[1] then return false end
  local e, f, ld = tonumber(v[1]), num(v[2]), num(v[3])
  if f ~= 0 and ld <= now and ld < e then release(n, ld) end
  if e <= now then
    expire_key(n, e)
    return false
  end
  return true
end

local function head(z)
  local r = redis.call('ZRANGE', z, 0, 0, 'WITHSCORES')
  if r[1] then return r[1], tonumber(r[2]) end
  return nil, nil
end

-- apply_due applies up to limit due transitions of the whole pool in deadline order,
-- keep-alive first on a tie, each one popped from its sorted set as it is applied, so
-- no two callers ever apply one transition twice. It returns how many it applied and
-- the earliest deadline left (-1 if none).
local function apply_due(limit)
  local applied = 0
  while true do
    local ln, ls = head(LEASES)
    local kn, ks = head(ALIVE)
    local n, d, lease = kn, ks, false
    if ls and (not ks or ls < ks) then n, d, lease = ln, ls, true end
    if not n then return applied, -1 end
    if d > now or applied >= limit then return applied, d end
    if lease then release(n, d) else expire_key(n, d) end
    applied = applied + 1
  end
end

local function reply(n)
  local v = redis.call('HMGET', P .. 'k:' .. n, 'c', 'e', 'f', 'la', 'ld', 'n', 'x')
  return {1, now, tonumber(n), num(v[1]), num(v[2]), num(v[3]), num(v[4]), num(v[5]), num(v[6]), num(v[7])}
end

-- The pool this replica joined is gone (Redis lost it, and perhaps a new one was made
-- since, whose key numbers and fences start over under another secret): act on nothing.
if redis.call('GET', P .. 'pool') ~= ARGV[5] then return {-9, now} end

-- A request sent again: answer what it answered the first time, without running it.
if SLOT ~= '' then
  local gen, first = recorded(SLOT)
  if gen == GEN then return first end
  if gen and gen > GEN then return {-8, now} end
end
`

// Status codes of script replies.
const (
	statusOK         = 1
	statusNotFound   = -1
	statusNotBlocked = -2
	statusMismatch   = -3
	statusAbandoned  = -7 // the request was given up on and resolved (resolve)
	statusStale      = -8 // a stale copy of a request its replica gave up on
	statusReset      = -9 // the pool is not the one the replica joined
)

// The bounds of keystore, as Lua text.
var (
	requestBatch = strconv.Itoa(keystore.RequestBatch)
	maxPicks     = strconv.Itoa(keystore.MaxPicks)
)

// ARGV[8] count, ARGV[9] keep-alive TTL. Reply {1, now, first key number, keep-alive deadline}.
var scriptGenerate = newScript(prelude + `
local count = tonumber(ARGV[8])
local e = now + tonumber(ARGV[9])
local last = redis.call('INCRBY', P .. 'keyseq', count)
local first = last - count + 1
local seq = redis.call('INCRBY', P .. 'seq', count) - count
local c, d = I(now), I(e)
-- The sets take their members in bulk, a chunk at a time (Lua's unpack has a limit).
local scored, members = {}, {}
local function flush()
  if #members == 0 then return end
  redis.call('ZADD', ALIVE, unpack(scored))
  redis.call('SADD', AVAIL, unpack(members))
  scored, members = {}, {}
end
for i = first, last do
  local n = I(i)
  redis.call('HSET', P .. 'k:' .. n, 'c', c, 'e', d)
  seq = seq + 1
  redis.call('XADD', STREAM, 'MAXLEN', '~', RETENTION, I(seq) .. '-0', 't', 'GENERATED', 'k', n, 'at', c, 'd', d)
  scored[#scored + 1] = d
  scored[#scored + 1] = n
  members[#members + 1] = n
  if #members == 1000 then flush() end
end
flush()
return done({1, now, first, e})
`)

// ARGV[8] lease TTL, ARGV[9] a random seed (Redis seeds math.random the same way for
// every call), ARGV[10] how many free keys to leave to the replica's waiting Acquires
// (absent: 0). Reply: a key, or {-1, now} when none is free beyond those.
//
// The pick is uniform among the live AVAILABLE keys by rejection sampling, alternating
// two samplers: SRANDMEMBER of the AVAILABLE set, rejecting keys whose keep-alive has
// passed (and deleting them), and a random rank among the live keys of the keep-alive
// set, rejecting keys under a lease that has not run out. Each accepted sample is
// uniform, so the mixture is too; between them a storm of due deadlines that the
// expirer has not reached yet (dead keys still AVAILABLE, run-out leases still
// BLOCKED) is seen through without applying it first.
var scriptAcquire = newScript(acquireSource)

var acquireSource = prelude + `
local ttl = tonumber(ARGV[8])
math.randomseed(tonumber(ARGV[9]) or 1)
local _, due = apply_due(` + requestBatch + `)

-- The keys owed to waiters: take one only if more than reserve are free. The free
-- keys are counted as Stats counts them: exactly once the batch applied every due
-- transition (the AVAILABLE set), else the live keys less the leases that hold.
local reserve = tonumber(ARGV[10]) or 0
if reserve > 0 then
  local free
  if due < 0 or due > now then
    free = redis.call('SCARD', AVAIL)
  else
    free = redis.call('ZCARD', ALIVE) - redis.call('ZCOUNT', ALIVE, '-inf', I(now))
    free = free - math.min(free, redis.call('ZCOUNT', LEASES, '(' .. I(now), '+inf'))
  end
  if free <= reserve then return done({-1, now}) end
end

local function take(n)
  local h = P .. 'k:' .. n
  local fence = redis.call('INCR', P .. 'fence')
  local ld = now + ttl
  redis.call('HSET', h, 'f', I(fence), 'la', I(now), 'ld', I(ld))
  redis.call('HINCRBY', h, 'n', 1)
  redis.call('SREM', AVAIL, n)
  redis.call('ZADD', LEASES, I(ld), n)
  emit('ACQUIRED', n, now, 'd', I(ld))
  return done(reply(n))
end

for i = 1, ` + maxPicks + ` do
  if i % 2 == 1 then
    local n = redis.call('SRANDMEMBER', AVAIL)
    if n then
      local e = tonumber(redis.call('HGET', P .. 'k:' .. n, 'e'))
      if e > now then return take(n) end
      expire_key(n, e)
    elseif redis.call('ZCOUNT', LEASES, '-inf', I(now)) == 0 then
      return done({-1, now}) -- nothing AVAILABLE and no lease has run out
    end
  else
    local dead = redis.call('ZCOUNT', ALIVE, '-inf', I(now))
    local live = redis.call('ZCARD', ALIVE) - dead
    if live <= 0 then return done({-1, now}) end
    local r = dead + math.random(live) - 1
    local n = redis.call('ZRANGE', ALIVE, r, r)[1]
    local v = redis.call('HMGET', P .. 'k:' .. n, 'f', 'ld')
    if num(v[1]) == 0 then return take(n) end
    local ld = tonumber(v[2])
    if ld <= now then
      release(n, ld)
      return take(n)
    end
  end
end
return done({-1, now})
`

// ARGV[8] key number, ARGV[9] fence the caller's token names (0: no token, -1: a token
// that names no lease).
var scriptUnblock = newScript(unblockSource)

const unblockSource = prelude + `
local n = I(tonumber(ARGV[8]))
if not settle(n) then return done({-1, now}) end
local f = num(redis.call('HGET', P .. 'k:' .. n, 'f'))
if f == 0 then return done({-2, now}) end
local want = tonumber(ARGV[9])
if want ~= 0 and want ~= f then return done({-3, now}) end
unblock(n)
return done(reply(n))
`

// ARGV[8] key number, ARGV[9] fence, ARGV[10] TTL, ARGV[11] max lease TTL.
var scriptRenew = newScript(prelude + `
local n = I(tonumber(ARGV[8]))
if not settle(n) then return done({-1, now}) end
local h = P .. 'k:' .. n
local v = redis.call('HMGET', h, 'f', 'la')
local f = num(v[1])
if f == 0 then return done({-2, now}) end
if tonumber(ARGV[9]) ~= f then return done({-3, now}) end
local ld = math.min(now + tonumber(ARGV[10]), tonumber(v[2]) + tonumber(ARGV[11]))
redis.call('HSET', h, 'ld', I(ld))
redis.call('ZADD', LEASES, I(ld), n)
return done(reply(n))
`)

// ARGV[8] key number, ARGV[9] keep-alive TTL.
var scriptKeepAlive = newScript(prelude + `
local n = I(tonumber(ARGV[8]))
if not settle(n) then return done({-1, now}) end
local e = now + tonumber(ARGV[9])
redis.call('HSET', P .. 'k:' .. n, 'e', I(e))
redis.call('ZADD', ALIVE, I(e), n)
return done(reply(n))
`)

// ARGV[8] key number.
var scriptGet = newScript(prelude + `
local n = I(tonumber(ARGV[8]))
if not settle(n) then return done({-1, now}) end
return done(reply(n))
`)

// ARGV[8] key number. Reply {1, now}.
var scriptDelete = newScript(prelude + `
local n = I(tonumber(ARGV[8]))
if not settle(n) then return done({-1, now}) end
redis.call('DEL', P .. 'k:' .. n)
redis.call('SREM', AVAIL, n)
redis.call('ZREM', LEASES, n)
redis.call('ZREM', ALIVE, n)
emit('DELETED', n, now)
return done({1, now})
`)

// Reply {1, now, total, available, blocked}. Exact when the request batch applied
// every due transition; in a storm that it could not finish, total is still exact
// (live keys of the keep-alive set) and blocked counts the leases that have not run
// out, which may include keys whose keep-alive has passed until the expirer reaches them.
var scriptStats = newScript(prelude + `
local _, next = apply_due(` + requestBatch + `)
local total, blocked = redis.call('ZCARD', ALIVE), redis.call('ZCARD', LEASES)
if next < 0 or next > now then
  return done({1, now, total, redis.call('SCARD', AVAIL), blocked})
end
total = total - redis.call('ZCOUNT', ALIVE, '-inf', I(now))
blocked = math.min(total, redis.call('ZCOUNT', LEASES, '(' .. I(now), '+inf'))
return done({1, now, total, total - blocked, blocked})
`)

// ARGV[8] batch size, ARGV[9] how long (ms) the replica's replies outlive its last
// expirer run. Reply {1, now, applied, earliest deadline left or -1}. It also keeps
// the replica's replies from expiring while the replica runs.
var scriptExpire = newScript(prelude + `
local applied, next = apply_due(tonumber(ARGV[8]))
redis.call('PEXPIRE', REPLIES, ARGV[9])
return {1, now, applied, next}
`)

// ARGV[8] slot, ARGV[9] generation of a request whose outcome its replica never
// learned, ARGV[10] 1 if it was an acquire. It settles the request for good: if it
// never ran, it never will (its slot records it as abandoned, so that a copy still on
// its way does nothing); if it was an acquire that ran and its lease still holds the
// key, nobody has the lease's token, so the key is freed (UNBLOCKED). Reply {-7, now, key number, fence} when a key was freed, else
// {-7, now}; the same when run again.
var scriptResolve = newScript(prelude + `
local slot, gen = ARGV[8], tonumber(ARGV[9])
local g, r = recorded(slot)
local freed = {-7, now}
if g == gen then
  if r[1] == -7 then return r end -- resolved before
  if ARGV[10] == '1' and r[1] == 1 then
    local n, fence = I(r[3]), r[6]
    if settle(n) and num(redis.call('HGET', P .. 'k:' .. n, 'f')) == fence then
      unblock(n)
      freed = {-7, now, r[3], fence}
    end
  end
elseif g and g > gen then
  return freed
end
redis.call('HSET', REPLIES, slot, I(gen) .. ':' .. encode(freed))
return freed
`)

// Reply {1, now}: the pool is the one the replica joined.
var scriptCheck = newScript(prelude + `
return {1, now}
`)

// scriptSet is the scripts a Store runs; tests swap one for a broken one to show
// that the linearizability check catches it.
type scriptSet struct {
	generate, acquire, unblock, renew, keepAlive, get, delete, stats, expire, resolve, check *script
}

func (set scriptSet) all() []*script {
	return []*script{set.generate, set.acquire, set.unblock, set.renew, set.keepAlive, set.get, set.delete,
		set.stats, set.expire, set.resolve, set.check}
}

var defaultScripts = scriptSet{
	generate:  scriptGenerate,
	acquire:   scriptAcquire,
	unblock:   scriptUnblock,
	renew:     scriptRenew,
	keepAlive: scriptKeepAlive,
	get:       scriptGet,
	delete:    scriptDelete,
	stats:     scriptStats,
	expire:    scriptExpire,
	resolve:   scriptResolve,
	check:     scriptCheck,
}

// scripts lists every script by name, for the benchmarks that run them by hand
// (bench_test.go); the Store loads and runs its scriptSet.
var scripts = map[string]*script{
	"generate":  scriptGenerate,
	"acquire":   scriptAcquire,
	"unblock":   scriptUnblock,
	"renew":     scriptRenew,
	"keepalive": scriptKeepAlive,
	"get":       scriptGet,
	"delete":    scriptDelete,
	"stats":     scriptStats,
	"expire":    scriptExpire,
	"resolve":   scriptResolve,
	"check":     scriptCheck,
}
