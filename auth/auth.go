// Package auth is keypool's optional access control (CONTRACT "Access control
// (optional)"): named bearer tokens with a role and, optionally, the pools they may act
// on. The Guard authenticates a request and puts its Principal in the context; Allow,
// through the one table of rules in rules.go, decides whether that principal may run an
// operation, for every transport.
package auth

import (
	"bufio"
	"bytes"
	"context"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/hex"
	"fmt"
	"io"
	"os"
	"slices"
	"strings"
	"sync"
	"sync/atomic"

	"github.com/keypool/keypool/auth/tokenfile"
)

// Role is what a token may do (tokenfile.Role).
type Role = tokenfile.Role

// The roles, least first. None is the role of a request that carries no known token.
const (
	None   = tokenfile.None
	Viewer = tokenfile.Viewer
	Client = tokenfile.Client
	Admin  = tokenfile.Admin
)

// ParseRole reads admin, client or viewer.
func ParseRole(s string) (Role, bool) { return tokenfile.ParseRole(s) }

// Digest is the hex SHA-256 of a token, as the file holds it.
func Digest(token string) string { return tokenfile.Digest(token) }

// Principal is who a request acts for: a token's name, role and pools.
type Principal struct {
	Name string
	Role Role
	// Pools the token acts on; nil for every pool.
	Pools []string

	// revoked ends when a reread of the file removes (or changes) the token.
	revoked context.Context
	revoke  context.CancelFunc
}

// MayUse reports whether p may act on pool.
func (p *Principal) MayUse(pool string) bool {
	return p.Pools == nil || slices.Contains(p.Pools, pool)
}

// Bind returns ctx, ended also when the token p came from leaves the file, so that a
// stream of a removed token closes. Call stop when done.
func Bind(ctx context.Context, p *Principal) (bound context.Context, stop func()) {
	ctx, cancel := context.WithCancel(ctx)
	if p.revoked == nil {
		return ctx, cancel
	}
	unhook := context.AfterFunc(p.revoked, cancel)
	return ctx, func() { unhook(); cancel() }
}

func newPrincipal(name string, role Role) *Principal {
	p := &Principal{Name: name, Role: role}
	p.revoked, p.revoke = context.WithCancel(context.Background())
	return p
}

type principalKey struct{}

// anonymous marks a request that passed the Guard without a token (a websocket whose
// token comes in connection_init): access control is on, and it may do nothing yet.
var anonymous = &Principal{Role: None}

// WithPrincipal returns ctx carrying p.
func WithPrincipal(ctx context.Context, p *Principal) context.Context {
	return context.WithValue(ctx, principalKey{}, p)
}

// FromContext returns the principal of ctx: nil when access control is off.
func FromContext(ctx context.Context) *Principal {
	p, _ := ctx.Value(principalKey{}).(*Principal)
	return p
}

// token is one line of the file.
type token struct {
	digest [sha256.Size]byte
	p      *Principal
}

// Tokens is one reading of the file.
type Tokens struct {
	list []token
}

// Len is the number of tokens.
func (t *Tokens) Len() int { return len(t.list) }

