// Package client talks to a keypool server over its GraphQL API: every operation,
// typed errors, a keyEvents subscription that resumes across reconnects, and Lease,
// a helper that holds a lease for as long as the work under it runs.
//
//	kp, err := client.New("http://localhost:8080")
//	lease, err := kp.Lease(ctx, client.LeaseOptions{TTL: 30 * time.Second, Wait: 5 * time.Second})
//	defer lease.Release(context.Background())
//	work(lease.Context(), lease.KeyID(), lease.Fence()) // lease.Context() ends if the lease is lost
//
// Queries and mutations are typed by genqlient from the server's schema.graphqls
// (see operations.graphql; `go generate ./...` rewrites internal/gen). genqlient's
// own WebSocket client does not fit keyEvents (it does not answer the server's
// pings, and cannot resume), so subscriptions speak graphql-transport-ws here, over
// github.com/coder/websocket, with genqlient's operation text and response types.
package client

//go:generate go tool genqlient

import (
	"cmp"
	"context"
	"fmt"
	"iter"
	"net/http"
	"net/url"
	"strings"
	"time"

	"github.com/Khan/genqlient/graphql"
	"github.com/jonboulle/clockwork"

	"github.com/keypool/keypool/client/internal/gen"
)

// DefaultServer is where a keypool server listens when started with its defaults.
const DefaultServer = "http://localhost:8080"

// Client is a connection to one keypool server. It is safe for concurrent use.
type Client struct {
	endpoint   string // the /graphql URL
	httpClient *http.Client
	ownsHTTP   bool // the client made httpClient, so Close may close its connections
	gql        graphql.Client
	clock      clockwork.Clock
	token      string // sent as Authorization: Bearer, if not ""
}

// Option tunes New.
type Option func(*Client)

// WithHTTPClient makes the client send every request, WebSocket handshakes
// included, through hc (for its transport, TLS or proxy settings). The caller keeps
// ownership of hc: Close leaves it alone.
func WithHTTPClient(hc *http.Client) Option {
	return func(c *Client) { c.httpClient, c.ownsHTTP = hc, false }
}

// WithToken makes the client send token with every request, WebSocket handshakes
// included, as "Authorization: Bearer TOKEN": what a server with access control on
// (-auth-file) asks for. A client given WithHTTPClient too keeps that client as it is
// and sends through a copy of it.
func WithToken(token string) Option {
	return func(c *Client) { c.token = token }
}

// bearer adds the Authorization header to every request that has none.
type bearer struct {
	base  http.RoundTripper
	value string
}

func (b bearer) RoundTrip(r *http.Request) (*http.Response, error) {
	if r.Header.Get("Authorization") == "" {
		r = r.Clone(r.Context()) // a RoundTripper must not change the request
		r.Header.Set("Authorization", b.value)
	}
	return b.base.RoundTrip(r)
}

// CloseIdleConnections passes Close's call on to the transport.
func (b bearer) CloseIdleConnections() {
	if c, ok := b.base.(interface{ CloseIdleConnections() }); ok {
		c.CloseIdleConnections()
	}
}

// WithClock sets the clock by which Lease schedules renewals and judges expiry
// (the real clock by default); tests pass a fake one.
func WithClock(clock clockwork.Clock) Option {
	return func(c *Client) { c.clock = clock }
}

