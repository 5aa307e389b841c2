package auth

import (
	"context"
	"slices"
	"time"

	"github.com/keypool/keypool/keystore"
	"github.com/keypool/keypool/wire"
)

// Store returns store held to the rules of a token on what it acts (CONTRACT "Access
// control (optional)"), for the principal in each call's context: a token scoped to
// pools acts on those pools only; a lease's holder is the token's name (a differing
// holder is BAD_USER_INPUT); a lease's token is shown only to its holder and to admins;
// a lease held by another name is unblocked or renewed only by an admin. Every
// transport's operations reach the store through it, so these rules have one home.
// Without a principal (access control off) it changes nothing.
func Store(store keystore.Store) keystore.Store { return guardedStore{store} }

type guardedStore struct{ keystore.Store }

var _ keystore.Store = guardedStore{}

// pool is the name a request's pool has ("" is the default pool).
func poolName(pool string) string {
	if pool == "" {
		return keystore.DefaultPool
	}
	return pool
}

// allPools refuses a scoped token a read of every pool at once.
func allPools(p *Principal) error {
	if p != nil && p.Pools != nil {
		return keystore.Errorf(wire.CodeForbidden, "the token %s acts on some pools only: name one", p.Name)
	}
	return nil
}

// shown is k as p may see it: without its lease's token unless p holds the lease or
// is an admin.
func shown(p *Principal, k keystore.Key) keystore.Key {
	if p == nil || p.Role == Admin || k.Lease == nil || k.Lease.Holder == p.Name {
		return k
	}
	lease := *k.Lease
	lease.Token = ""
	k.Lease = &lease
	return k
}

func shownAll(p *Principal, keys []keystore.Key) []keystore.Key {
	if p == nil || p.Role == Admin {
		return keys
	}
	out := make([]keystore.Key, len(keys))
	for i, k := range keys {
		out[i] = shown(p, k)
	}
	return out
}

// own reads the key id and checks that p may act on it: its pool is p's, and, unless
// p is an admin and when the key is leased, the lease is p's. It returns the token of
// the lease checked, to pin the change to that lease.
func (s guardedStore) own(ctx context.Context, p *Principal, id string, lease bool) (string, error) {
	k, err := s.Store.Get(ctx, id)
	if err != nil {
		return "", err
	}
	if err := AllowPool(ctx, k.Pool); err != nil {
		return "", err
	}
	if !lease || k.Lease == nil {
		return "", nil
	}
	if p.Role < Admin && k.Lease.Holder != p.Name {
		return "", keystore.Errorf(wire.CodeForbidden, "the lease on %s is held by another name: only an admin may change it", id)
	}
	return k.Lease.Token, nil
}

// pinned is the token a lease change goes with: the caller's, or else the one of the
// lease checked, so that a lease granted to another name since is not changed.
func pinned(given, checked string) string {
	if given != "" {
		return given
	}
	return checked
}

func (s guardedStore) Generate(ctx context.Context, pool string, count int) ([]keystore.Key, error) {
	if err := AllowPool(ctx, poolName(pool)); err != nil {
		return nil, err
	}
	return s.Store.Generate(ctx, pool, count)
}

func (s guardedStore) Acquire(ctx context.Context, opts keystore.AcquireOptions) (keystore.Key, error) {
	if p := FromContext(ctx); p != nil {
		if err := AllowPool(ctx, poolName(opts.Pool)); err != nil {
			return keystore.Key{}, err
		}
		if opts.Holder != "" && opts.Holder != p.Name {
			return keystore.Key{}, keystore.Errorf(keystore.EINVALID,
				"holder: with access control on, a lease's holder is the token's name %q; leave it out", p.Name)
		}
		opts.Holder = p.Name
	}
	return s.Store.Acquire(ctx, opts)
}

func (s guardedStore) Unblock(ctx context.Context, id, token string) (keystore.Key, error) {
	p := FromContext(ctx)
	if p == nil {
		return s.Store.Unblock(ctx, id, token)
	}
	checked, err := s.own(ctx, p, id, true)
	if err != nil {
		return keystore.Key{}, err
	}
	k, err := s.Store.Unblock(ctx, id, pinned(token, checked))
	return shown(p, k), err
}

