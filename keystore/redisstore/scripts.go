package redisstore

import (
	"crypto/sha1"
	"encoding/hex"
	"fmt"
	"strconv"
	"strings"

	"github.com/keypool/keypool/keystore"
)

// script is one function of the Store's Redis Functions library: its name in the
// library, how it begins (kind) and its Lua body, which takes KEYS and ARGV.
type script struct {
	name string
	kind scriptKind
	body string
	// dry: a read that can also run dry, writing nothing (while Redis is full): the
	// library holds it a second time, flagged no-writes, which Redis runs while out of
	// memory.
	dry bool
	// flags: its Redis Functions flags. Redis refuses a function without no-writes or
	// allow-oom while out of memory, before it runs.
	flags string
}

// How a script begins.
type scriptKind string

const (
	// poolScript: the pool scripts' common arguments, the pool check, a request sent
	// again answered from its record, and the pool's counters written back at the end.
	poolScript scriptKind = "pool"
	// stateScript: the pool scripts' common arguments only.
	stateScript scriptKind = "state"
	// nsScript: the namespace scripts' arguments and the namespace check.
	nsScript scriptKind = "ns"
	// plainScript: nothing.
	plainScript scriptKind = "plain"
)

func poolFn(name, body string) *script { return &script{name: name, kind: poolScript, body: body} }
func readFn(name, body string) *script {
	return &script{name: name, kind: poolScript, body: body, dry: true}
}
func nsFn(name, body string) *script    { return &script{name: name, kind: nsScript, body: body} }
func plainFn(name, body string) *script { return &script{name: name, kind: plainScript, body: body} }

// withFlags gives s Redis Functions flags: "'no-writes'" for a script that never
// writes, "'allow-oom'" for one that writes only what is missing (a few fields, once),
// so that both run while Redis is out of memory.
func (s *script) withFlags(flags string) *script {
	s.flags = flags
	return s
}

// library is a scriptSet as one Redis Functions library (FUNCTION LOAD): the helpers
// are made once, when Redis loads it, not at every call as a script's would be. Its
// name and its functions' names carry a hash of its text, so that replicas of two
// versions of keypool (or a test's broken script) never call each other's.
type library struct {
	name   string
	src    string
	prefix string
}

// libraryPrefix begins the name of every keypool library.
const libraryPrefix = "keypool_"

// fn is the name of script's function in l; dry, of its no-writes copy.
func (l *library) fn(s *script, dry bool) string {
	if dry {
		return l.prefix + s.name + "_dry"
	}
	return l.prefix + s.name
}

func newLibrary(set scriptSet) *library { return newLibraryFrom(libraryBase, set) }

// newLibraryFrom is newLibrary with helpers of its own (base), for benchmarks that
// measure what a part of them costs.
func newLibraryFrom(base string, set scriptSet) *library {
	var b strings.Builder
	b.WriteString(base)
	for _, s := range set.all() {
		fmt.Fprintf(&b, "\ndo -- %s\nlocal f = %s(function(KEYS, ARGV)\n%s\nend)\n", s.name, s.kind, s.body)
		fmt.Fprintf(&b, "redis.register_function{function_name = V .. '%s', callback = f, flags = {%s}}\n", s.name, s.flags)
		if s.dry {
			fmt.Fprintf(&b, "redis.register_function{function_name = V .. '%s_dry', callback = f, flags = {'no-writes'}}\n", s.name)
		}
		b.WriteString("end\n")
	}
	sum := sha1.Sum([]byte(b.String()))
	hash := hex.EncodeToString(sum[:6])
	l := &library{name: libraryPrefix + hash, prefix: "kp" + hash + "_"}
	l.src = "#!lua name=" + l.name + "\nlocal V = '" + l.prefix + "'\n" + b.String()
	return l
}

