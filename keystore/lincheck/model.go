// Package lincheck checks that a keystore.Store is linearizable: it drives a pool from
// many concurrent clients through the keystore.Store interface, records every call
// with when it started and when it returned, and has porcupine search for an order of
// the calls, each taking effect at one instant between its start and its return, in
// which a sequential model of the pool gives every answer the store gave. A history
// for which no such order exists is a violation.
//
// The model knows pools (an acquire takes a key of its own pool only; NOT_FOUND only
// when no key of that pool is free; fences grow across each pool's leases), acquire, unblock with and without a token (NOT_BLOCKED, LEASE_MISMATCH), renew,
// keep-alive, delete, get and generate, and NOT_FOUND for keys that are gone or never
// were; and the keys held back: an unblock with a cool-down sends a key to COOLING, one
// that records a failure counts it, QuarantineAfter in a row send the key to
// QUARANTINED, and restore brings either back (NOT_HELD_BACK for a key not held back).
// Deadlines are outside it (no cool-down ends): the stores run on a clock that stands still, with
// TTLs that never run out. A call answered UNAVAILABLE may or may not have taken
// effect; the model allows both (and, for an Acquire, the store's freeing of the key
// later, recorded as a Release).
//
// It is used by the stores' tests only.
package lincheck

import (
	"encoding/binary"
	"fmt"
	"hash/fnv"
	"slices"
	"strings"

	"github.com/anishathalye/porcupine"

	"github.com/keypool/keypool/keystore"
)

// Kind names a call.
type Kind uint8

// The calls of the model.
const (
	Acquire Kind = iota
	Unblock
	Renew
	KeepAlive
	Delete
	Get
	Generate
	// Release is the store freeing, on its own, a key leased by an Acquire that was
	// answered UNAVAILABLE (so nobody holds its token).
	Release
	// Restore returns a COOLING or QUARANTINED key to AVAILABLE.
	Restore
)

var kindNames = [...]string{"acquire", "unblock", "renew", "keepAlive", "delete", "get", "generate", "release", "restore"}

// QuarantineAfter is the pool's -quarantine-after in checked runs (Options).
const QuarantineAfter = 2

// What holds a key back, in keyState.held and Output.Held.
const (
	notHeld uint8 = iota
	cooling
	quarantined
)

func (k Kind) String() string { return kindNames[k] }

// Fences a call can carry besides a lease's.
const (
	// NoToken is an unblock without a token.
	NoToken int64 = 0
	// ForeignToken is a token that names no lease of the pool.
	ForeignToken int64 = -2
	// unknownFence is a key's fence in the model when the Acquire that leased it was
	// answered UNAVAILABLE: BLOCKED, under a fence nobody was told.
	unknownFence int64 = -1
)

// NoKey is the key of a call on an id that names no key the history has seen.
const NoKey = -1

// MaxPools is how many pools a checked history may use.
const MaxPools = 4

// Input is a call: its kind, the key it names (an index the history gives each id),
// the fence of the token it carries, Generate's count, and the pool (an index below
// MaxPools) of an Acquire or a Generate.
type Input struct {
	Kind  Kind
	Key   int
	Fence int64
	// TokenKey is the key whose lease the token was given for (NoKey for none, or a
	// foreign token): a token names its key's lease, and two pools' leases may share
	// a fence.
	TokenKey int
	Count    int
	Pool     uint8
	// Cooldown and Failed are an Unblock's options: a cool-down (that never ends in a
	// checked run), a failure recorded.
	Cooldown, Failed bool
}

// Seeded is a key that exists, AVAILABLE, before the history starts, and its pool.
type Seeded struct {
	Key  int
	Pool uint8
}

// Output is an answer. Code is "" for success; Unknown marks an UNAVAILABLE answer,
// which says nothing of whether the call took effect. On success Key, Blocked and
// Fence describe the key the call returned (Acquire: the key leased), Keys the keys
// Generate made.
type Output struct {
	Code    keystore.Code
	Unknown bool
	Key     int
	Blocked bool
	Fence   int64
	Keys    []int
	// Held says whether the key returned is COOLING or QUARANTINED (HeldOf).
	Held uint8
}

// HeldOf is the Output.Held of a key in state status.
func HeldOf(status keystore.Status) uint8 {
	switch status {
	case keystore.Cooling:
		return cooling
	case keystore.Quarantined:
		return quarantined
	}
	return notHeld
}