func (s guardedStore) UnblockWith(ctx context.Context, id, token string, opts keystore.UnblockOptions) (keystore.Key, error) {
	p := FromContext(ctx)
	if p == nil {
		return s.Store.UnblockWith(ctx, id, token, opts)
	}
	checked, err := s.own(ctx, p, id, true)
	if err != nil {
		return keystore.Key{}, err
	}
	k, err := s.Store.UnblockWith(ctx, id, pinned(token, checked), opts)
	return shown(p, k), err
}

func (s guardedStore) Renew(ctx context.Context, id, token string, ttl *time.Duration) (keystore.Key, error) {
	p := FromContext(ctx)
	if p == nil {
		return s.Store.Renew(ctx, id, token, ttl)
	}
	if _, err := s.own(ctx, p, id, true); err != nil {
		return keystore.Key{}, err
	}
	k, err := s.Store.Renew(ctx, id, token, ttl) // renewal needs the lease's token already
	return shown(p, k), err
}

func (s guardedStore) Restore(ctx context.Context, id string) (keystore.Key, error) {
	p := FromContext(ctx)
	if p == nil {
		return s.Store.Restore(ctx, id)
	}
	if _, err := s.own(ctx, p, id, false); err != nil {
		return keystore.Key{}, err
	}
	k, err := s.Store.Restore(ctx, id)
	return shown(p, k), err
}

func (s guardedStore) KeepAlive(ctx context.Context, id string) (keystore.Key, error) {
	p := FromContext(ctx)
	if p == nil {
		return s.Store.KeepAlive(ctx, id)
	}
	if _, err := s.own(ctx, p, id, false); err != nil {
		return keystore.Key{}, err
	}
	k, err := s.Store.KeepAlive(ctx, id)
	return shown(p, k), err
}

func (s guardedStore) Delete(ctx context.Context, id string) error {
	if p := FromContext(ctx); p != nil {
		if _, err := s.own(ctx, p, id, false); err != nil {
			return err
		}
	}
	return s.Store.Delete(ctx, id)
}

func (s guardedStore) Import(ctx context.Context, keys []keystore.KeyInput, opts keystore.ImportOptions) ([]keystore.Key, error) {
	if err := AllowPool(ctx, poolName(opts.Pool)); err != nil {
		return nil, err
	}
	return s.Store.Import(ctx, keys, opts)
}

func (s guardedStore) Get(ctx context.Context, id string) (keystore.Key, error) {
	k, err := s.Store.Get(ctx, id)
	if err != nil {
		return k, err
	}
	if err := AllowPool(ctx, k.Pool); err != nil {
		return keystore.Key{}, err
	}
	return shown(FromContext(ctx), k), nil
}

func (s guardedStore) Stats(ctx context.Context, pool string) (keystore.Stats, error) {
	if pool == "" {
		if err := allPools(FromContext(ctx)); err != nil {
			return keystore.Stats{}, err
		}
	} else if err := AllowPool(ctx, pool); err != nil {
		return keystore.Stats{}, err
	}
	return s.Store.Stats(ctx, pool)
}

func (s guardedStore) Pools(ctx context.Context) ([]keystore.PoolStats, error) {
	pools, err := s.Store.Pools(ctx)
	if p := FromContext(ctx); err == nil && p != nil && p.Pools != nil {
		pools = slices.DeleteFunc(slices.Clone(pools), func(ps keystore.PoolStats) bool { return !p.MayUse(ps.Name) })
	}
	return pools, err
}

func (s guardedStore) History(ctx context.Context, pool string, since time.Time) ([]keystore.StatsSample, error) {
	if err := AllowPool(ctx, poolName(pool)); err != nil {
		return nil, err
	}
	return s.Store.History(ctx, pool, since)
}

func (s guardedStore) List(ctx context.Context, opts keystore.ListOptions) (keystore.Page, error) {
	p := FromContext(ctx)
	if opts.Pool == "" {
		if err := allPools(p); err != nil {
			return keystore.Page{}, err
		}
	} else if err := AllowPool(ctx, opts.Pool); err != nil {
		return keystore.Page{}, err
	}
	page, err := s.Store.List(ctx, opts)
	page.Keys = shownAll(p, page.Keys)
	return page, err
}

func (s guardedStore) Subscribe(ctx context.Context, opts keystore.SubscribeOptions) (*keystore.Subscription, error) {
	if err := AllowPool(ctx, poolName(opts.Pool)); err != nil {
		return nil, err
	}
	return s.Store.Subscribe(ctx, opts)
}