// New returns a client for the server at server, a base URL such as
// "http://localhost:8080" (its GraphQL endpoint is server + "/graphql"; a URL that
// already ends in /graphql is taken as the endpoint).
func New(server string, opts ...Option) (*Client, error) {
	u, err := url.Parse(server)
	if err != nil {
		return nil, fmt.Errorf("server address %q: %w", server, err)
	}
	if u.Scheme != "http" && u.Scheme != "https" || u.Host == "" {
		return nil, fmt.Errorf("server address %q: want http://host[:port] or https://host[:port]", server)
	}
	if !strings.HasSuffix(u.Path, "/graphql") {
		u.Path = strings.TrimSuffix(u.Path, "/") + "/graphql"
	}
	c := &Client{
		endpoint:   u.String(),
		httpClient: &http.Client{Transport: http.DefaultTransport.(*http.Transport).Clone()},
		ownsHTTP:   true,
		clock:      clockwork.NewRealClock(),
	}
	for _, opt := range opts {
		opt(c)
	}
	if c.token != "" {
		hc := *c.httpClient
		hc.Transport = bearer{base: cmp.Or[http.RoundTripper](hc.Transport, http.DefaultTransport), value: "Bearer " + c.token}
		c.httpClient = &hc
	}
	c.gql = graphql.NewClient(c.endpoint, c.httpClient)
	return c, nil
}

// Endpoint returns the GraphQL URL the client sends to.
func (c *Client) Endpoint() string { return c.endpoint }

// Close releases the idle connections of the client's own HTTP transport. Leases
// and subscriptions must be ended first.
func (c *Client) Close() {
	if c.ownsHTTP {
		c.httpClient.CloseIdleConnections()
	}
}

// GenerateKeys creates count new AVAILABLE keys in the default pool. A count outside
// the server's 1..max-generate is ErrBadUserInput and creates nothing.
func (c *Client) GenerateKeys(ctx context.Context, count int) ([]Key, error) {
	return c.GenerateKeysIn(ctx, "", count)
}

// GenerateKeysIn creates count new AVAILABLE keys in pool ("" is the default pool),
// which the server makes if need be (ErrBadUserInput beyond its -max-pools).
func (c *Client) GenerateKeysIn(ctx context.Context, pool string, count int) ([]Key, error) {
	resp, err := gen.GenerateKeys(ctx, c.gql, count, stringArg(pool))
	if err != nil {
		return nil, fromGraphQL(err)
	}
	keys := make([]Key, len(resp.GenerateKeys))
	for i := range resp.GenerateKeys {
		keys[i] = keyFrom(&resp.GenerateKeys[i])
	}
	return keys, nil
}

// AcquireOptions tune AcquireKey and Lease. A zero field is not sent, so that the
// server applies its default.
type AcquireOptions struct {
	// Pool is the pool to take a key from; "" is the default pool.
	Pool string
	// Holder says who takes the lease (free text, at most 128 bytes): the server
	// shows it wherever it shows the lease.
	Holder string
	// TTL is the lease's length, from 1s up to the server's -max-lease-ttl; zero
	// means the server's -lease-ttl.
	TTL time.Duration
	// Wait is how long the server may wait for a key to come free (at most 30s);
	// zero answers at once.
	Wait time.Duration
}

// AcquireKey blocks a random AVAILABLE key under a new lease. When none is free
// (after opts.Wait) it returns ErrNotFound. Nothing renews the lease: it runs out
// after its TTL unless renewed. Most holders want Lease instead.
func (c *Client) AcquireKey(ctx context.Context, opts AcquireOptions) (LeaseInfo, error) {
	resp, err := gen.AcquireKey(ctx, c.gql, stringArg(opts.Pool), durationArg(opts.TTL), durationArg(opts.Wait), stringArg(opts.Holder))
	if err != nil {
		return LeaseInfo{}, fromGraphQL(err)
	}
	if resp.AcquireKey == nil { // the server always says why; this is a defence
		return LeaseInfo{}, &Error{Code: ErrNotFound, Message: "no key is free"}
	}
	return leaseFrom(resp.AcquireKey), nil
}

// UnblockKey returns a BLOCKED key to AVAILABLE. With a non-empty token it ends only
// that lease (ErrLeaseMismatch otherwise); with "" it ends whatever lease holds the
// key. ErrNotBlocked if the key is AVAILABLE, ErrNotFound if there is no such key.
func (c *Client) UnblockKey(ctx context.Context, id, token string) (Key, error) {
	return c.UnblockKeyWith(ctx, id, token, UnblockOptions{})
}

