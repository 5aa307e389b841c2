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
	// dry: a read that can also run dry, writing nothing (while Redis is full).
	dry bool
}

func newScript(src string) *script {
	sum := sha1.Sum([]byte(src))
	return &script{lua: rueidis.NewLuaScript(src), src: src, sha: hex.EncodeToString(sum[:])}
}

// newDryScript is newScript for a read that can run dry.
func newDryScript(src string) *script {
	s := newScript(src)
	s.dry = true
	return s
}

// Hash returns the script's SHA1.
func (s *script) Hash() string { return s.sha }

// layoutVersion is the version of the Redis layout below, stored with the namespace and
// with each pool: a replica refuses a namespace of another layout. Layout 1 (keypool
// before named pools) kept one pool under the namespace's own tag and stored no version.
const layoutVersion = "2"

// The Redis layout. A namespace ns (default "keypool") has keys of its own under the
// hash tag {ns}, and each pool p of it has keys under a hash tag of its own, {ns:p}, so
// that a Redis Cluster may spread the pools over its shards: a script acts on one
// pool's keys, or on the namespace's, never on both. (Pool names have no ':', so the
// tags of two pools never meet; the names below differ between the two levels.)
//
// The namespace, {ns}:
//
//	layout   STRING  the layout version (layoutVersion)
//	secret   STRING  the IDCodec secret, shared by every replica
//	id       STRING  an id of the namespace derived from the secret, which every
//	                 namespace script checks
//	clock    STRING  how scripts keep time (see below)
//	settings HASH    the settings every replica must share, by the flag that sets each
//	                 (-lease-ttl, …): the first replica that knows a setting records
//	                 its own value, and a replica whose own differs refuses to start
//	pools    HASH    the registry: pool name -> pool index (1, 2, … in order of making)
//	made     STREAM  entry <index>-0 {p: name} per pool made, in order: replicas follow
//	                 it to learn of new pools, and read it to find a pool by index
//	replicas HASH    replica id -> when it last said it is there (ms of Redis's TIME),
//	                 every few seconds, so that replicas can count each other
//	                 (replicas.go)
//
// The first replica writes layout, secret, id and clock in one step (scriptSetup). The
// registry only grows (a pool once made stays, with its counters), so replicas cache
// it. A pool is made in two steps: registered (scriptRegister, which enforces
// MaxPools), then its meta hash written (scriptInitPool, run again harmlessly by every
// replica that learns of the pool, so that a replica that stops in between leaves
// nothing half made).
//
// A pool, {ns:p}:
//
//	meta     HASH    id (the pool's id, derived from the secret and the name: it names
//	                 the pool's event stream and is checked by every script), index,
//	                 name, layout, and the pool's counters: keyseq behind its key
//	                 numbers, fence behind its lease fences and tokens, seq behind its
//	                 event seqs. Counters outlive the pool's keys.
//	avail    ZSET    numbers of the AVAILABLE keys, scored by number: a pick is a
//	                 uniform random rank (ZRANGE r r, O(log n)), and pages of List
//	                 are ranges by score
//	blocked  ZSET    numbers of the BLOCKED keys, scored by number, for List
//	leases   ZSET    numbers of the BLOCKED keys, scored by lease deadline
//	alive    ZSET    numbers of every key, scored by keep-alive deadline
//	k:<n>    HASH    one key: c created, e keep-alive deadline, f fence of the current
//	                 lease (0 when AVAILABLE), la acquired at, ld lease deadline,
//	                 n times acquired, x leases expired, h the holder of the lease that
//	                 f names ("" for none); a missing field is 0
//	events:<id>
//	         STREAM  entry <seq>-0 per event: t type, k key number, at; d the deadline an
//	                 ACQUIRED or GENERATED set; h the holder on ACQUIRED; by and ap
//	                 (replica, applied at) on RELEASED and EXPIRED. Named by the pool id,
//	                 so that a replica of a lost namespace never reads the events of
//	                 the one made after it.
//	replies:<replica>
//	         HASH    the replies of one replica's requests in this pool, one field per
//	                 request slot: "<gen>:<reply>" (see below); it expires when the
//	                 replica stops running its expirer for longer than any lease lasts
//
// Key numbers within a pool count from 1 (keyseq); a key's id encrypts its pool's index
// above its number (Store.keyN), so that any replica finds a key's pool from its id
// alone.
//
// Times are integers: microseconds since the Unix epoch when the scripts read Redis's
// TIME (exact in a Lua number and a sorted-set score until the year 2255), or, with the
// store's own clock (tests on a fake clock), nanoseconds since the instant the namespace
// was created (exact for 104 days); the "clock" key records which, so that replicas
// agree.
//
// Every pool script takes KEYS[1] the pool's meta key (so that a cluster client sends
// it to the pool's shard), ARGV[1] the pool's key prefix "{ns:p}:", ARGV[2] now (not a
// number, such as "T": read Redis's TIME), ARGV[3] stream length (approximate MAXLEN),
// ARGV[4] replica id, ARGV[5] pool id, ARGV[6] request slot ("" for none) and ARGV[7]
// request generation ("dry" for a read that must write nothing, see below), then its
// own arguments from ARGV[8], so that redis-benchmark can
// drive it with "EVALSHA sha 1 {ns:p}:meta args…". Replies are arrays {status, now, …}
// of integers, ending with a string where a key's holder is part of them; status 1 for
// success or one of the codes below.
//
// Every pool script first refuses to act on a pool other than the one the replica knows
// (the pool id differs or is missing: Redis lost the namespace, and perhaps a new one
// was made since).
//
// A request that changes a pool runs at most once, however often it is sent: it
// carries a slot of its replica and a generation that grows with every request of the
// replica. The script records its reply under the slot with the generation, in the
// same atomic step as its effects; sent again (a retry after a lost reply), it finds
// its generation there and returns the recorded reply without running. A request that
// finds a later generation in its slot is a stale copy of one its replica gave up on:
// it does nothing. A slot is reused only once its request has ended, so the replies
// hashes hold one reply per request in flight.
//
// A dry read (Get, Stats, List while Redis is out of memory and refuses writes) writes
// nothing: it applies no due transition but answers as if it had (a lease whose
// deadline has passed reads as ended, a key whose keep-alive has passed as gone), and
// records no reply. Stats is then counted as in a storm of due transitions.
const common = `
local P = ARGV[1]
local now = tonumber(ARGV[2])
if not now then
  local t = redis.call('TIME')
  now = tonumber(t[1]) * 1000000 + tonumber(t[2])
end
local RETENTION = ARGV[3]
local BY = ARGV[4]
local META = P .. 'meta'
local AVAIL, BLOCKED, LEASES, ALIVE = P .. 'avail', P .. 'blocked', P .. 'leases', P .. 'alive'
local STREAM = P .. 'events:' .. ARGV[5]
local REPLIES = P .. 'replies:' .. BY
local SLOT, GEN = ARGV[6], tonumber(ARGV[7])
local DRY = ARGV[7] == 'dry'

-- I formats an integer for Redis; tostring would turn 16 digits into 1.764e+15.
local function I(x) return string.format('%d', x) end
-- num reads an integer field; a key's hash leaves out the fields that are still 0.
local function num(x) return tonumber(x) or 0 end

-- A reply is kept as its integers joined by commas, then its string, if any, after a
-- '|' (integers have none, so the first '|' ends them).
local function encode(r)
  local parts, text = {}, ''
  for i = 1, #r do
    if type(r[i]) == 'string' then text = '|' .. r[i] else parts[#parts + 1] = I(r[i]) end
  end
  return table.concat(parts, ',') .. text
end
local function decode(rec)
  local r = {}
  local bar = string.find(rec, '|', 1, true)
  local ints = rec
  if bar then ints = string.sub(rec, 1, bar - 1) end
  for part in string.gmatch(ints, '[^,]+') do r[#r + 1] = tonumber(part) end
  if bar then r[#r + 1] = string.sub(rec, bar + 1) end
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
`

