package redisstore

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"math"
	"slices"
	"sync"

	"github.com/keypool/keypool/keystore"
)

// A key's number (keystore.Record.N, which its id encrypts) is its pool's index above
// localBits, and its number within the pool below: any replica finds a key's pool
// from its id alone.
const (
	localBits = 40
	maxLocal  = 1<<localBits - 1
)

// rpool is a pool this replica knows: registered in the namespace, its meta hash
// written.
type rpool struct {
	name   string
	index  uint64
	id     string   // derived from the secret and the name (poolID)
	prefix string   // "{ns:name}:"
	keys   []string // KEYS of its scripts: its meta key
	stream string   // its event stream
	lane   *keystore.Lane

	// The expirer's knowledge of the pool, guarded by Store.mu: the earliest deadline
	// it knows of, and the earliest told by wakeBy since the expirer's last run.
	due, heard int64
}

// keyN is the number of the pool's key numbered local within it.
func (p *rpool) keyN(local int64) uint64 { return p.index<<localBits | uint64(local) }

// poolID names the pool named name of the namespace whose secret is secret, without
// revealing the secret. It names the pool's event stream, so that the stream changes
// when the namespace is made anew, and every replica derives it alike.
func poolID(secret []byte, name string) string {
	sum := sha256.Sum256(append(append([]byte("keypool pool id\x00"), secret...), "\x00"+name...))
	return hex.EncodeToString(sum[:12])
}

// namespaceID names the namespace by its secret, without revealing it.
func namespaceID(secret []byte) string {
	sum := sha256.Sum256(append([]byte("keypool namespace id\x00"), secret...))
	return hex.EncodeToString(sum[:12])
}

// registry is this replica's copy of the namespace's pools: it only grows, as the
// registry in Redis does.
type registry struct {
	mu      sync.RWMutex
	byName  map[string]*rpool
	byIndex map[uint64]*rpool
	known   []*rpool // in the order learned
	last    uint64   // the highest index read from the registry in order
}

func (r *registry) get(name string) *rpool {
	r.mu.RLock()
	defer r.mu.RUnlock()
	return r.byName[name]
}

func (r *registry) at(index uint64) *rpool {
	r.mu.RLock()
	defer r.mu.RUnlock()
	return r.byIndex[index]
}

// all returns the pools known, in the order learned.
func (r *registry) all() []*rpool {
	r.mu.RLock()
	defer r.mu.RUnlock()
	return slices.Clone(r.known)
}

// poolPrefix is the key prefix of the pool named name: a hash tag of its own.
func (s *Store) poolPrefix(name string) string { return "{" + s.namespace + ":" + name + "}:" }

// learn makes pool name, of the given index, known to this replica: it writes the
// pool's meta hash if no replica has yet (scriptInitPool), then adds it to the
// registry's copy, where the expirer and the stream reader find it. A pool whose index
// this replica knows under another name means that the namespace was made anew.
func (s *Store) learn(ctx context.Context, name string, index uint64) (*rpool, error) {
	if p := s.reg.get(name); p != nil {
		if p.index != index {
			s.markLost()
			return nil, s.usable()
		}
		return p, nil
	}
	prefix := s.poolPrefix(name)
	p := &rpool{
		name:   name,
		index:  index,
		id:     poolID(s.secret, name),
		prefix: prefix,
		keys:   []string{prefix + "meta"},
		due:    math.MinInt64, // unknown: the expirer runs the pool at once
		heard:  math.MaxInt64,
	}
	p.stream = prefix + "events:" + p.id
	msgs, _, err := s.send(ctx, s.fn(s.scripts.initPool), p.keys, s.args(p, nil, index, name, s.opts.QuarantineAfter, s.units(s.opts.ExpiredLeaseCooldown)), true, s.minReplicas > 0)
	if err != nil {
		return nil, s.unavailable(err, false, readOnly)
	}
	res, _, err := parseReply(msgs)
	if err != nil {
		return nil, err
	}
	if len(res) > 0 && res[0] == statusForeignKeys {
		return nil, fmt.Errorf("%w: pool %q (%s)", errTagTaken, name, prefix)
	}
	if _, err := s.status(res); err != nil {
		return nil, err
	}
	p.lane = s.lanes.Made(name)

	s.reg.mu.Lock()
	if q := s.reg.byName[name]; q != nil { // learned meanwhile
		s.reg.mu.Unlock()
		return q, nil
	}
	if q := s.reg.byIndex[index]; q != nil {
		s.reg.mu.Unlock()
		s.markLost()
		return nil, s.usable()
	}
	s.reg.byName[name], s.reg.byIndex[index] = p, p
	s.reg.known = append(s.reg.known, p)
	s.reg.mu.Unlock()
	s.wakeBy(p, math.MinInt64) // the expirer runs it
	return p, nil
}

