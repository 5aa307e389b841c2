package auth

import (
	"context"

	"github.com/keypool/keypool/keystore"
	"github.com/keypool/keypool/wire"
)

// leastRole is the one table of what each role may do: every operation (a GraphQL
// root field; REST routes and /metrics name the same operations) and the least role
// that may run it. An operation missing here is refused to every role, admin too, so
// that a new one cannot be served without a rule (auth's tests walk the schema and
// the OpenAPI document to find such).
var leastRole = map[string]Role{
	// Reads.
	"key":       Viewer,
	"keys":      Viewer,
	"stats":     Viewer,
	"pools":     Viewer,
	"history":   Viewer,
	"keyEvents": Viewer,
	"metrics":   Viewer,
	// Introspection reads the schema only.
	"__schema":   Viewer,
	"__type":     Viewer,
	"__typename": Viewer,
	// A client's work with leases.
	"acquireKey": Client,
	"unblockKey": Client,
	"renewLease": Client,
	"keepAlive":  Client,
	// What changes the pool's keys.
	"generateKeys": Admin,
	"importKeys":   Admin,
	"deleteKey":    Admin,
	"restoreKey":   Admin,
}

// LeastRole returns the least role that may run op, and whether op has a rule.
func LeastRole(op string) (Role, bool) {
	r, ok := leastRole[op]
	return r, ok
}

// Allow decides whether the principal of ctx may run op: nil when it may, or when
// access control is off (no principal); otherwise an error of code UNAUTHENTICATED
// (no token) or FORBIDDEN.
func Allow(ctx context.Context, op string) error {
	p := FromContext(ctx)
	if p == nil {
		return nil
	}
	if p.Role == None {
		return keystore.Errorf(wire.CodeUnauthenticated, "a token is needed: Authorization: Bearer TOKEN")
	}
	least, ok := leastRole[op]
	switch {
	case !ok:
		return keystore.Errorf(wire.CodeForbidden, "%s has no access rule: refused to every token", op)
	case p.Role < least:
		return keystore.Errorf(wire.CodeForbidden, "%s needs the role %s; the token %s is %s", op, least, p.Name, p.Role)
	}
	return nil
}

// AllowPool decides whether the principal of ctx may act on pool: nil when it may, or
// when access control is off; otherwise an error of code FORBIDDEN.
func AllowPool(ctx context.Context, pool string) error {
	p := FromContext(ctx)
	if p == nil || p.MayUse(pool) {
		return nil
	}
	return keystore.Errorf(wire.CodeForbidden, "the token %s may not act on the pool %q", p.Name, pool)
}