// layoutVersion is the version of the Redis layout below, stored with the namespace and
// with each pool: a replica refuses a namespace of another layout. Layout 1 (keypool
// before named pools) kept one pool under the namespace's own tag and stored no version;
// layout 2 had no keys held back and no imported keys; layout 3 kept a key as a hash,
// no lower bound of a pool's deadlines (due), and recorded replies as text.
const layoutVersion = "4"

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
// The first replica writes layout, secret, id and clock in one step (setup). The
// registry only grows (a pool once made stays, with its counters), so replicas cache
// it. A pool is made in two steps: registered (register, which enforces MaxPools),
// then its meta hash written (initpool, run again harmlessly by every replica that
// learns of the pool, so that a replica that stops in between leaves nothing half
// made).
//
// A pool, {ns:p}:
//
//	meta     HASH    id (the pool's id, derived from the secret and the name: it names
//	                 the pool's event stream and is checked by every script), index,
//	                 name, layout, qa and elc (-quarantine-after and
//	                 -expired-lease-cooldown, which replicas agree on), and the pool's
//	                 counters, which outlive its keys: keyseq behind its key numbers,
//	                 and ctr, three numbers packed by struct ('<ddd'): the fence behind
//	                 its lease fences and tokens, the seq behind its event seqs, and
//	                 due, a lower bound of the earliest deadline in leases, cools and
//	                 alive (2^53 when there is none; absent or 0: unknown), so that a
//	                 request finds nothing due without looking
//	avail    ZSET    numbers of the AVAILABLE keys, scored by number: a pick is a
//	                 uniform random rank (ZRANGE r r, O(log n)), and pages of List
//	                 are ranges by score
//	blocked  ZSET    numbers of the BLOCKED keys, scored by number, for List
//	leases   ZSET    numbers of the BLOCKED keys, scored by lease deadline
//	cooling  ZSET    numbers of the COOLING keys, scored by number, for List
//	cools    ZSET    numbers of the COOLING keys, scored by the end of the cool-down
//	quarantined
//	         ZSET    numbers of the QUARANTINED keys, scored by number
//	alive    ZSET    numbers of every key, scored by keep-alive deadline (FOREVER,
//	                 2^53-1, for a key kept until deleted)
//	secrets  HASH    the imported keys' secrets by digest (a keyed hash, never the
//	                 secret) -> key number, for the duplicate check
//	k:<n>    STRING  one key, its fields packed by struct (keyFormat), read and written
//	                 whole: the numbers c created, e keep-alive deadline, f fence of
//	                 the current lease (0 unless BLOCKED), la acquired at, ld lease
//	                 deadline, n times acquired, x leases expired, cu end of cool-down
//	                 (0 unless COOLING), q 1 if QUARANTINED, fl failures, cf
//	                 consecutive failures, kt the key's own keep-alive TTL (0: the
//	                 pool's, or, with e FOREVER, none at all), then the strings h the
//	                 holder of the lease that f names ("" for none), and, for an
//	                 imported key, nm its name, sd its secret's digest and s its sealed
//	                 secret
//	events:<id>
//	         STREAM  entry <seq>-0 per event: t type, k key number, at; d the deadline an
//	                 ACQUIRED, GENERATED or COOLED set; h the holder on ACQUIRED; by and
//	                 ap (replica, applied at) on RELEASED, RECOVERED and EXPIRED. Named by the pool id,
//	                 so that a replica of a lost namespace never reads the events of
//	                 the one made after it.
//	replies:<replica>
//	         HASH    the replies of one replica's requests in this pool, one field per
//	                 request slot: the request's generation and its reply, packed by
//	                 struct (see below); it expires when the replica stops running its
//	                 expirer for longer than any lease lasts
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
// own arguments from ARGV[8], so that redis-benchmark can drive it with
// "FCALL name 1 {ns:p}:meta args…". Replies are arrays {status, now, …} of integers,
// ending with strings where a key's holder, name or sealed secret are part of them;
// status 1 for success or one of the codes below.
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
//
// The library's helpers keep the state of one call in its upvalues, set as the call
// begins: Redis runs one function at a time.
const libraryBase = `
-- FOREVER is the keep-alive deadline of a key kept until deleted (the Store's forever);
-- NONE is the pool's due when it has no deadline at all.
local FOREVER, NONE = 2^53 - 1, 2^53

-- The state of the call: its arguments, the pool's keys (cached: they follow from
-- the arguments), and the pool's counters, read as it begins and written back once at
-- its end if they changed (dirty).
local P, POOL, BY, now, NOW, RETENTION, SLOT, GEN, DRY
local META, AVAIL, BLOCKED, LEASES, ALIVE, COOLING, QUAR, COOLS, SECRETS, STREAM, REPLIES
local FENCE, SEQ, DUE, QA, ELC, dirty

-- I formats an integer for Redis; tostring would turn 16 digits into 1.764e+15.
local function I(x) return string.format('%d', x) end
-- num reads an integer field of a hash, absent for 0.
local function num(x) return tonumber(x) or 0 end

-- begin reads the common arguments of a pool script.
local function begin(ARGV)
  if ARGV[1] ~= P or ARGV[4] ~= BY or ARGV[5] ~= POOL then
    P, BY, POOL = ARGV[1], ARGV[4], ARGV[5]
    META = P .. 'meta'
    AVAIL, BLOCKED, LEASES, ALIVE = P .. 'avail', P .. 'blocked', P .. 'leases', P .. 'alive'
    COOLING, QUAR, COOLS = P .. 'cooling', P .. 'quarantined', P .. 'cools'
    SECRETS = P .. 'secrets'
    STREAM = P .. 'events:' .. POOL
    REPLIES = P .. 'replies:' .. BY
  end
  now, NOW = tonumber(ARGV[2]), ARGV[2]
  if not now then
    local t = redis.call('TIME')
    now = tonumber(t[1]) * 1000000 + tonumber(t[2])
    NOW = nil
  end
  RETENTION, SLOT, GEN, DRY = ARGV[3], ARGV[6], tonumber(ARGV[7]), ARGV[7] == 'dry'
end

-- A reply is recorded packed by struct: its generation and how many numbers and
-- strings it holds ('<dBB'), then them (a reply's numbers come first), in a format
-- made once for each shape.
local formats = {}
local function format(ni, ns)
  local f = formats[ni * 256 + ns]
  if not f then
    f = '<' .. string.rep('d', ni) .. string.rep('s', ns)
    formats[ni * 256 + ns] = f
  end
  return f
end

-- recorded returns the generation and the reply recorded in a slot, or nil.
local function recorded(slot)
  local rec = redis.call('HGET', REPLIES, slot)
  if not rec then return nil, nil end
  local gen, ni, ns, at = struct.unpack('<dBB', rec)
  local r = {struct.unpack(format(ni, ns), rec, at)}
  r[#r] = nil -- where unpack stopped
  return gen, r
end

-- record records r as the reply of generation gen in slot.
local function record(slot, gen, r)
  local ni = #r
  while ni > 0 and type(r[ni]) == 'string' do ni = ni - 1 end
  redis.call('HSET', REPLIES, slot, struct.pack('<dBB', gen, ni, #r - ni) .. struct.pack(format(ni, #r - ni), unpack(r)))
end

-- done records r as the reply of this request, if it has a slot, and returns it.
local function done(r)
  if SLOT ~= '' then record(SLOT, GEN, r) end
  return r
end

-- open begins a pool script: its arguments, the pool check, its counters, and a
-- request sent again. It returns the reply to give at once, if any.
local function open(ARGV)
  begin(ARGV)
  local m = redis.call('HMGET', META, 'id', 'ctr', 'qa', 'elc')
  -- The pool this replica knows is gone (Redis lost the namespace, and perhaps a new
  -- one was made since, whose key numbers and fences start over under another
  -- secret): act on nothing.
  if m[1] ~= POOL then return {-9, now} end
  FENCE, SEQ, DUE = 0, 0, 0
  if m[2] then FENCE, SEQ, DUE = struct.unpack('<ddd', m[2]) end
  QA, ELC, dirty = num(m[3]), num(m[4]), false
  -- A request sent again: answer what it answered the first time, without running it.
  if SLOT ~= '' then
    local gen, first = recorded(SLOT)
    if gen == GEN then return first end
    if gen and gen > GEN then return {-8, now} end
  end
  return nil
end

-- The wrappers of the kinds of scripts (scriptKind).
local function pool(f)
  return function(KEYS, ARGV)
    local early = open(ARGV)
    if early then return early end
    local r = f(KEYS, ARGV)
    if dirty and not DRY then
      redis.call('HSET', META, 'ctr', struct.pack('<ddd', FENCE, SEQ, DUE))
    end
    return r
  end
end
local function state(f)
  return function(KEYS, ARGV)
    begin(ARGV)
    return f(KEYS, ARGV)
  end
end
local NS, POOLS, MADE
local function ns(f)
  return function(KEYS, ARGV)
    NS = ARGV[1]
    POOLS, MADE = NS .. 'pools', NS .. 'made'
    if redis.call('GET', NS .. 'id') ~= ARGV[2] then return {-9} end
    return f(KEYS, ARGV)
  end
end
local function plain(f) return f end

-- nows is now as text.
local function nows()
  if not NOW then NOW = I(now) end
  return NOW
end

local function emit(typ, n, at, ...)
  SEQ, dirty = SEQ + 1, true
  local ats
  if at == now then ats = nows() else ats = I(at) end
  redis.call('XADD', STREAM, 'MAXLEN', '~', RETENTION, I(SEQ) .. '-0', 't', typ, 'k', n, 'at', ats, ...)
end

-- lower notes a deadline d added to leases, cools or alive: due is a lower bound of
-- them all.
local function lower(d)
  if d < DUE then DUE, dirty = d, true end
end

-- A key's fields, packed in one STRING by struct in the order of KEY (keyFormat):
-- numbers, then strings; their indexes name them.
local KEY = '` + keyFormat + `'
local FC, FE, FF, FLA, FLD, FN, FX, FCU, FQ, FFL, FCF, FKT = 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12
local FH, FNM, FSD, FS = 13, 14, 15, 16

-- fields returns the fields of key n, or nil if there is no such key; v[17] is the
-- key's name in Redis.
local function fields(n)
  local name = P .. 'k:' .. n
  local packed = redis.call('GET', name)
  if not packed then return nil end
  local v = {struct.unpack(KEY, packed)}
  v[17] = name -- in place of where unpack stopped
  return v
end

-- store writes the fields v of a key, as fields read them.
local function store(v)
  redis.call('SET', v[17], struct.pack(KEY, unpack(v, 1, 16)))
end

-- status is the status code of a key's fields: 1 AVAILABLE, 2 BLOCKED, 3 COOLING, 4
-- QUARANTINED.
local function status(v)
  if v[FF] ~= 0 then return 2 end
  if v[FCU] ~= 0 then return 3 end
  if v[FQ] ~= 0 then return 4 end
  return 1
end

-- drop removes key n (fields v, or nil to read them) from every structure of the pool.
local function drop(n, v)
  v = v or fields(n)
  if v and v[FSD] ~= '' then redis.call('HDEL', SECRETS, v[FSD]) end
  redis.call('DEL', P .. 'k:' .. n)
  redis.call('ZREM', AVAIL, n)
  redis.call('ZREM', BLOCKED, n)
  redis.call('ZREM', LEASES, n)
  redis.call('ZREM', ALIVE, n)
  redis.call('ZREM', COOLING, n)
  redis.call('ZREM', COOLS, n)
  redis.call('ZREM', QUAR, n)
end

local function expire_key(n, deadline, v)
  drop(n, v)
  emit('EXPIRED', n, deadline, 'by', BY, 'ap', nows())
end

-- after_lease sends the BLOCKED key n (fields v), whose lease ended at (now, or the
-- lease's deadline), where the contract's table says: a failure counted (failed true)
-- or the consecutive count reset (false; nil leaves the counts as they are), then
-- QUARANTINED at -quarantine-after consecutive failures, else COOLING until
-- at+cooldown if cooldown is not zero, else AVAILABLE; and writes v.
local function after_lease(n, v, at, failed, cooldown)
  redis.call('ZREM', LEASES, n)
  redis.call('ZREM', BLOCKED, n)
  v[FF] = 0
  if failed then
    v[FFL], v[FCF] = v[FFL] + 1, v[FCF] + 1
  elseif failed == false then
    v[FCF] = 0
  end
  if failed and QA > 0 and v[FCF] >= QA then
    v[FQ] = 1
    redis.call('ZADD', QUAR, n, n)
    emit('QUARANTINED', n, at)
  elseif cooldown > 0 then
    v[FCU] = at + cooldown
    local cu = I(v[FCU])
    redis.call('ZADD', COOLING, n, n)
    redis.call('ZADD', COOLS, cu, n)
    lower(v[FCU])
    emit('COOLED', n, at, 'd', cu)
  else
    redis.call('ZADD', AVAIL, n, n)
  end
  store(v)
end

-- release ends the lease of key n (fields v, or nil to read them), which ran out at
-- deadline.
local function release(n, deadline, v)
  v = v or fields(n)
  v[FX] = v[FX] + 1
  emit('RELEASED', n, deadline, 'by', BY, 'ap', nows())
  after_lease(n, v, deadline, true, ELC)
end

-- unblock ends the lease of the BLOCKED key n (fields v) at a client's request; failed
-- and cooldown as after_lease takes them.
local function unblock(n, v, failed, cooldown)
  emit('UNBLOCKED', n, now)
  after_lease(n, v, now, failed, cooldown)
end

-- recover returns the COOLING key n (fields v, or nil to read them), whose cool-down
-- ended at deadline, to AVAILABLE.
local function recover(n, deadline, v)
  v = v or fields(n)
  v[FCU] = 0
  store(v)
  redis.call('ZREM', COOLING, n)
  redis.call('ZREM', COOLS, n)
  redis.call('ZADD', AVAIL, n, n)
  emit('RECOVERED', n, deadline, 'by', BY, 'ap', nows())
end

-- seen turns the fields of a key, read by a dry read, into what they would be once the
-- key's due holds ended (as settle would leave them).
local function seen(v)
  local e = v[FE]
  if v[FF] ~= 0 and v[FLD] <= now and v[FLD] < e then
    v[FF], v[FX], v[FFL], v[FCF] = 0, v[FX] + 1, v[FFL] + 1, v[FCF] + 1
    if QA > 0 and v[FCF] >= QA then
      v[FQ] = 1
    elseif ELC > 0 then
      v[FCU] = v[FLD] + ELC
    end
  end
  if v[FCU] ~= 0 and v[FCU] <= now and v[FCU] < e then v[FCU] = 0 end
  return v
end

-- settle applies the due transitions of key n, in deadline order, and returns its
-- fields as they are then, or nil if the key is gone. A hold (lease or cool-down) and
-- a keep-alive that end at one instant end with the key. A lease that ran out may
-- start a cool-down that has ended too. A dry read changes nothing and returns the
-- fields as they would be.
local function settle(n)
  local v = fields(n)
  if not v then return nil end
  local e = v[FE]
  if DRY then
    if e > now then return seen(v) end
    return nil
  end
  if v[FF] ~= 0 and v[FLD] <= now and v[FLD] < e then release(n, v[FLD], v) end
  if v[FCU] ~= 0 and v[FCU] <= now and v[FCU] < e then recover(n, v[FCU], v) end
  if e <= now then
    expire_key(n, e, v)
    return nil
  end
  return v
end

local function head(z)
  local r = redis.call('ZRANGE', z, 0, 0, 'WITHSCORES')
  if r[1] then return r[1], tonumber(r[2]) end
  return nil, nil
end

-- apply_due applies up to limit due transitions of the pool in deadline order,
-- keep-alive first on a tie, each one popped from its sorted set as it is applied, so
-- no two callers ever apply one transition twice. It returns how many it applied and
-- the earliest deadline left, or a lower bound of it (-1 if none): nothing is due
-- while the pool's due is in the future. A dry read applies none.
local function apply_due(limit)
  if DUE > now then
    if DUE >= NONE then return 0, -1 end
    return 0, DUE
  end
  if DRY then limit = 0 end
  local applied = 0
  while true do
    local ln, ls = head(LEASES)
    local cn, cs = head(COOLS)
    local kn, ks = head(ALIVE)
    local hn, hs, lease = ln, ls, true
    if cs and (not ls or cs < ls) then hn, hs, lease = cn, cs, false end
    local n, d, hold = kn, ks, false
    if hs and (not ks or hs < ks) then n, d, hold = hn, hs, true end
    if not n then d = NONE end
    if d ~= DUE then DUE, dirty = d, true end
    if not n then return applied, -1 end
    if d > now or applied >= limit then return applied, d end
    if not hold then expire_key(n, d) elseif lease then release(n, d) else recover(n, d) end
    applied = applied + 1
  end
end

-- ints are the integers of a key's fields as a reply gives them: {n, c, e, f, la, ld,
-- times acquired, leases expired, cooling until, quarantined, failures, consecutive
-- failures}, appended to out.
local function ints(out, n, v)
  out[#out + 1] = tonumber(n)
  for i = 1, 11 do out[#out + 1] = v[i] end
  return out
end

-- holder_of is the holder of the current lease of a key's fields ("" for none).
local function holder_of(v)
  if v[FF] ~= 0 then return v[FH] end
  return ''
end

-- reply is key n (fields v) as the Store reads it: {1, now, the integers of ints,
-- holder, name}, then, when secret, the key's sealed secret ("" for a generated key);
-- the holder is the current lease's only.
local function reply(n, v, secret)
  local out = ints({1, now}, n, v)
  out[#out + 1] = holder_of(v)
  out[#out + 1] = v[FNM]
  if secret then out[#out + 1] = v[FS] end
  return out
end
`