// prelude is what every pool script but scriptInitPool begins with.
const prelude = common + `
local function emit(typ, n, at, ...)
  local seq = redis.call('HINCRBY', META, 'seq', 1)
  redis.call('XADD', STREAM, 'MAXLEN', '~', RETENTION, I(seq) .. '-0',
    't', typ, 'k', n, 'at', I(at), ...)
end

local function expire_key(n, deadline)
  redis.call('DEL', P .. 'k:' .. n)
  redis.call('ZREM', AVAIL, n)
  redis.call('ZREM', BLOCKED, n)
  redis.call('ZREM', LEASES, n)
  redis.call('ZREM', ALIVE, n)
  emit('EXPIRED', n, deadline, 'by', BY, 'ap', I(now))
end

-- free returns the BLOCKED key n to AVAILABLE.
local function free(n)
  redis.call('HSET', P .. 'k:' .. n, 'f', 0)
  redis.call('ZREM', LEASES, n)
  redis.call('ZREM', BLOCKED, n)
  redis.call('ZADD', AVAIL, n, n)
end

local function release(n, deadline)
  free(n)
  redis.call('HINCRBY', P .. 'k:' .. n, 'x', 1)
  emit('RELEASED', n, deadline, 'by', BY, 'ap', I(now))
end

-- unblock returns the BLOCKED key n to AVAILABLE at a client's request.
local function unblock(n)
  free(n)
  emit('UNBLOCKED', n, now)
end

-- settle applies the due transitions of key n, in deadline order, and reports whether
-- it still exists. A lease and a keep-alive that end at one instant end with the key.
-- A dry read only tells whether the key would still exist.
local function settle(n)
  local v = redis.call('HMGET', P .. 'k:' .. n, 'e', 'f', 'ld')
  if not v[1] then return false end
  local e, f, ld = tonumber(v[1]), num(v[2]), num(v[3])
  if DRY then return e > now end
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

-- apply_due applies up to limit due transitions of the pool in deadline order,
-- keep-alive first on a tie, each one popped from its sorted set as it is applied, so
-- no two callers ever apply one transition twice. It returns how many it applied and
-- the earliest deadline left (-1 if none). A dry read applies none.
local function apply_due(limit)
  if DRY then limit = 0 end
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

-- seen turns a key's fields {c, e, f, la, ld, n, x, h}, read by a dry read, into what
-- they would be once its due lease ended (as release would leave them).
local function seen(v)
  if DRY and num(v[3]) ~= 0 and num(v[5]) <= now and num(v[5]) < num(v[2]) then
    v[3], v[7] = '0', I(num(v[7]) + 1)
  end
  return v
end

-- reply is key n as the Store reads it: {1, now, n, c, e, f, la, ld, times acquired,
-- leases expired, holder}; the holder is the current lease's only.
local function reply(n)
  local v = seen(redis.call('HMGET', P .. 'k:' .. n, 'c', 'e', 'f', 'la', 'ld', 'n', 'x', 'h'))
  local f = num(v[3])
  local holder = ''
  if f ~= 0 and v[8] then holder = v[8] end
  return {1, now, tonumber(n), num(v[1]), num(v[2]), f, num(v[4]), num(v[5]), num(v[6]), num(v[7]), holder}
end

-- The pool this replica knows is gone (Redis lost the namespace, and perhaps a new one
-- was made since, whose key numbers and fences start over under another secret): act
-- on nothing.
if redis.call('HGET', META, 'id') ~= ARGV[5] then return {-9, now} end

-- A request sent again: answer what it answered the first time, without running it.
if SLOT ~= '' then
  local gen, first = recorded(SLOT)
  if gen == GEN then return first end
  if gen and gen > GEN then return {-8, now} end
end
`