// keyState is one key of the model: fence 0 when AVAILABLE, the current lease's when
// BLOCKED, unknownFence when BLOCKED by an Acquire of unknown outcome whose fence no
// answer has shown yet. orphan marks a lease granted to an Acquire of unknown outcome:
// the only kind the store may free on its own (Release).
type keyState struct {
	key    int
	fence  int64
	orphan bool
	pool   uint8
	held   uint8 // notHeld, cooling or quarantined; fence is 0 when held
	fails  uint8 // consecutive failures
}

// state is the model's pool. It is never modified: steps build new states.
type state struct {
	keys      []keyState      // by key
	lastFence [MaxPools]int64 // by pool, the largest fence granted so far
	// phantoms counts, by pool, keys that Generates of unknown outcome may have made,
	// whose ids nobody was told. An Acquire may return one; a NOT_FOUND does not count
	// them, so the model accepts a little more than the store may do, never less.
	phantoms [MaxPools]int
}

func (s state) find(key int) int {
	i, ok := slices.BinarySearchFunc(s.keys, key, func(k keyState, key int) int { return k.key - key })
	if !ok {
		return -1
	}
	return i
}

func (s state) with(k keyState) state {
	keys := slices.Clone(s.keys)
	if i := s.find(k.key); i >= 0 {
		keys[i] = k
	} else {
		i, _ := slices.BinarySearchFunc(keys, k.key, func(k keyState, key int) int { return k.key - key })
		keys = slices.Insert(keys, i, k)
	}
	s.keys = keys
	return s
}

func (s state) without(key int) state {
	if i := s.find(key); i >= 0 {
		s.keys = slices.Delete(slices.Clone(s.keys), i, i+1)
	}
	return s
}

// pinned is s once the fence of k's lease is known: a lease granted before every
// later one of its pool.
func (s state) pinned(k keyState, fence int64) state {
	s = s.with(keyState{key: k.key, fence: fence, orphan: true, pool: k.pool})
	s.lastFence[k.pool] = max(s.lastFence[k.pool], fence)
	return s
}

func (s state) anyAvailable(pool uint8) bool {
	for _, k := range s.keys {
		if k.fence == 0 && k.held == notHeld && k.pool == pool {
			return true
		}
	}
	return false
}

// Model is the sequential specification of a pool, for porcupine.
func Model(initial []Seeded) porcupine.Model {
	nm := porcupine.NondeterministicModel{
		Init: func() []any {
			s := state{}
			for _, k := range initial {
				s = s.with(keyState{key: k.Key, pool: k.Pool})
			}
			return []any{s}
		},
		Step: func(st, in, out any) []any {
			return step(st.(state), in.(Input), out.(Output))
		},
		Equal: func(a, b any) bool {
			x, y := a.(state), b.(state)
			return x.lastFence == y.lastFence && x.phantoms == y.phantoms && slices.Equal(x.keys, y.keys)
		},
		Hash: func(st any) uint64 {
			s := st.(state)
			h := fnv.New64a()
			var b [8]byte
			word := func(v uint64) {
				binary.LittleEndian.PutUint64(b[:], v)
				h.Write(b[:])
			}
			for p := range MaxPools {
				word(uint64(s.lastFence[p]))
				word(uint64(s.phantoms[p]))
			}
			for _, k := range s.keys {
				word(uint64(k.key))
				word(uint64(k.fence))
				word(uint64(k.pool))
				word(uint64(k.held)<<8 | uint64(k.fails))
			}
			return h.Sum64()
		},
		DescribeOperation: describe,
		DescribeState: func(st any) string {
			s := st.(state)
			parts := make([]string, 0, len(s.keys))
			for _, k := range s.keys {
				switch {
				case k.held == cooling:
					parts = append(parts, fmt.Sprintf("p%d/k%d cooling", k.pool, k.key))
				case k.held == quarantined:
					parts = append(parts, fmt.Sprintf("p%d/k%d quarantined", k.pool, k.key))
				case k.fence == 0:
					parts = append(parts, fmt.Sprintf("p%d/k%d free (%d failures)", k.pool, k.key, k.fails))
				case k.fence == unknownFence:
					parts = append(parts, fmt.Sprintf("p%d/k%d leased(?)", k.pool, k.key))
				default:
					parts = append(parts, fmt.Sprintf("p%d/k%d leased f%d", k.pool, k.key, k.fence))
				}
			}
			return fmt.Sprintf("{%s} last fences %v, phantoms %v", strings.Join(parts, ", "), s.lastFence, s.phantoms)
		},
	}
	return nm.ToModel()
}