// Parse reads lines `NAME ROLE SHA256HEX [POOLS]`; blank lines and lines starting with
// # are skipped. An error names the line, never its hash.
func Parse(r io.Reader) (*Tokens, error) {
	t := &Tokens{}
	names := map[string]bool{}
	digests := map[[sha256.Size]byte]bool{}
	sc := bufio.NewScanner(r)
	for n := 1; sc.Scan(); n++ {
		line := strings.TrimSpace(sc.Text())
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		f := strings.Fields(line)
		if len(f) != 3 && len(f) != 4 {
			return nil, fmt.Errorf("line %d: want NAME ROLE SHA256HEX [POOLS], got %d fields", n, len(f))
		}
		name := f[0]
		role, ok := ParseRole(f[1])
		if !ok {
			return nil, fmt.Errorf("line %d (%s): role must be admin, client or viewer, got %q", n, name, f[1])
		}
		var digest [sha256.Size]byte
		if len(f[2]) != 2*sha256.Size {
			return nil, fmt.Errorf("line %d (%s): the third field must be a SHA-256 in 64 hex digits", n, name)
		}
		if _, err := hex.Decode(digest[:], []byte(f[2])); err != nil {
			return nil, fmt.Errorf("line %d (%s): the third field must be a SHA-256 in 64 hex digits", n, name)
		}
		if names[name] {
			return nil, fmt.Errorf("line %d: the name %s is on an earlier line too", n, name)
		}
		if digests[digest] {
			return nil, fmt.Errorf("line %d (%s): the same token is on an earlier line too", n, name)
		}
		names[name], digests[digest] = true, true
		p := newPrincipal(name, role)
		if len(f) == 4 {
			for pool := range strings.SplitSeq(f[3], ",") {
				if pool == "" {
					return nil, fmt.Errorf("line %d (%s): an empty pool in %q", n, name, f[3])
				}
				p.Pools = append(p.Pools, pool)
			}
		}
		t.list = append(t.list, token{digest: digest, p: p})
	}
	if err := sc.Err(); err != nil {
		return nil, err
	}
	return t, nil
}

// lookup finds the principal of tok, comparing its digest with every line's in
// constant time.
func (t *Tokens) lookup(tok string) *Principal {
	sum := sha256.Sum256([]byte(tok))
	var found *Principal
	for i := range t.list {
		if subtle.ConstantTimeCompare(sum[:], t.list[i].digest[:]) == 1 {
			found = t.list[i].p
		}
	}
	return found
}

// same reports whether a and b are the same line (so a reread keeps its streams).
func same(a, b token) bool {
	return a.digest == b.digest && a.p.Name == b.p.Name && a.p.Role == b.p.Role && slices.Equal(a.p.Pools, b.p.Pools)
}

// Guard holds the tokens in force and authenticates requests with them.
type Guard struct {
	path   string
	tokens atomic.Pointer[Tokens]
	mu     sync.Mutex // one reload at a time
	failed func()
}

// ReadFile reads the file at path.
func ReadFile(path string) (*Tokens, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	return Parse(bytes.NewReader(data))
}

// NewGuard reads the file at path. failed, if not nil, is called for every request
// refused for a missing or unknown token.
func NewGuard(path string, failed func()) (*Guard, error) {
	t, err := ReadFile(path)
	if err != nil {
		return nil, err
	}
	g := &Guard{path: path, failed: failed}
	g.tokens.Store(t)
	return g, nil
}

// Tokens returns the tokens in force.
func (g *Guard) Tokens() *Tokens { return g.tokens.Load() }

// Reload rereads the file. On an error the tokens in force stay. The streams of
// tokens the new file no longer holds (or holds with another role or pools) end.
func (g *Guard) Reload() (*Tokens, error) {
	g.mu.Lock()
	defer g.mu.Unlock()
	next, err := ReadFile(g.path)
	if err != nil {
		return nil, err
	}
	old := g.tokens.Load()
	for i, tok := range next.list {
		if j := slices.IndexFunc(old.list, func(o token) bool { return same(o, tok) }); j >= 0 {
			next.list[i] = old.list[j] // the same principal: its streams go on
		}
	}
	g.tokens.Store(next)
	for _, o := range old.list {
		if !slices.ContainsFunc(next.list, func(n token) bool { return n.p == o.p }) {
			o.p.revoke()
		}
	}
	return next, nil
}

// Authenticate returns the principal of a request's Authorization header value, or
// nil when it names no known token.
func (g *Guard) Authenticate(header string) *Principal {
	tok, ok := bearer(header)
	if !ok {
		return nil
	}
	return g.tokens.Load().lookup(tok)
}

// bearer returns the token of an `Authorization: Bearer TOKEN` value.
func bearer(header string) (string, bool) {
	scheme, tok, ok := strings.Cut(header, " ")
	if !ok || !strings.EqualFold(scheme, "Bearer") {
		return "", false
	}
	tok = strings.TrimSpace(tok)
	return tok, tok != ""
}

// Failed counts one refused attempt.
func (g *Guard) Failed() {
	if g.failed != nil {
		g.failed()
	}
}