// Status codes of script replies.
const (
	statusOK          = 1
	statusNotFound    = -1
	statusNotBlocked  = -2
	statusMismatch    = -3
	statusUndecided   = -4  // an acquire that could not decide within its bounds: try again
	statusTooMany     = -5  // no more pools may be made
	statusExhausted   = -6  // the pool's key numbers have run out
	statusAbandoned   = -7  // the request was given up on and resolved (resolve)
	statusStale       = -8  // a stale copy of a request its replica gave up on
	statusReset       = -9  // the pool or namespace is not the one the replica knows
	statusForeignKeys = -10 // a new pool's hash tag holds keys this store did not write
)

// The bounds of keystore, as Lua text.
var (
	requestBatch = strconv.Itoa(keystore.RequestBatch)
	maxPicks     = strconv.Itoa(keystore.MaxPicks)
	maxLocalText = strconv.FormatUint(maxLocal, 10)
)

// ARGV[8] pool index, ARGV[9] pool name. Reply {1, now}. It writes the meta hash of a
// registered pool if it is not there yet; it refuses a pool whose id differs (the
// namespace was lost and made anew), and a new pool whose hash tag already holds keys
// (which this store did not write: a namespace named like this pool's tag?).
var scriptInitPool = newScript(common + `
local id = redis.call('HGET', META, 'id')
if id == ARGV[5] then
  if redis.call('HGET', META, 'layout') ~= '` + layoutVersion + `' then return {-10, now} end
  return {1, now}
end
if id then return {-9, now} end
if redis.call('EXISTS', AVAIL, BLOCKED, LEASES, ALIVE) > 0 then return {-10, now} end
redis.call('HSET', META, 'id', ARGV[5], 'index', ARGV[8], 'name', ARGV[9], 'layout', '` + layoutVersion + `')
return {1, now}
`)