// UnblockOptions say how an unblock ends a lease. The zero value returns the key to
// AVAILABLE.
type UnblockOptions struct {
	// Cooldown, when not zero, sends the key to COOLING for that long (1s up to the
	// server's -max-cooldown) instead of AVAILABLE: the upstream throttled it.
	Cooldown time.Duration
	// Failed records a failure of the key; at the server's -quarantine-after failures
	// in a row the key goes to QUARANTINED.
	Failed bool
}

// UnblockKeyWith is UnblockKey with a cool-down or a failure (opts).
func (c *Client) UnblockKeyWith(ctx context.Context, id, token string, opts UnblockOptions) (Key, error) {
	var failed *bool
	if opts.Failed {
		failed = &opts.Failed
	}
	resp, err := gen.UnblockKey(ctx, c.gql, id, stringArg(token), durationArg(opts.Cooldown), failed)
	if err != nil {
		return Key{}, fromGraphQL(err)
	}
	return keyFrom(&resp.UnblockKey), nil
}

// RestoreKey returns a COOLING or QUARANTINED key to AVAILABLE at once;
// ErrNotHeldBack for a key in another state.
func (c *Client) RestoreKey(ctx context.Context, id string) (Key, error) {
	resp, err := gen.RestoreKey(ctx, c.gql, id)
	if err != nil {
		return Key{}, fromGraphQL(err)
	}
	return keyFrom(&resp.RestoreKey), nil
}

// KeyInput is a key of one's own for ImportKeys: the secret its holders use and a
// label for people.
type KeyInput struct {
	Secret string
	Name   string
}

// ImportOptions tune ImportKeys.
type ImportOptions struct {
	// Pool is the pool the keys join; "" is the default pool.
	Pool string
	// KeepAliveTTL, when not zero, subjects the keys to the keep-alive rule with this
	// TTL; zero keeps them until deleted.
	KeepAliveTTL time.Duration
}

// ImportKeys makes a key of each input, with an id of the server's. A secret the pool
// holds already is ErrAlreadyExists (Error.Index() names the first duplicate) and
// nothing is imported.
func (c *Client) ImportKeys(ctx context.Context, keys []KeyInput, opts ImportOptions) ([]Key, error) {
	in := make([]gen.KeyInput, len(keys))
	for i, k := range keys {
		in[i] = gen.KeyInput{Secret: k.Secret, Name: stringArg(k.Name)}
	}
	resp, err := gen.ImportKeys(ctx, c.gql, stringArg(opts.Pool), in, durationArg(opts.KeepAliveTTL))
	if err != nil {
		return nil, fromGraphQL(err)
	}
	made := make([]Key, len(resp.ImportKeys))
	for i := range resp.ImportKeys {
		made[i] = keyFrom(&resp.ImportKeys[i])
	}
	return made, nil
}

// RenewLease extends the live lease that token names to now plus ttl (zero: the
// server's -lease-ttl), never past its acquiredAt plus the server's -max-lease-ttl.
// A lease that has run out is never renewed: ErrLeaseMismatch if another lease holds
// the key, ErrNotBlocked if none does.
func (c *Client) RenewLease(ctx context.Context, id, token string, ttl time.Duration) (LeaseInfo, error) {
	resp, err := gen.RenewLease(ctx, c.gql, id, token, durationArg(ttl))
	if err != nil {
		return LeaseInfo{}, fromGraphQL(err)
	}
	return leaseFrom(&resp.RenewLease), nil
}

// DeleteKey removes the key at once; ErrNotFound if there is no such key.
func (c *Client) DeleteKey(ctx context.Context, id string) error {
	_, err := gen.DeleteKey(ctx, c.gql, id)
	return fromGraphQL(err)
}

// KeepAlive moves the key's keep-alive deadline to now plus the server's
// -keepalive-ttl; its lease is untouched.
func (c *Client) KeepAlive(ctx context.Context, id string) (Key, error) {
	resp, err := gen.KeepAlive(ctx, c.gql, id)
	if err != nil {
		return Key{}, fromGraphQL(err)
	}
	return keyFrom(&resp.KeepAlive), nil
}