// step returns every state the pool may be in after the call in, answered out, from s;
// none if the answer is impossible.
func step(s state, in Input, out Output) []any {
	if out.Unknown {
		return unknownStep(s, in)
	}
	i := -1
	if in.Key != NoKey {
		i = s.find(in.Key)
	}
	// Calls on one key answer NOT_FOUND exactly when the key is not there.
	switch in.Kind {
	case Unblock, Renew, KeepAlive, Delete, Get, Restore:
		if i < 0 {
			return when(out.Code == keystore.ENOTFOUND, s)
		}
		if out.Code == keystore.ENOTFOUND {
			return nil
		}
	}
	var k keyState
	if i >= 0 {
		k = s.keys[i]
	}
	switch in.Kind {
	case Acquire:
		switch out.Code {
		case keystore.ENOTFOUND:
			return when(!s.anyAvailable(in.Pool), s)
		case "":
		default:
			return nil
		}
		if !out.Blocked || out.Fence <= s.lastFence[in.Pool] {
			return nil
		}
		j := s.find(out.Key)
		switch {
		case j >= 0 && s.keys[j].fence == 0 && s.keys[j].held == notHeld && s.keys[j].pool == in.Pool:
		case j < 0 && s.phantoms[in.Pool] > 0:
			s.phantoms[in.Pool]--
		default:
			return nil // a key held, or of another pool
		}
		var fails uint8
		if j >= 0 {
			fails = s.keys[j].fails
		}
		s = s.with(keyState{key: out.Key, fence: out.Fence, pool: in.Pool, fails: fails})
		s.lastFence[in.Pool] = out.Fence
		return []any{s}

	case Unblock:
		switch {
		case k.fence == 0:
			return when(out.Code == keystore.ENOTBLOCKED, s)
		case in.Fence != NoToken && in.TokenKey != k.key:
			return when(out.Code == keystore.ELEASEMISMATCH, s) // another key's token
		case in.Fence != NoToken && k.fence != unknownFence && in.Fence != k.fence:
			return when(out.Code == keystore.ELEASEMISMATCH, s)
		case in.Fence != NoToken && k.fence == unknownFence && out.Code == keystore.ELEASEMISMATCH:
			return []any{s} // the lease nobody was told of is not this token's
		}
		after := unblocked(k, in)
		return when(out.Code == "" && out.Key == k.key && !out.Blocked && out.Held == after.held, s.with(after))

	case Renew:
		switch {
		case k.fence == 0:
			return when(out.Code == keystore.ENOTBLOCKED, s)
		case in.TokenKey != k.key:
			return when(out.Code == keystore.ELEASEMISMATCH, s) // another key's token
		case k.fence == unknownFence && out.Code == keystore.ELEASEMISMATCH:
			return []any{s}
		case k.fence != unknownFence && in.Fence != k.fence:
			return when(out.Code == keystore.ELEASEMISMATCH, s)
		}
		if out.Code != "" || !out.Blocked || out.Fence != in.Fence || in.Fence <= 0 {
			return nil
		}
		if k.fence == unknownFence {
			s = s.pinned(k, in.Fence)
		}
		return []any{s}

	case KeepAlive, Get:
		if out.Code != "" || out.Key != k.key {
			return nil
		}
		switch {
		case k.fence == unknownFence:
			// Now it is told: the fence of the lease nobody was given.
			return when(out.Blocked && out.Fence > 0, s.pinned(k, out.Fence))
		case k.fence == 0:
			return when(!out.Blocked && out.Held == k.held, s)
		default:
			return when(out.Blocked && out.Fence == k.fence, s)
		}

	case Restore:
		if k.held == notHeld {
			return when(out.Code == keystore.ENOTHELDBACK, s)
		}
		return when(out.Code == "" && out.Key == k.key && !out.Blocked && out.Held == notHeld,
			s.with(keyState{key: k.key, pool: k.pool}))

	case Delete:
		return when(out.Code == "", s.without(k.key))

	case Generate:
		if out.Code != "" || len(out.Keys) != in.Count {
			return nil
		}
		for _, key := range out.Keys {
			if s.find(key) >= 0 {
				return nil
			}
			s = s.with(keyState{key: key, pool: in.Pool})
		}
		return []any{s}

	case Release:
		if i < 0 || !k.orphan || k.fence != in.Fence && k.fence != unknownFence {
			return nil
		}
		s.lastFence[k.pool] = max(s.lastFence[k.pool], in.Fence)
		return []any{s.with(keyState{key: k.key, pool: k.pool})}
	}
	return nil
}