// ARGV[8] count, ARGV[9] keep-alive TTL. Reply {1, now, first key number, keep-alive
// deadline}, or {-6, now} if the pool's key numbers would run out.
var scriptGenerate = newScript(prelude + `
local count = tonumber(ARGV[8])
local e = now + tonumber(ARGV[9])
if num(redis.call('HGET', META, 'keyseq')) + count > ` + maxLocalText + ` then return done({-6, now}) end
local last = redis.call('HINCRBY', META, 'keyseq', count)
local first = last - count + 1
local seq = redis.call('HINCRBY', META, 'seq', count) - count
local c, d = I(now), I(e)
-- The sets take their members in bulk, a chunk at a time (Lua's unpack has a limit).
local alive, avail = {}, {}
local function flush()
  if #alive == 0 then return end
  redis.call('ZADD', ALIVE, unpack(alive))
  redis.call('ZADD', AVAIL, unpack(avail))
  alive, avail = {}, {}
end
for i = first, last do
  local n = I(i)
  redis.call('HSET', P .. 'k:' .. n, 'c', c, 'e', d)
  seq = seq + 1
  redis.call('XADD', STREAM, 'MAXLEN', '~', RETENTION, I(seq) .. '-0', 't', 'GENERATED', 'k', n, 'at', c, 'd', d)
  alive[#alive + 1] = d
  alive[#alive + 1] = n
  avail[#avail + 1] = n
  avail[#avail + 1] = n
  if #alive == 2000 then flush() end
end
flush()
return done({1, now, first, e})
`)

