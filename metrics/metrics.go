// Package metrics exposes keypool's Prometheus metrics, all named keypool_*, on a
// registry of its own (with the Go and process collectors).
//
// A *Metrics is four things at once: the keystore.Observer that the store tells of
// expiries, waits and subscribers; the observer of the GraphQL server's event delivery
// (fanout.Observer: frames, bytes, coalesced writes, stalls, the queue for its
// workers); a collector of the pool's keys by state, read from Store.Stats at scrape
// time; and, through Instrument, a decorator of keystore.Store that counts every
// operation a transport makes, by outcome, and times it.
package metrics

import (
	"cmp"
	"context"
	"log/slog"
	"net/http"
	"slices"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/keypool/keypool/internal/buildinfo"
	"github.com/keypool/keypool/keystore"
)

// The transports, as the transport label shows them.
const (
	GraphQL = "graphql"
	REST    = "rest"
)

// The operations, as the op label shows them. Both transports use these names.
const (
	OpGenerate  = "generate"
	OpAcquire   = "acquire"
	OpUnblock   = "unblock"
	OpRenew     = "renew"
	OpKeepAlive = "keepalive"
	OpDelete    = "delete"
	OpGet       = "get"
	OpStats     = "stats"
	OpPools     = "pools"
	OpList      = "list"
	OpHistory   = "history"
	OpSubscribe = "subscribe"
	OpRestore   = "restore"
	OpImport    = "import"
)

// Ops lists every operation label.
var Ops = []string{OpGenerate, OpAcquire, OpUnblock, OpRenew, OpKeepAlive, OpDelete, OpGet, OpStats, OpPools, OpList, OpHistory, OpSubscribe, OpRestore, OpImport}

// OutcomeOK is the outcome label of an operation that succeeded; a failed one is labelled
// with its error code (NOT_FOUND, LEASE_MISMATCH, …).
const OutcomeOK = "ok"

// opOutcomes are the error codes each operation's store call can return (keystore.Store's
// contract), besides UNAVAILABLE and INTERNAL_SERVER_ERROR, which any call can. Only these
// series are created ahead of time, at zero, so that /metrics shows no impossible ones
// (acquire/SLOW_CONSUMER, delete/LEASE_MISMATCH); any other code is still counted, on
// first use. SLOW_CONSUMER ends a subscription later and is counted in
// keypool_slow_consumer_cuts_total, not as subscribe's outcome.
var opOutcomes = map[string][]keystore.Code{
	OpGenerate:  {keystore.EINVALID},
	OpAcquire:   {keystore.ENOTFOUND, keystore.EINVALID},
	OpUnblock:   {keystore.ENOTFOUND, keystore.ENOTBLOCKED, keystore.ELEASEMISMATCH, keystore.EINVALID},
	OpRenew:     {keystore.ENOTFOUND, keystore.ENOTBLOCKED, keystore.ELEASEMISMATCH, keystore.EINVALID},
	OpKeepAlive: {keystore.ENOTFOUND},
	OpDelete:    {keystore.ENOTFOUND},
	OpGet:       {keystore.ENOTFOUND},
	OpHistory:   {keystore.EINVALID},
	OpStats:     {keystore.EINVALID},
	OpPools:     {},
	OpList:      {keystore.EINVALID},
	OpSubscribe: {keystore.EINVALID, keystore.ECOMPACTED},
	OpRestore:   {keystore.ENOTFOUND, keystore.ENOTHELDBACK},
	OpImport:    {keystore.EINVALID, keystore.EALREADYEXISTS},
}

// anyOpOutcomes are the codes every operation can return: a store that cannot be reached
// or is closing, and an unexpected failure.
var anyOpOutcomes = []keystore.Code{keystore.EUNAVAILABLE, keystore.EINTERNAL}

// Bucket layouts.
var (
	// latenessBuckets resolve expiry lateness from 100µs to 1s; 50ms is the contract's bound.
	latenessBuckets = []float64{0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1}
	// requestBuckets span a map lookup to a long wait for a free key.
	requestBuckets = []float64{0.00005, 0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30}
	// waitBuckets span an acquire's wait, at most keystore.MaxWait.
	waitBuckets = []float64{0.001, 0.005, 0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 20, 30}
)

