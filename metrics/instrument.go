package metrics

import (
	"context"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/keypool/keypool/keystore"
)

// Instrument returns store wrapped so that every operation called through it is counted
// in keypool_operations_total and timed in keypool_request_duration_seconds under
// transport. Give each transport its own: rest.New(m.Instrument(store, metrics.REST), …)
// and the GraphQL resolvers m.Instrument(store, metrics.GraphQL). Ready and Close pass
// through uncounted.
func (m *Metrics) Instrument(store keystore.Store, transport string) keystore.Store {
	s := &instrumentedStore{Store: store, m: m}
	for i, op := range instrumentedOps {
		s.ops[i].counters = m.opCounters[op]
		if i != iSubscribe {
			s.ops[i].latency = m.requests.WithLabelValues(transport, op)
		}
	}
	return s
}

// instrumentedOps are the ops of instrumentedStore.ops, in index order.
var instrumentedOps = [...]string{OpGenerate, OpAcquire, OpUnblock, OpRenew, OpKeepAlive, OpDelete, OpGet, OpStats, OpPools, OpList, OpHistory, OpSubscribe, OpRestore, OpImport}

const (
	iGenerate = iota
	iAcquire
	iUnblock
	iRenew
	iKeepAlive
	iDelete
	iGet
	iStats
	iPools
	iList
	iHistory
	iSubscribe
	iRestore
	iImport
)

type instrumentedOp struct {
	counters *opCounters
	latency  prometheus.Observer
}

// instrumentedStore counts and times each call with label children resolved once, so a
// call costs two clock reads and three atomic adds.
type instrumentedStore struct {
	keystore.Store
	m   *Metrics
	ops [len(instrumentedOps)]instrumentedOp
}

var _ keystore.Store = (*instrumentedStore)(nil)

func (s *instrumentedStore) done(i int, start time.Time, err error) {
	op := &s.ops[i]
	op.latency.Observe(time.Since(start).Seconds())
	op.counters.observe(err)
}

func (s *instrumentedStore) Generate(ctx context.Context, pool string, count int) ([]keystore.Key, error) {
	start := time.Now()
	keys, err := s.Store.Generate(ctx, pool, count)
	s.done(iGenerate, start, err)
	return keys, err
}

func (s *instrumentedStore) Acquire(ctx context.Context, opts keystore.AcquireOptions) (keystore.Key, error) {
	start := time.Now()
	k, err := s.Store.Acquire(ctx, opts)
	s.done(iAcquire, start, err)
	return k, err
}

func (s *instrumentedStore) Unblock(ctx context.Context, id, token string) (keystore.Key, error) {
	start := time.Now()
	k, err := s.Store.Unblock(ctx, id, token)
	s.done(iUnblock, start, err)
	return k, err
}

// UnblockWith counts as an unblock: it is one, with options.
func (s *instrumentedStore) UnblockWith(ctx context.Context, id, token string, opts keystore.UnblockOptions) (keystore.Key, error) {
	start := time.Now()
	k, err := s.Store.UnblockWith(ctx, id, token, opts)
	s.done(iUnblock, start, err)
	return k, err
}

func (s *instrumentedStore) Restore(ctx context.Context, id string) (keystore.Key, error) {
	start := time.Now()
	k, err := s.Store.Restore(ctx, id)
	s.done(iRestore, start, err)
	return k, err
}

func (s *instrumentedStore) Import(ctx context.Context, keys []keystore.KeyInput, opts keystore.ImportOptions) ([]keystore.Key, error) {
	start := time.Now()
	made, err := s.Store.Import(ctx, keys, opts)
	s.done(iImport, start, err)
	return made, err
}

func (s *instrumentedStore) Renew(ctx context.Context, id, token string, ttl *time.Duration) (keystore.Key, error) {
	start := time.Now()
	k, err := s.Store.Renew(ctx, id, token, ttl)
	s.done(iRenew, start, err)
	if err == nil {
		s.m.renewals.Inc()
	}
	return k, err
}

func (s *instrumentedStore) KeepAlive(ctx context.Context, id string) (keystore.Key, error) {
	start := time.Now()
	k, err := s.Store.KeepAlive(ctx, id)
	s.done(iKeepAlive, start, err)
	return k, err
}

func (s *instrumentedStore) Delete(ctx context.Context, id string) error {
	start := time.Now()
	err := s.Store.Delete(ctx, id)
	s.done(iDelete, start, err)
	return err
}

func (s *instrumentedStore) Get(ctx context.Context, id string) (keystore.Key, error) {
	start := time.Now()
	k, err := s.Store.Get(ctx, id)
	s.done(iGet, start, err)
	return k, err
}

func (s *instrumentedStore) Stats(ctx context.Context, pool string) (keystore.Stats, error) {
	start := time.Now()
	st, err := s.Store.Stats(ctx, pool)
	s.done(iStats, start, err)
	return st, err
}

func (s *instrumentedStore) Pools(ctx context.Context) ([]keystore.PoolStats, error) {
	start := time.Now()
	pools, err := s.Store.Pools(ctx)
	s.done(iPools, start, err)
	return pools, err
}

func (s *instrumentedStore) List(ctx context.Context, opts keystore.ListOptions) (keystore.Page, error) {
	start := time.Now()
	page, err := s.Store.List(ctx, opts)
	s.done(iList, start, err)
	return page, err
}

func (s *instrumentedStore) History(ctx context.Context, pool string, since time.Time) ([]keystore.StatsSample, error) {
	start := time.Now()
	samples, err := s.Store.History(ctx, pool, since)
	s.done(iHistory, start, err)
	return samples, err
}

// Subscribe is counted but not timed: it returns at once, and the stream's life is not
// a request's latency.
func (s *instrumentedStore) Subscribe(ctx context.Context, opts keystore.SubscribeOptions) (*keystore.Subscription, error) {
	sub, err := s.Store.Subscribe(ctx, opts)
	s.ops[iSubscribe].counters.observe(err)
	return sub, err
}