// Key returns the key with this id. The server answers null for an unknown key;
// Key turns that into ErrNotFound, like every other operation on a missing key.
func (c *Client) Key(ctx context.Context, id string) (Key, error) {
	resp, err := gen.GetKey(ctx, c.gql, id)
	if err != nil {
		return Key{}, fromGraphQL(err)
	}
	if resp.Key == nil {
		return Key{}, &Error{Code: ErrNotFound, Message: fmt.Sprintf("no key %q", id)}
	}
	return keyFrom(resp.Key), nil
}

// Stats counts the keys of every pool together by state.
func (c *Client) Stats(ctx context.Context) (Stats, error) {
	return c.PoolStats(ctx, "")
}

// PoolStats counts the keys of pool by state ("": every pool together); a pool never
// made counts zero.
func (c *Client) PoolStats(ctx context.Context, pool string) (Stats, error) {
	resp, err := gen.GetStats(ctx, c.gql, stringArg(pool))
	if err != nil {
		return Stats{}, fromGraphQL(err)
	}
	s := resp.Stats
	return Stats{Total: s.Total, Available: s.Available, Blocked: s.Blocked, Cooling: s.Cooling, Quarantined: s.Quarantined, Waiting: s.Waiting}, nil
}

// Pools returns every pool made so far, and the default pool, ordered by name.
func (c *Client) Pools(ctx context.Context) ([]Pool, error) {
	resp, err := gen.GetPools(ctx, c.gql)
	if err != nil {
		return nil, fromGraphQL(err)
	}
	pools := make([]Pool, len(resp.Pools))
	for i, p := range resp.Pools {
		s := p.Stats
		pools[i] = Pool{Name: p.Name, Stats: Stats{Total: s.Total, Available: s.Available, Blocked: s.Blocked, Cooling: s.Cooling, Quarantined: s.Quarantined, Waiting: s.Waiting}}
	}
	return pools, nil
}

// ListOptions select the keys that Keys walks.
type ListOptions struct {
	// Pool keeps only that pool's keys; "" walks every pool, by name.
	Pool string
	// Status keeps only keys in that state; "" keeps every key.
	Status Status
	// PageSize is how many keys each request reads, 1 to 1000; zero means the
	// server's default (100).
	PageSize int
}

// Keys walks the keys that opts select, a page at a time, in the server's stable
// order: each key that matches for the whole walk comes once, any other at most once.
// An error ends the walk, yielded with an empty Key.
//
//	for key, err := range kp.Keys(ctx, client.ListOptions{Pool: "openai", Status: client.Blocked}) {
//		if err != nil { return err }
//		fmt.Println(key.ID, key.Lease.Holder)
//	}
func (c *Client) Keys(ctx context.Context, opts ListOptions) iter.Seq2[Key, error] {
	return func(yield func(Key, error) bool) {
		var status *gen.KeyStatus
		if opts.Status != "" {
			s := gen.KeyStatus(opts.Status)
			status = &s
		}
		var first *int // not sent: the server's default
		if opts.PageSize != 0 {
			first = &opts.PageSize
		}
		var after *string
		for {
			resp, err := gen.ListKeys(ctx, c.gql, stringArg(opts.Pool), status, first, after)
			if err != nil {
				yield(Key{}, fromGraphQL(err))
				return
			}
			for i := range resp.Keys.Nodes {
				if !yield(keyFrom(&resp.Keys.Nodes[i]), nil) {
					return
				}
			}
			page := resp.Keys.PageInfo
			if !page.HasNextPage || page.EndCursor == nil {
				return
			}
			after = page.EndCursor
		}
	}
}

// durationArg is how an optional Duration argument is sent: not at all when zero.
func durationArg(d time.Duration) *string {
	if d == 0 {
		return nil
	}
	s := d.String()
	return &s
}

func stringArg(s string) *string {
	if s == "" {
		return nil
	}
	return &s
}