// Metrics holds keypool's collectors. Its methods are safe for concurrent use.
type Metrics struct {
	registry *prometheus.Registry

	operations   *prometheus.CounterVec
	opCounters   map[string]*opCounters
	requests     *prometheus.HistogramVec
	renewals     prometheus.Counter
	released     prometheus.Counter
	expired      prometheus.Counter
	recovered    prometheus.Counter
	lateness     [3]prometheus.Observer // released, expired, recovered
	subscribers  prometheus.Gauge
	slowCuts     prometheus.Counter
	waiters      prometheus.Gauge
	authFailures prometheus.Counter
	waitServed   prometheus.Observer
	waitUnserved prometheus.Observer

	fanFrames    prometheus.Counter
	fanBytes     prometheus.Counter
	fanWrites    prometheus.Counter
	fanCoalesced prometheus.Counter
	fanEncodes   prometheus.Counter
	fanStalls    prometheus.Counter
	fanQueued    prometheus.Gauge

	store atomic.Pointer[keystore.Store]
}

// opCounters are one operation's outcome counters, resolved ahead of time.
type opCounters struct {
	ok     prometheus.Counter
	byCode map[keystore.Code]prometheus.Counter
	vec    *prometheus.CounterVec
	op     string
}

func (c *opCounters) observe(err error) {
	if err == nil {
		c.ok.Inc()
		return
	}
	code := keystore.ErrorCode(err)
	if counter, ok := c.byCode[code]; ok {
		counter.Inc()
		return
	}
	c.vec.WithLabelValues(c.op, string(code)).Inc()
}

var _ keystore.Observer = (*Metrics)(nil)