// unblocked is leased key k once an unblock with in's options has ended its lease.
func unblocked(k keyState, in Input) keyState {
	next := keyState{key: k.key, pool: k.pool}
	switch {
	case in.Failed && k.fails+1 >= QuarantineAfter:
		next.held, next.fails = quarantined, k.fails+1
	case in.Failed:
		next.fails = k.fails + 1
	}
	if in.Cooldown && next.held == notHeld {
		next.held = cooling
	}
	return next
}

// unknownStep returns the states after a call answered UNAVAILABLE: as if it never
// happened, or as if it took effect (with an answer nobody saw).
func unknownStep(s state, in Input) []any {
	next := []any{s}
	i := -1
	if in.Key != NoKey {
		i = s.find(in.Key)
	}
	switch in.Kind {
	case Acquire:
		for _, k := range s.keys {
			if k.fence == 0 && k.pool == in.Pool {
				next = append(next, s.with(keyState{key: k.key, fence: unknownFence, orphan: true, pool: k.pool}))
			}
		}
	case Unblock:
		if i >= 0 && s.keys[i].fence != 0 &&
			(in.Fence == NoToken || in.TokenKey == in.Key && (s.keys[i].fence == in.Fence || s.keys[i].fence == unknownFence)) {
			next = append(next, s.with(unblocked(s.keys[i], in)))
		}
	case Restore:
		if i >= 0 && s.keys[i].held != notHeld {
			next = append(next, s.with(keyState{key: in.Key, pool: s.keys[i].pool}))
		}
	case Delete:
		if i >= 0 {
			next = append(next, s.without(in.Key))
		}
	case Generate:
		grown := s
		grown.phantoms[in.Pool] += in.Count
		next = append(next, grown)
	}
	return next
}

func when(ok bool, s state) []any {
	if !ok {
		return nil
	}
	return []any{s}
}

func describe(in, out any) string {
	i, o := in.(Input), out.(Output)
	var call string
	switch i.Kind {
	case Acquire:
		call = fmt.Sprintf("acquire(p%d)", i.Pool)
	case Generate:
		call = fmt.Sprintf("generate(p%d, %d)", i.Pool, i.Count)
	case Unblock, Renew, Release:
		call = fmt.Sprintf("%s(k%d, %s)", i.Kind, i.Key, token(i.Fence))
		if i.Cooldown {
			call = strings.TrimSuffix(call, ")") + ", cool-down)"
		}
		if i.Failed {
			call = strings.TrimSuffix(call, ")") + ", failed)"
		}
	default:
		call = fmt.Sprintf("%s(k%d)", i.Kind, i.Key)
	}
	switch {
	case o.Unknown:
		return call + " -> UNAVAILABLE"
	case o.Code != "":
		return call + " -> " + string(o.Code)
	case i.Kind == Generate:
		return fmt.Sprintf("%s -> %v", call, o.Keys)
	case i.Kind == Delete || i.Kind == Release:
		return call + " -> ok"
	case o.Blocked:
		return fmt.Sprintf("%s -> k%d leased f%d", call, o.Key, o.Fence)
	case o.Held == cooling:
		return fmt.Sprintf("%s -> k%d cooling", call, o.Key)
	case o.Held == quarantined:
		return fmt.Sprintf("%s -> k%d quarantined", call, o.Key)
	default:
		return fmt.Sprintf("%s -> k%d free", call, o.Key)
	}
}

func token(fence int64) string {
	switch fence {
	case NoToken:
		return "no token"
	case ForeignToken:
		return "foreign token"
	}
	return fmt.Sprintf("f%d", fence)
}