// ARGV[8] lease TTL, ARGV[9] a random integer below 2^52, ARGV[10] how many free keys
// to leave to the replica's waiting Acquires of the pool (absent: 0), ARGV[11] the
// lease's holder (absent: none). Reply: a key, {-1, now} when none is free beyond those
// left to waiters, or {-4, now} when a backlog of due transitions kept it from
// deciding within its bounds (the Store tries again: each try applies a batch of them).
//
// The pick is exactly uniform among the live AVAILABLE keys. Once the request's batch
// has applied every due transition (the rule), the AVAILABLE set holds exactly those,
// and the pick is a uniform random rank of it. In a backlog (a storm the expirer has
// not reached yet: dead keys still AVAILABLE, run-out leases still BLOCKED) it is
// rejection sampling, alternating two samplers, each uniform among the live AVAILABLE
// keys: a random rank of the AVAILABLE set, rejecting keys whose keep-alive has passed
// (and deleting them), used only while no lease has run out; and a random rank among
// the live keys of the keep-alive set, rejecting keys under a lease that has not run
// out. The random ranks come from ARGV[9], then from SHA1s of it, by rejection, so that
// none is biased.
var scriptAcquire = newScript(acquireSource)

var acquireSource = prelude + `
local ttl = tonumber(ARGV[8])
local reserve = tonumber(ARGV[10]) or 0
local holder = ARGV[11] or ''
local _, due = apply_due(` + requestBatch + `)
local settled = due < 0 or due > now

-- A uniform integer in [0, m): draws of 52 bits, the first from the caller, the next
-- from SHA1s of it, each rejected if it falls in the incomplete last span of m.
local TWO52 = 4503599627370496
local draws = 0
local function rand_below(m)
  local limit = TWO52 - math.fmod(TWO52, m)
  while true do
    local u
    draws = draws + 1
    if draws == 1 then
      u = tonumber(ARGV[9])
    else
      u = tonumber(string.sub(redis.sha1hex(ARGV[9] .. ':' .. draws), 1, 13), 16)
    end
    if u < limit then return math.fmod(u, m) end
  end
end

-- The keys owed to waiters: take one only if more than reserve are free. The free
-- keys are counted as Stats counts them: exactly once the batch applied every due
-- transition (the AVAILABLE set), else the live keys less the leases that hold.
if reserve > 0 then
  local free
  if settled then
    free = redis.call('ZCARD', AVAIL)
  else
    free = redis.call('ZCARD', ALIVE) - redis.call('ZCOUNT', ALIVE, '-inf', I(now))
    free = free - math.min(free, redis.call('ZCOUNT', LEASES, '(' .. I(now), '+inf'))
  end
  if free <= reserve then return done({-1, now}) end
end

local function take(n)
  local h = P .. 'k:' .. n
  local fence = redis.call('HINCRBY', META, 'fence', 1)
  local ld = now + ttl
  redis.call('HSET', h, 'f', I(fence), 'la', I(now), 'ld', I(ld), 'h', holder)
  redis.call('HINCRBY', h, 'n', 1)
  redis.call('ZREM', AVAIL, n)
  redis.call('ZADD', BLOCKED, n, n)
  redis.call('ZADD', LEASES, I(ld), n)
  if holder ~= '' then
    emit('ACQUIRED', n, now, 'd', I(ld), 'h', holder)
  else
    emit('ACQUIRED', n, now, 'd', I(ld))
  end
  return done(reply(n))
end

local function rank(z, r) return redis.call('ZRANGE', z, r, r)[1] end

if settled then
  local m = redis.call('ZCARD', AVAIL)
  if m == 0 then return done({-1, now}) end
  return take(rank(AVAIL, rand_below(m)))
end

local leases_due = redis.call('ZCOUNT', LEASES, '-inf', I(now)) > 0
for i = 1, ` + maxPicks + ` do
  if i % 2 == 1 and not leases_due then
    local m = redis.call('ZCARD', AVAIL)
    if m == 0 then return done({-1, now}) end -- nothing AVAILABLE and no lease has run out
    local n = rank(AVAIL, rand_below(m))
    local e = tonumber(redis.call('HGET', P .. 'k:' .. n, 'e'))
    if e > now then return take(n) end
    expire_key(n, e)
  else
    local dead = redis.call('ZCOUNT', ALIVE, '-inf', I(now))
    local live = redis.call('ZCARD', ALIVE) - dead
    if live <= 0 then return done({-1, now}) end
    local n = rank(ALIVE, dead + rand_below(live))
    local v = redis.call('HMGET', P .. 'k:' .. n, 'f', 'ld')
    if num(v[1]) == 0 then return take(n) end
    local ld = tonumber(v[2])
    if ld <= now then
      release(n, ld)
      return take(n)
    end
  end
end
return done({-4, now})
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
var scriptGet = newDryScript(prelude + `
local n = I(tonumber(ARGV[8]))
if not settle(n) then return done({-1, now}) end
return done(reply(n))
`)

// ARGV[8] key number. Reply {1, now}.
var scriptDelete = newScript(prelude + `
local n = I(tonumber(ARGV[8]))
if not settle(n) then return done({-1, now}) end
redis.call('DEL', P .. 'k:' .. n)
redis.call('ZREM', AVAIL, n)
redis.call('ZREM', BLOCKED, n)
redis.call('ZREM', LEASES, n)
redis.call('ZREM', ALIVE, n)
emit('DELETED', n, now)
return done({1, now})
`)

// Reply {1, now, total, available, blocked}. Exact when the request batch applied
// every due transition; in a storm that it could not finish, total is still exact
// (live keys of the keep-alive set) and blocked counts the leases that have not run
// out, which may include keys whose keep-alive has passed until the expirer reaches them.
var scriptStats = newDryScript(prelude + `
local _, next = apply_due(` + requestBatch + `)
local total, blocked = redis.call('ZCARD', ALIVE), redis.call('ZCARD', LEASES)
if next < 0 or next > now then
  return done({1, now, total, redis.call('ZCARD', AVAIL), blocked})