// keyFormat is how a key's fields are packed (struct): twelve numbers, four strings.
const keyFormat = "<ddddddddddddssss"

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
	statusNotHeldBack = -11
	statusDuplicate   = -12 // a secret held already: the index of the first follows
)

// The bounds of keystore, as Lua text.
var (
	requestBatch = strconv.Itoa(keystore.RequestBatch)
	maxPicks     = strconv.Itoa(keystore.MaxPicks)
	maxLocalText = strconv.FormatUint(maxLocal, 10)
)

// ARGV[8] pool index, ARGV[9] pool name, ARGV[10] -quarantine-after, ARGV[11]
// -expired-lease-cooldown in script time. Reply {1, now}. It writes the meta hash of a
// registered pool if it is not there yet, and the two settings if they changed; it
// refuses a pool whose id differs (the namespace was lost and made anew), and a new
// pool whose hash tag already holds keys (which this store did not write: a namespace
// named like this pool's tag?).
var scriptInitPool = (&script{name: "initpool", kind: stateScript, body: `
local id = redis.call('HGET', META, 'id')
if id == POOL then
  if redis.call('HGET', META, 'layout') ~= '` + layoutVersion + `' then return {-10, now} end
  -- The settings every replica agreed on at its start: new values once all replicas
  -- restart with them. (Written only if they differ: a replica learns pools while Redis
  -- is full too.)
  local v = redis.call('HMGET', META, 'qa', 'elc')
  if v[1] ~= ARGV[10] or v[2] ~= ARGV[11] then redis.call('HSET', META, 'qa', ARGV[10], 'elc', ARGV[11]) end
  return {1, now}
end
if id then return {-9, now} end
if redis.call('EXISTS', AVAIL, BLOCKED, LEASES, ALIVE, COOLING, COOLS, QUAR, SECRETS) > 0 then return {-10, now} end
redis.call('HSET', META, 'id', POOL, 'index', ARGV[8], 'name', ARGV[9], 'layout', '` + layoutVersion + `',
  'qa', ARGV[10], 'elc', ARGV[11])
return {1, now}
`}).withFlags("'allow-oom'")