// New returns a Metrics with every collector registered on a new registry. Call WatchStore
// once the store exists so that the keys gauge can read it.
func New() *Metrics {
	m := &Metrics{registry: prometheus.NewRegistry(), opCounters: make(map[string]*opCounters, len(Ops))}
	m.operations = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "keypool_operations_total",
		Help: "Store operations served to clients, by operation and outcome (ok or the error code).",
	}, []string{"op", "outcome"})
	m.requests = prometheus.NewHistogramVec(prometheus.HistogramOpts{
		Name:    "keypool_request_duration_seconds",
		Help:    "Time to serve one operation's store call, by transport (graphql, rest) and operation; waits for a free key included.",
		Buckets: requestBuckets,
	}, []string{"transport", "op"})
	m.renewals = prometheus.NewCounter(prometheus.CounterOpts{
		Name: "keypool_lease_renewals_total",
		Help: "Leases renewed.",
	})
	m.released = prometheus.NewCounter(prometheus.CounterOpts{
		Name: "keypool_leases_expired_total",
		Help: "Leases that ran out and returned their key to AVAILABLE (event RELEASED).",
	})
	m.expired = prometheus.NewCounter(prometheus.CounterOpts{
		Name: "keypool_keys_expired_total",
		Help: "Keys deleted for missing their keep-alive (event EXPIRED).",
	})
	lateness := prometheus.NewHistogramVec(prometheus.HistogramOpts{
		Name:    "keypool_expiry_lateness_seconds",
		Help:    "How long after its deadline an automatic transition was applied, by event (RELEASED, EXPIRED, RECOVERED).",
		Buckets: latenessBuckets,
	}, []string{"event"})
	m.lateness = [3]prometheus.Observer{
		lateness.WithLabelValues(string(keystore.EventReleased)),
		lateness.WithLabelValues(string(keystore.EventExpired)),
		lateness.WithLabelValues(string(keystore.EventRecovered)),
	}
	m.recovered = prometheus.NewCounter(prometheus.CounterOpts{
		Name: "keypool_cooldowns_ended_total",
		Help: "Cool-downs that ended and returned their key to AVAILABLE (event RECOVERED).",
	})
	m.subscribers = prometheus.NewGauge(prometheus.GaugeOpts{
		Name: "keypool_subscribers",
		Help: "Live event subscriptions.",
	})
	m.slowCuts = prometheus.NewCounter(prometheus.CounterOpts{
		Name: "keypool_slow_consumer_cuts_total",
		Help: "Subscriptions ended with SLOW_CONSUMER for falling behind the event ring.",
	})
	m.authFailures = prometheus.NewCounter(prometheus.CounterOpts{
		Name: "keypool_auth_failures_total",
		Help: "Requests and websockets refused for a missing or unknown token (access control on).",
	})
	m.waiters = prometheus.NewGauge(prometheus.GaugeOpts{
		Name: "keypool_acquire_waiters",
		Help: "Acquire calls waiting for a free key now.",
	})
	wait := prometheus.NewHistogramVec(prometheus.HistogramOpts{
		Name:    "keypool_acquire_wait_seconds",
		Help:    "How long an acquire that had to wait waited, by outcome (served, unserved).",
		Buckets: waitBuckets,
	}, []string{"outcome"})
	m.waitServed = wait.WithLabelValues("served")
	m.waitUnserved = wait.WithLabelValues("unserved")
	m.fanFrames = prometheus.NewCounter(prometheus.CounterOpts{
		Name: "keypool_fanout_frames_total",
		Help: "Event messages queued for subscribers (a websocket message or an SSE event each).",
	})
	m.fanBytes = prometheus.NewCounter(prometheus.CounterOpts{
		Name: "keypool_fanout_bytes_total",
		Help: "Bytes of the event messages queued for subscribers, framing included.",
	})
	m.fanWrites = prometheus.NewCounter(prometheus.CounterOpts{
		Name: "keypool_fanout_writes_total",
		Help: "Writes of event messages to one subscriber's connection by a delivery worker.",
	})
	m.fanCoalesced = prometheus.NewCounter(prometheus.CounterOpts{
		Name: "keypool_fanout_coalesced_writes_total",
		Help: "Writes that carried more than one event message: the subscriber was behind.",
	})
	m.fanEncodes = prometheus.NewCounter(prometheus.CounterOpts{
		Name: "keypool_fanout_encodes_total",
		Help: "Events encoded for a selection; subscribers with the same selection share one encoding.",
	})
	m.fanStalls = prometheus.NewCounter(prometheus.CounterOpts{
		Name: "keypool_fanout_stalls_total",
		Help: "Writes to a subscriber that waited more than 10 ms for its client (holding no delivery turn).",
	})
	m.fanQueued = prometheus.NewGauge(prometheus.GaugeOpts{
		Name: "keypool_fanout_queued",
		Help: "Subscriptions with events to deliver waiting for a delivery turn now.",
	})

	for _, op := range Ops {
		codes := append(slices.Clone(opOutcomes[op]), anyOpOutcomes...)
		c := &opCounters{
			ok:     m.operations.WithLabelValues(op, OutcomeOK),
			byCode: make(map[keystore.Code]prometheus.Counter, len(codes)),
			vec:    m.operations,
			op:     op,
		}
		for _, code := range codes {
			c.byCode[code] = m.operations.WithLabelValues(op, string(code))
		}
		m.opCounters[op] = c
	}

	build := buildinfo.Read()
	buildInfo := prometheus.NewGauge(prometheus.GaugeOpts{
		Name: "keypool_build_info",
		Help: "Always 1; its labels say which build is running: the module's version, the Go version, and the VCS revision (unknown when the build recorded none).",
		ConstLabels: prometheus.Labels{
			"version":   build.Version,
			"goversion": build.GoVersion,
			"revision":  cmp.Or(build.Revision, "unknown"),
		},
	})
	buildInfo.Set(1)

	m.registry.MustRegister(
		buildInfo,
		collectors.NewGoCollector(),
		collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}),
		m.operations, m.requests, m.renewals, m.released, m.expired, m.recovered, lateness,
		m.subscribers, m.slowCuts, m.waiters, wait, m.authFailures,
		m.fanFrames, m.fanBytes, m.fanWrites, m.fanCoalesced, m.fanEncodes, m.fanStalls, m.fanQueued,
		keysCollector{m},
	)
	return m
}

// AuthFailed counts one request or websocket refused for a missing or unknown token.
func (m *Metrics) AuthFailed() { m.authFailures.Inc() }

// Registry returns the registry every keypool collector is on, for tests and for adding more.
func (m *Metrics) Registry() *prometheus.Registry { return m.registry }

// Handler serves the registry in the Prometheus text format, for /metrics.
func (m *Metrics) Handler() http.Handler {
	return promhttp.HandlerFor(m.registry, promhttp.HandlerOpts{})
}