end
total = total - redis.call('ZCOUNT', ALIVE, '-inf', I(now))
blocked = math.min(total, redis.call('ZCOUNT', LEASES, '(' .. I(now), '+inf'))
return done({1, now, total, total - blocked, blocked})
`)

// ARGV[8] status (0 any, 1 AVAILABLE, 2 BLOCKED), ARGV[9] the least key number,
// ARGV[10] the most keys to return, ARGV[11] the most keys to look at. Reply {1, now,
// resume, count, then count records of 10 integers (as reply's), then their count
// holders}: the keys of that status from the number on, in order, as they are once
// their due transitions are applied (a lease that ran out lists as AVAILABLE, a key
// whose keep-alive passed not at all). resume is -1 when the keys listed are all there
// are, or when count reached the most; else the number to go on from, for a next call:
// a page never looks at more keys than ARGV[11], though in a storm the expirer has yet
// to reach most of the candidates may be dead keys, each deleted as it is looked at.
//
// The keys come from the AVAILABLE and BLOCKED sets by score (ZRANGE BYSCORE LIMIT,
// O(log n + the page)): a page of one status never looks at keys of the other.
var scriptList = newDryScript(prelude + `
apply_due(` + requestBatch + `)
local status, from = tonumber(ARGV[8]), tonumber(ARGV[9])
local limit, budget = tonumber(ARGV[10]), tonumber(ARGV[11])
local function range(z, k)
  return redis.call('ZRANGE', z, I(from), '+inf', 'BYSCORE', 'LIMIT', 0, k)