// reserveSource is what the scripts that make keys begin with: reserve takes count key
// numbers of the pool and returns the first, or nil if the pool's numbers would run out.
var reserveSource = `
local function reserve(count)
  if num(redis.call('HGET', META, 'keyseq')) + count > ` + maxLocalText + ` then return nil end
  return redis.call('HINCRBY', META, 'keyseq', count) - count + 1
end
`

// ARGV[8] count, ARGV[9] keep-alive TTL. Reply {1, now, first key number, keep-alive
// deadline}, or {-6, now} if the pool's key numbers would run out.
var scriptGenerate = poolFn("generate", reserveSource+`
local count = tonumber(ARGV[8])
local e = now + tonumber(ARGV[9])
local first = reserve(count)
if not first then return done({-6, now}) end
local last = first + count - 1
local d = I(e)
local packed = struct.pack(KEY, now, e, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, '', '', '', '')
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
  redis.call('SET', P .. 'k:' .. n, packed)
  emit('GENERATED', n, now, 'd', d)
  alive[#alive + 1] = d
  alive[#alive + 1] = n
  avail[#avail + 1] = n
  avail[#avail + 1] = n
  if #alive == 2000 then flush() end
end
flush()
lower(e)
return done({1, now, first, e})
`)

// ARGV[8] count. Reply {1, now, first key number}: count key numbers reserved for an
// import, or {-6, now} if the pool's key numbers would run out.
var scriptReserve = poolFn("reserve", reserveSource+`
local first = reserve(tonumber(ARGV[8]))
if not first then return done({-6, now}) end
return done({1, now, first})
`)