// WatchStore makes the keys gauge read store's Stats at every scrape.
func (m *Metrics) WatchStore(store keystore.Store) { m.store.Store(&store) }

// Expired implements keystore.Observer.
func (m *Metrics) Expired(t keystore.EventType, lateness time.Duration) {
	switch t {
	case keystore.EventReleased:
		m.released.Inc()
		m.lateness[0].Observe(lateness.Seconds())
	case keystore.EventExpired:
		m.expired.Inc()
		m.lateness[1].Observe(lateness.Seconds())
	case keystore.EventRecovered:
		m.recovered.Inc()
		m.lateness[2].Observe(lateness.Seconds())
	}
}

// Waited implements keystore.Observer.
func (m *Metrics) Waited(d time.Duration, served bool) {
	if served {
		m.waitServed.Observe(d.Seconds())
	} else {
		m.waitUnserved.Observe(d.Seconds())
	}
}

// WaitersChanged implements keystore.Observer.
func (m *Metrics) WaitersChanged(delta int) { m.waiters.Add(float64(delta)) }

// SubscribersChanged implements keystore.Observer.
func (m *Metrics) SubscribersChanged(delta int) { m.subscribers.Add(float64(delta)) }

// SlowConsumerCut implements keystore.Observer.
func (m *Metrics) SlowConsumerCut() { m.slowCuts.Inc() }

// FanoutWrote implements fanout.Observer.
func (m *Metrics) FanoutWrote(frames, bytes int) {
	m.fanFrames.Add(float64(frames))
	m.fanBytes.Add(float64(bytes))
	m.fanWrites.Inc()
	if frames > 1 {
		m.fanCoalesced.Inc()
	}
}

// FanoutEncoded implements fanout.Observer.
func (m *Metrics) FanoutEncoded() { m.fanEncodes.Inc() }

// FanoutStalled implements fanout.Observer.
func (m *Metrics) FanoutStalled() { m.fanStalls.Inc() }

// FanoutQueued implements fanout.Observer.
func (m *Metrics) FanoutQueued(delta int) { m.fanQueued.Add(float64(delta)) }

// statsTimeout bounds the Stats call of one scrape (a remote store may hang).
const statsTimeout = 2 * time.Second

// The pool label's values are bounded by -max-pools.
var (
	keysDesc        = prometheus.NewDesc("keypool_keys", "Keys by pool and state (AVAILABLE, BLOCKED, COOLING, QUARANTINED), read from the store at scrape time.", []string{"pool", "state"}, nil)
	poolWaitersDesc = prometheus.NewDesc("keypool_pool_acquire_waiters", "Acquire calls waiting now for a free key of the pool, in this process.", []string{"pool"}, nil)
)

// keysCollector reports keypool_keys and keypool_pool_acquire_waiters from
// Store.Pools, which is O(1) a pool, at scrape time. Before WatchStore, or when Pools
// fails, it reports nothing rather than failing the scrape.
type keysCollector struct{ m *Metrics }

func (c keysCollector) Describe(ch chan<- *prometheus.Desc) {
	ch <- keysDesc
	ch <- poolWaitersDesc
}

func (c keysCollector) Collect(ch chan<- prometheus.Metric) {
	store := c.m.store.Load()
	if store == nil {
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), statsTimeout)
	defer cancel()
	pools, err := (*store).Pools(ctx)
	if err != nil {
		slog.Warn("metrics: reading the pools' stats failed", "err", err)
		return
	}
	for _, p := range pools {
		ch <- prometheus.MustNewConstMetric(keysDesc, prometheus.GaugeValue, float64(p.Stats.Available), p.Name, string(keystore.Available))
		ch <- prometheus.MustNewConstMetric(keysDesc, prometheus.GaugeValue, float64(p.Stats.Blocked), p.Name, string(keystore.Blocked))
		ch <- prometheus.MustNewConstMetric(keysDesc, prometheus.GaugeValue, float64(p.Stats.Cooling), p.Name, string(keystore.Cooling))
		ch <- prometheus.MustNewConstMetric(keysDesc, prometheus.GaugeValue, float64(p.Stats.Quarantined), p.Name, string(keystore.Quarantined))
		ch <- prometheus.MustNewConstMetric(poolWaitersDesc, prometheus.GaugeValue, float64(p.Stats.Waiting), p.Name)
	}
}