end
-- (A dry read looks at the BLOCKED keys for AVAILABLE ones too: a lease that has run
-- out is still there.)
local function candidates(k)
  if status == 1 and not DRY then return range(AVAIL, k) end
  if status == 2 then return range(BLOCKED, k) end
  -- The first k of the two, merged in order of number.
  local a, b, ns = range(AVAIL, k), range(BLOCKED, k), {}
  local i, j = 1, 1
  while #ns < k and (a[i] or b[j]) do
    if not b[j] or a[i] and tonumber(a[i]) < tonumber(b[j]) then
      ns[#ns + 1], i = a[i], i + 1
    else
      ns[#ns + 1], j = b[j], j + 1
    end
  end
  return ns
end
local recs, holders = {}, {}
local resume = -1
while #holders < limit do
  local ns = candidates(limit - #holders)
  if #ns == 0 then break end
  for _, n in ipairs(ns) do
    if budget == 0 then
      resume = tonumber(n)
      break
    end
    budget = budget - 1
    from = tonumber(n) + 1
    -- One read of the key, unless a deadline of it is due: then settle it, and read
    -- what is left.
    local v = redis.call('HMGET', P .. 'k:' .. n, 'c', 'e', 'f', 'la', 'ld', 'n', 'x', 'h')
    local e, f, ld = tonumber(v[2]), num(v[3]), num(v[5])
    if e and (e <= now or f ~= 0 and ld <= now) then
      if settle(n) then
        v = seen(redis.call('HMGET', P .. 'k:' .. n, 'c', 'e', 'f', 'la', 'ld', 'n', 'x', 'h'))
        f = num(v[3])
      else
        e = nil
      end
    end
    if e and (status == 0 or (status == 2) == (f ~= 0)) then
      local i = #recs
      recs[i + 1], recs[i + 2], recs[i + 3], recs[i + 4] = tonumber(n), num(v[1]), num(v[2]), f
      recs[i + 5], recs[i + 6], recs[i + 7], recs[i + 8] = num(v[4]), num(v[5]), num(v[6]), num(v[7])
      holders[#holders + 1] = (f ~= 0 and v[8]) or ''
    end
  end
  if resume >= 0 then break end
end
local out = {1, now, resume, #holders}
for _, v in ipairs(recs) do out[#out + 1] = v end
for _, h in ipairs(holders) do out[#out + 1] = h end
return out
`)

// ARGV[8] batch size, ARGV[9] how long (ms) the replica's replies outlive its last
// expirer run. Reply {1, now, applied, earliest deadline left or -1}. It also keeps
// the replica's replies in the pool from expiring while the replica runs.
var scriptExpire = newScript(prelude + `
local applied, next = apply_due(tonumber(ARGV[8]))
redis.call('PEXPIRE', REPLIES, ARGV[9])
return {1, now, applied, next}
`)

// ARGV[8] slot, ARGV[9] generation of a request whose outcome its replica never
// learned, ARGV[10] 1 if it was an acquire. It settles the request for good: if it
// never ran, it never will (its slot records it as abandoned, so that a copy still on
// its way does nothing); if it was an acquire that ran and its lease still holds the
// key, nobody has the lease's token, so the key is freed (UNBLOCKED). Reply {-7, now,
// key number, fence} when a key was freed, else {-7, now}; the same when run again.
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

// Reply {1, now}: the pool is the one the replica knows.
var scriptCheck = newScript(prelude + `
return {1, now}
`)

// The namespace's scripts take KEYS[1] the namespace's id key, ARGV[1] the namespace's
// key prefix "{ns}:", and, but for scriptSetup, ARGV[2] the namespace id the replica
// knows, which they check first.
const nsPrelude = `
local NS = ARGV[1]
local POOLS, MADE = NS .. 'pools', NS .. 'made'
if redis.call('GET', NS .. 'id') ~= ARGV[2] then return {-9} end
`

// ARGV[2] layout version, ARGV[3] a new secret, ARGV[4] its namespace id, ARGV[5] this
// replica's clock. The first replica stores the four; every replica gets back {layout,
// secret, id, clock} as stored. A namespace of another layout answers {layout} alone;
// one that holds the keys of layout 1, which stored no version, answers {"1"}.
var scriptSetup = newScript(`
local NS = ARGV[1]
local layout = redis.call('GET', NS .. 'layout')
if not layout then
  if redis.call('EXISTS', NS .. 'secret', NS .. 'pool', NS .. 'clock', NS .. 'keyseq', NS .. 'alive') > 0 then
    return {'1'}
  end
  layout = ARGV[2]
  redis.call('SET', NS .. 'layout', layout)
  redis.call('SET', NS .. 'secret', ARGV[3])
  redis.call('SET', NS .. 'id', ARGV[4])
  redis.call('SET', NS .. 'clock', ARGV[5])
end
if layout ~= ARGV[2] then return {layout} end
return {layout, redis.call('GET', NS .. 'secret'), redis.call('GET', NS .. 'id'), redis.call('GET', NS .. 'clock')}
`)

// ARGV[3] pool name, ARGV[4] the most pools. Reply {1, index} of the pool, registered
// now if it was not, or {-5} if MaxPools are registered already.
var scriptRegister = newScript(nsPrelude + `
local idx = redis.call('HGET', POOLS, ARGV[3])
if idx then return {1, tonumber(idx)} end
local count = redis.call('HLEN', POOLS)
if count >= tonumber(ARGV[4]) then return {-5} end
idx = count + 1
redis.call('HSET', POOLS, ARGV[3], idx)
redis.call('XADD', MADE, idx .. '-0', 'p', ARGV[3])
return {1, idx}
`)

// ARGV[3] pool name. Reply {1, index}, index 0 if no such pool was made.
var scriptLookup = newScript(nsPrelude + `
return {1, tonumber(redis.call('HGET', POOLS, ARGV[3])) or 0}
`)

// ARGV[3] a pool index. Reply {1, n, then n indexes, then their n names}: the pools
// made after that index, in order.
var scriptRegistry = newScript(nsPrelude + `
local entries = redis.call('XRANGE', MADE, (tonumber(ARGV[3]) + 1) .. '-0', '+')
local out, names = {1, #entries}, {}
for _, e in ipairs(entries) do
  out[#out + 1] = tonumber(string.match(e[1], '^%d+'))
  names[#names + 1] = e[2][2]
end
for _, name in ipairs(names) do out[#out + 1] = name end
return out
`)

// ARGV[3], ARGV[4], … pairs of a setting's name and this replica's value of it. Reply
// {1, then the value recorded for each setting}: this replica's own where none was.
var scriptSettings = newScript(nsPrelude + `
local SETTINGS = NS .. 'settings'
local out = {1}
for i = 3, #ARGV, 2 do
  local v = redis.call('HGET', SETTINGS, ARGV[i])
  if not v then
    v = ARGV[i + 1]
    redis.call('HSET', SETTINGS, ARGV[i], v)
  end
  out[#out + 1] = v
end
return out
`)

// Reply {1}: the namespace is the one the replica joined.
var scriptNSCheck = newScript(nsPrelude + `
return {1}
`)

// scriptSet is the scripts a Store runs; tests swap one for a broken one to show
// that the linearizability check catches it.
type scriptSet struct {
	generate, acquire, unblock, renew, keepAlive, get, delete, stats, list, expire, resolve, check, initPool *script
	setup, register, lookup, registry, nsCheck, settings                                                     *script
}

func (set scriptSet) all() []*script {
	return []*script{set.generate, set.acquire, set.unblock, set.renew, set.keepAlive, set.get, set.delete,
		set.stats, set.list, set.expire, set.resolve, set.check, set.initPool,
		set.setup, set.register, set.lookup, set.registry, set.nsCheck, set.settings}
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
	list:      scriptList,
	expire:    scriptExpire,
	resolve:   scriptResolve,
	check:     scriptCheck,
	initPool:  scriptInitPool,
	setup:     scriptSetup,
	register:  scriptRegister,
	lookup:    scriptLookup,
	registry:  scriptRegistry,
	nsCheck:   scriptNSCheck,
	settings:  scriptSettings,
}

// scripts lists the pool scripts by name, for the benchmarks that run them by hand
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
	"list":      scriptList,
	"expire":    scriptExpire,
	"resolve":   scriptResolve,
	"check":     scriptCheck,
}