// ARGV[8] the first of the key numbers reserved, ARGV[9] count, ARGV[10] keep-alive TTL
// (0: kept until deleted), then for each key from ARGV[11] on, its secret's digest, its
// name ("" for none) and its sealed secret. Reply {1, now, keep-alive deadline}, or
// {-12, now, index} for the first key (from 0) whose digest the pool holds (a key
// whose keep-alive has passed holds it no more) or an earlier key repeats: then
// nothing is imported.
var scriptImport = poolFn("import", `
local first, count, ttl = tonumber(ARGV[8]), tonumber(ARGV[9]), tonumber(ARGV[10])
local given = {}
for i = 0, count - 1 do
  local d = ARGV[11 + 3 * i]
  local held_by = redis.call('HGET', SECRETS, d)
  if given[d] or (held_by and settle(held_by)) then return done({-12, now, i}) end
  given[d] = true
end
local e = FOREVER
if ttl > 0 then e = now + ttl end
local ed = I(e)
for i = 0, count - 1 do
  local n = I(first + i)
  local d, name = ARGV[11 + 3 * i], ARGV[12 + 3 * i]
  store({now, e, 0, 0, 0, 0, 0, 0, 0, 0, 0, ttl, '', name, d, ARGV[13 + 3 * i], P .. 'k:' .. n})
  redis.call('HSET', SECRETS, d, n)
  redis.call('ZADD', ALIVE, ed, n)
  redis.call('ZADD', AVAIL, n, n)
  if ttl > 0 then emit('IMPORTED', n, now, 'd', ed) else emit('IMPORTED', n, now) end
end
lower(e)
return done({1, now, e})
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
var scriptAcquire = poolFn("acquire", acquireSource)

var acquireSource = `
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
    free = redis.call('ZCARD', ALIVE) - redis.call('ZCOUNT', ALIVE, '-inf', nows())
    free = free - redis.call('ZCOUNT', LEASES, '(' .. nows(), '+inf') - redis.call('ZCOUNT', COOLS, '(' .. nows(), '+inf')
    free = free - redis.call('ZCARD', QUAR)
  end
  if free <= reserve then return done({-1, now}) end
end

-- take leases the AVAILABLE key n (fields v).
local function take(n, v)
  FENCE, dirty = FENCE + 1, true
  local ld = now + ttl
  v[FF], v[FLA], v[FLD], v[FH], v[FN] = FENCE, now, ld, holder, v[FN] + 1
  store(v)
  redis.call('ZREM', AVAIL, n)
  redis.call('ZADD', BLOCKED, n, n)
  local lds = I(ld)
  redis.call('ZADD', LEASES, lds, n)
  lower(ld)
  if holder ~= '' then
    emit('ACQUIRED', n, now, 'd', lds, 'h', holder)
  else
    emit('ACQUIRED', n, now, 'd', lds)
  end
  return done(reply(n, v, true))
end

local function rank(z, r) return redis.call('ZRANGE', z, r, r)[1] end

if settled then
  local m = redis.call('ZCARD', AVAIL)
  if m == 0 then return done({-1, now}) end
  local n = rank(AVAIL, rand_below(m))
  return take(n, fields(n))
end

local leases_due = redis.call('ZCOUNT', LEASES, '-inf', nows()) > 0 or redis.call('ZCOUNT', COOLS, '-inf', nows()) > 0
for i = 1, ` + maxPicks + ` do
  if i % 2 == 1 and not leases_due then
    local m = redis.call('ZCARD', AVAIL)
    if m == 0 then return done({-1, now}) end -- nothing AVAILABLE and no lease has run out
    local n = rank(AVAIL, rand_below(m))
    local v = fields(n)
    if v[FE] > now then return take(n, v) end
    expire_key(n, v[FE], v)
  else
    local dead = redis.call('ZCOUNT', ALIVE, '-inf', nows())
    local live = redis.call('ZCARD', ALIVE) - dead
    if live <= 0 then return done({-1, now}) end
    local n = rank(ALIVE, dead + rand_below(live))
    -- A live key: settle ends its due holds only, and it is taken if that leaves it
    -- AVAILABLE.
    local v = settle(n)
    if v and status(v) == 1 then return take(n, v) end
  end
end
return done({-4, now})
`

// ARGV[8] key number, ARGV[9] fence the caller's token names (0: no token, -1: a token
// that names no lease), ARGV[10] cool-down in script time (absent: 0), ARGV[11] "1" if
// the lease failed.
var scriptUnblock = poolFn("unblock", unblockSource)

const unblockSource = `
local n = I(tonumber(ARGV[8]))
local v = settle(n)
if not v then return done({-1, now}) end
local f = v[FF]
if f == 0 then return done({-2, now}) end
local want = tonumber(ARGV[9])
if want ~= 0 and want ~= f then return done({-3, now}) end
unblock(n, v, ARGV[11] == '1', tonumber(ARGV[10]) or 0)
return done(reply(n, v))
`

// ARGV[8] key number, ARGV[9] fence, ARGV[10] TTL, ARGV[11] max lease TTL.
var scriptRenew = poolFn("renew", `
local n = I(tonumber(ARGV[8]))
local v = settle(n)
if not v then return done({-1, now}) end
local f = v[FF]
if f == 0 then return done({-2, now}) end
if tonumber(ARGV[9]) ~= f then return done({-3, now}) end
local ld = math.min(now + tonumber(ARGV[10]), v[FLA] + tonumber(ARGV[11]))
v[FLD] = ld
store(v)
redis.call('ZADD', LEASES, I(ld), n)
lower(ld)
return done(reply(n, v, true))
`)

// ARGV[8] key number, ARGV[9] the pool's keep-alive TTL, for keys without one of their
// own (kt). A key kept until deleted stays so.
var scriptKeepAlive = poolFn("keepalive", `
local n = I(tonumber(ARGV[8]))
local v = settle(n)
if not v then return done({-1, now}) end
if v[FE] >= FOREVER then return done(reply(n, v)) end
local e = now + tonumber(ARGV[9])
if v[FKT] ~= 0 then e = now + v[FKT] end
v[FE] = e
store(v)
redis.call('ZADD', ALIVE, I(e), n)
lower(e)
return done(reply(n, v))
`)

// ARGV[8] key number.
var scriptGet = readFn("get", `
local n = I(tonumber(ARGV[8]))
local v = settle(n)
if not v then return done({-1, now}) end
return done(reply(n, v))
`)

// ARGV[8] key number. A COOLING or QUARANTINED key to AVAILABLE, its consecutive
// failures reset; -11 for a key in another state.
var scriptRestore = poolFn("restore", `
local n = I(tonumber(ARGV[8]))
local v = settle(n)
if not v then return done({-1, now}) end
if v[FCU] ~= 0 then
  redis.call('ZREM', COOLING, n)
  redis.call('ZREM', COOLS, n)
elseif v[FQ] ~= 0 then
  redis.call('ZREM', QUAR, n)
else
  return done({-11, now})
end
v[FCU], v[FQ], v[FCF] = 0, 0, 0
store(v)
redis.call('ZADD', AVAIL, n, n)
emit('RESTORED', n, now)
return done(reply(n, v))
`)

// ARGV[8] key number. Reply {1, now}.
var scriptDelete = poolFn("delete", `
local n = I(tonumber(ARGV[8]))
local v = settle(n)
if not v then return done({-1, now}) end
drop(n, v)
emit('DELETED', n, now)
return done({1, now})
`)

// Reply {1, now, total, available, blocked, cooling, quarantined}. Exact when the
// request batch applied every due transition; in a storm that it could not finish,
// total is still exact (live keys of the keep-alive set), blocked and cooling count
// the holds that have not ended (a lease that ran out within the lock-delay counts as
// cooling, even if it will quarantine the key) and quarantined the keys QUARANTINED,
// which may include keys whose keep-alive has passed until the expirer reaches them.
var scriptStats = readFn("stats", `
local _, next = apply_due(`+requestBatch+`)
local total = redis.call('ZCARD', ALIVE)
if next < 0 or next > now then
  return done({1, now, total, redis.call('ZCARD', AVAIL), redis.call('ZCARD', LEASES),
    redis.call('ZCARD', COOLING), redis.call('ZCARD', QUAR)})
end
total = total - redis.call('ZCOUNT', ALIVE, '-inf', nows())
local blocked = math.min(total, redis.call('ZCOUNT', LEASES, '(' .. nows(), '+inf'))
-- Cooling: the cool-downs that have not ended, and the leases that ran out within the
-- lock-delay of -expired-lease-cooldown (unless they reached -quarantine-after).
local cooling = redis.call('ZCOUNT', COOLS, '(' .. nows(), '+inf')
if ELC > 0 then cooling = cooling + redis.call('ZCOUNT', LEASES, '(' .. I(now - ELC), nows()) end
cooling = math.min(total - blocked, cooling)
local quarantined = math.min(total - blocked - cooling, redis.call('ZCARD', QUAR))
return done({1, now, total, total - blocked - cooling - quarantined, blocked, cooling, quarantined})
`)

// ARGV[8] status (0 any, 1 AVAILABLE, 2 BLOCKED, 3 COOLING, 4 QUARANTINED), ARGV[9]
// the least key number, ARGV[10] the most keys to return, ARGV[11] the most keys to
// look at. Reply {1, now, resume, count, then count records of 12 integers (as
// reply's), then their count holders, then their count names}: the keys of that
// status from the number on, in order, as they are once their due transitions are
// applied (a lease that ran out lists as AVAILABLE, COOLING or QUARANTINED as it
// ends, a key whose keep-alive passed not at all). resume is -1 when the keys listed
// are all there are, or when count reached the most; else the number to go on from,
// for a next call: a page never looks at more keys than ARGV[11], though in a storm
// the expirer has yet to reach most of the candidates may be dead keys, each deleted
// as it is looked at.
//
// The keys come from the sets of each state by score (ZRANGE BYSCORE LIMIT, O(log n +
// the page)): a page of one status never looks at keys of another.
var scriptList = readFn("list", `
apply_due(`+requestBatch+`)
local want, from = tonumber(ARGV[8]), tonumber(ARGV[9])
local limit, budget = tonumber(ARGV[10]), tonumber(ARGV[11])
local SETS = {AVAIL, BLOCKED, COOLING, QUAR}
local function range(z, k)
  return redis.call('ZRANGE', z, I(from), '+inf', 'BYSCORE', 'LIMIT', 0, k)
end
-- (A dry read looks at every set but BLOCKED's for the keys of a state other than
-- BLOCKED: a hold that has ended is still where it was.)
local function candidates(k)
  if want ~= 0 and (want == 2 or not DRY) then return range(SETS[want], k) end
  -- The first k of the sets, merged in order of number.
  local lists, at, ns = {}, {}, {}
  for i, z in ipairs(SETS) do lists[i], at[i] = range(z, k), 1 end
  while #ns < k do
    local best
    for i = 1, #SETS do
      local m = lists[i][at[i]]
      if m and (not best or tonumber(m) < tonumber(lists[best][at[best]])) then best = i end
    end
    if not best then break end
    ns[#ns + 1], at[best] = lists[best][at[best]], at[best] + 1
  end
  return ns
end
local recs, holders, names = {}, {}, {}
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
    -- One read of the key, unless a deadline of it is due: then settle it.
    local v = fields(n)
    if v and (v[FE] <= now or v[FF] ~= 0 and v[FLD] <= now or v[FCU] ~= 0 and v[FCU] <= now) then v = settle(n) end
    if v and (want == 0 or want == status(v)) then
      ints(recs, n, v)
      holders[#holders + 1] = holder_of(v)
      names[#names + 1] = v[FNM]
    end
  end
  if resume >= 0 then break end
end
local out = {1, now, resume, #holders}
for _, v in ipairs(recs) do out[#out + 1] = v end
for _, h in ipairs(holders) do out[#out + 1] = h end
for _, name in ipairs(names) do out[#out + 1] = name end
return out
`)

// ARGV[8] batch size, ARGV[9] how long (ms) the replica's replies outlive its last
// expirer run. Reply {1, now, applied, earliest deadline left, or a lower bound of it,
// or -1}. It also keeps the replica's replies in the pool from expiring while the
// replica runs.
var scriptExpire = poolFn("expire", `
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
var scriptResolve = poolFn("resolve", `
local slot, gen = ARGV[8], tonumber(ARGV[9])
local g, r = recorded(slot)
local freed = {-7, now}
if g == gen then
  if r[1] == -7 then return r end -- resolved before
  if ARGV[10] == '1' and r[1] == 1 then
    local n, fence = I(r[3]), r[6]
    local v = settle(n)
    if v and v[FF] == fence then
      unblock(n, v, nil, 0)
      freed = {-7, now, r[3], fence}
    end
  end
elseif g and g > gen then
  return freed
end
record(slot, gen, freed)
return freed
`)

// Reply {1, now}: the pool is the one the replica knows.
var scriptCheck = poolFn("check", `
return {1, now}
`).withFlags("'no-writes'")

// The namespace's scripts take KEYS[1] the namespace's id key, ARGV[1] the namespace's
// key prefix "{ns}:", and, but for setup, ARGV[2] the namespace id the replica knows,
// which they check first.

// ARGV[2] layout version, ARGV[3] a new secret, ARGV[4] its namespace id, ARGV[5] this
// replica's clock. The first replica stores the four; every replica gets back {layout,
// secret, id, clock} as stored. A namespace of another layout answers {layout} alone;
// one that holds the keys of layout 1, which stored no version, answers {"1"}.
var scriptSetup = plainFn("setup", `
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
`).withFlags("'allow-oom'")

// ARGV[3] pool name, ARGV[4] the most pools. Reply {1, index} of the pool, registered
// now if it was not, or {-5} if MaxPools are registered already.
var scriptRegister = nsFn("register", `
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
var scriptLookup = nsFn("lookup", `
return {1, tonumber(redis.call('HGET', POOLS, ARGV[3])) or 0}
`).withFlags("'no-writes'")

// ARGV[3] a pool index. Reply {1, n, then n indexes, then their n names}: the pools
// made after that index, in order.
var scriptRegistry = nsFn("registry", `
local entries = redis.call('XRANGE', MADE, (tonumber(ARGV[3]) + 1) .. '-0', '+')
local out, names = {1, #entries}, {}
for _, e in ipairs(entries) do
  out[#out + 1] = tonumber(string.match(e[1], '^%d+'))
  names[#names + 1] = e[2][2]
end
for _, name in ipairs(names) do out[#out + 1] = name end
return out
`).withFlags("'no-writes'")

// ARGV[3], ARGV[4], … pairs of a setting's name and this replica's value of it. Reply
// {1, then the value recorded for each setting}: this replica's own where none was,
// unless its own is "" (none, as a replica without a secrets key has): that is never
// recorded, and reads as "" while nothing is.
var scriptSettings = nsFn("settings", `
local SETTINGS = NS .. 'settings'
local out = {1}
for i = 3, #ARGV, 2 do
  local v = redis.call('HGET', SETTINGS, ARGV[i])
  if not v then
    v = ARGV[i + 1]
    if v ~= '' then redis.call('HSET', SETTINGS, ARGV[i], v) end
  end
  out[#out + 1] = v
end
return out
`).withFlags("'allow-oom'")

// Reply {1}: the namespace is the one the replica joined.
var scriptNSCheck = nsFn("nscheck", `
return {1}
`).withFlags("'no-writes'")

// scriptSet is the scripts a Store runs, as one library; tests swap one for a broken
// one to show that the linearizability check catches it.
type scriptSet struct {
	generate, reserve, importKeys, acquire, unblock, restore, renew, keepAlive, get, delete, stats, list, expire, resolve, check, initPool *script
	setup, register, lookup, registry, nsCheck, settings, replicas                                                                         *script
}

func (set scriptSet) all() []*script {
	return []*script{set.generate, set.reserve, set.importKeys, set.acquire, set.unblock, set.restore, set.renew, set.keepAlive, set.get, set.delete,
		set.stats, set.list, set.expire, set.resolve, set.check, set.initPool,
		set.setup, set.register, set.lookup, set.registry, set.nsCheck, set.settings, set.replicas}
}

var defaultScripts = scriptSet{
	generate:   scriptGenerate,
	reserve:    scriptReserve,
	importKeys: scriptImport,
	acquire:    scriptAcquire,
	unblock:    scriptUnblock,
	restore:    scriptRestore,
	renew:      scriptRenew,
	keepAlive:  scriptKeepAlive,
	get:        scriptGet,
	delete:     scriptDelete,
	stats:      scriptStats,
	list:       scriptList,
	expire:     scriptExpire,
	resolve:    scriptResolve,
	check:      scriptCheck,
	initPool:   scriptInitPool,
	setup:      scriptSetup,
	register:   scriptRegister,
	lookup:     scriptLookup,
	registry:   scriptRegistry,
	nsCheck:    scriptNSCheck,
	settings:   scriptSettings,
	replicas:   scriptReplicas,
}

// defaultLibrary is defaultScripts' library.
var defaultLibrary = newLibrary(defaultScripts)

// scripts lists the pool scripts by name, for the benchmarks that run them by hand
// (bench_test.go); the Store loads and runs its scriptSet.
var scripts = map[string]*script{
	"generate":  scriptGenerate,
	"reserve":   scriptReserve,
	"import":    scriptImport,
	"acquire":   scriptAcquire,
	"unblock":   scriptUnblock,
	"restore":   scriptRestore,
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