// errTagTaken refuses a pool whose hash tag holds keys of something else. The pool is
// registered, but no replica uses it; the others are not held up by it.
var errTagTaken = errors.New("redis store: the hash tag of a pool holds keys this store did not write, or of another layout (is another namespace named like it?)")

// poolNamed returns the pool named name, or nil if none was made; with create, it makes
// the pool if need be (ErrTooManyPools beyond Options.MaxPools).
func (s *Store) poolNamed(ctx context.Context, name string, create bool) (*rpool, error) {
	if p := s.reg.get(name); p != nil {
		return p, nil
	}
	script := s.scripts.lookup
	own := []any{name}
	if create {
		script, own = s.scripts.register, []any{name, s.opts.MaxPools}
	}
	res, err := s.runNS(ctx, script, own...)
	if err != nil {
		return nil, err
	}
	switch {
	case res[0] == statusTooMany:
		return nil, keystore.ErrTooManyPools
	case len(res) != 2:
		return nil, fmt.Errorf("redis store: bad registry reply %v", res)
	case res[1] == 0:
		return nil, nil
	}
	return s.learn(ctx, name, uint64(res[1]))
}

// poolOf returns the pool of key number n, or nil if there is none.
func (s *Store) poolOf(ctx context.Context, n uint64) (*rpool, error) {
	index := n >> localBits
	if index == 0 {
		return nil, nil
	}
	if p := s.reg.at(index); p != nil {
		return p, nil
	}
	if err := s.readRegistry(ctx); err != nil {
		return nil, err
	}
	return s.reg.at(index), nil
}

// readRegistry learns the pools made since the last it read.
func (s *Store) readRegistry(ctx context.Context) error {
	s.reg.mu.RLock()
	last := s.reg.last
	s.reg.mu.RUnlock()
	msgs, err := s.runNSMessages(ctx, s.scripts.registry, last)
	if err != nil {
		return err
	}
	ints, names, err := parseReply(msgs)
	if err != nil || len(ints) < 2 || len(ints) != 2+int(ints[1]) || len(names) != int(ints[1]) {
		return fmt.Errorf("redis store: bad registry reply (%v)", err)
	}
	for i, name := range names {
		index := uint64(ints[2+i])
		if _, err := s.learn(ctx, name, index); err != nil && !errors.Is(err, errTagTaken) {
			return err
		}
		s.reg.mu.Lock()
		s.reg.last = max(s.reg.last, index)
		s.reg.mu.Unlock()
	}
	return nil
}

// onNewLane prepares each lane before anyone sees it: its stream is named by its
// pool's id, alike on every replica, whether the pool is made yet or not.
func (s *Store) onNewLane(lane *keystore.Lane) {
	lane.Events.SetStream(poolID(s.secret, lane.Name))
	s.lmu.Lock()
	s.allLanes = append(s.allLanes, lane)
	s.lmu.Unlock()
}

// everyLane returns every lane this process has made.
func (s *Store) everyLane() []*keystore.Lane {
	s.lmu.Lock()
	defer s.lmu.Unlock()
	return slices.Clone(s.allLanes)
}
