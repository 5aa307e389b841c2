package client

import (
	"strconv"
	"time"

	"github.com/keypool/keypool/client/internal/gen"
)

// Status is the state of a key.
type Status string

// The states of a key.
const (
	Available   Status = "AVAILABLE"
	Blocked     Status = "BLOCKED"
	Cooling     Status = "COOLING"
	Quarantined Status = "QUARANTINED"
)

// Key is a snapshot of one key of the pool. Its JSON form uses the schema's field
// names.
type Key struct {
	ID string `json:"id"`
	// Pool is the pool the key belongs to.
	Pool   string `json:"pool"`
	Status Status `json:"status"`
	// CreatedAt is when the key was generated.
	CreatedAt time.Time `json:"createdAt"`
	// ExpiresAt is the keep-alive deadline: the key is deleted for good then unless
	// KeepAlive moves it.
	ExpiresAt time.Time `json:"expiresAt"`
	// Lease is the current lease (without its Key); nil unless Status is Blocked.
	Lease *LeaseInfo `json:"lease"`
	// CoolingUntil is when a COOLING key's cool-down ends; nil in every other state.
	CoolingUntil *time.Time `json:"coolingUntil"`
	// Name is an imported key's label; "" for none.
	Name    string  `json:"name,omitempty"`
	History History `json:"history"`
}

// LeaseInfo is a lease as the server describes it: the right to use a key until
// ExpiresAt. (Lease is the helper that holds one.)
type LeaseInfo struct {
	// Token names the lease: unblocking or renewing with it succeeds only while this
	// lease holds the key.
	Token string `json:"token"`
	// Fence grows with every lease the pool grants: pass it to systems downstream so
	// that they can refuse a holder whose lease has since been granted to another.
	Fence int64 `json:"fence"`
	// Fence64 is Fence as a string of decimal digits, for readers of this JSON (jq,
	// JavaScript) whose numbers are not exact past 2^53.
	Fence64    string    `json:"fence64"`
	AcquiredAt time.Time `json:"acquiredAt"`
	ExpiresAt  time.Time `json:"expiresAt"`
	// Holder is who took the lease, as the acquire said; "" when it said nothing.
	Holder string `json:"holder,omitempty"`
	// Secret is what the holder uses: an imported key's secret, or a generated key's
	// id. Set in the answers of AcquireKey and RenewLease only.
	Secret string `json:"secret,omitempty"`
	// Key is the key the lease holds, as it was when the lease was read; nil for the
	// lease inside a Key.
	Key *Key `json:"key,omitempty"`
}

// History tells how a key has been used.
type History struct {
	TimesAcquired int `json:"timesAcquired"`
	LeasesExpired int `json:"leasesExpired"`
	// LastAcquiredAt is nil until the key is first acquired.
	LastAcquiredAt *time.Time `json:"lastAcquiredAt"`
	// Failures counts the failures recorded (unblocks with Failed, leases that ran
	// out); ConsecutiveFailures those since the last unblock without one.
	Failures            int `json:"failures"`
	ConsecutiveFailures int `json:"consecutiveFailures"`
}

// Stats counts the keys of a pool, or of every pool, by state.
type Stats struct {
	Total     int `json:"total"`
	Available int `json:"available"`
	Blocked   int `json:"blocked"`
	// Cooling and Quarantined count the keys held back.
	Cooling     int `json:"cooling"`
	Quarantined int `json:"quarantined"`
	// Waiting counts the acquires waiting now for a key (with a Redis store, those
	// waiting on the server asked).
	Waiting int `json:"waiting"`
}

// Pool is a named pool of keys with its counts.
type Pool struct {
	Name  string `json:"name"`
	Stats Stats  `json:"stats"`
}

// EventType says what happened to a key.
type EventType string

// The event types of keyEvents.
const (
	Generated EventType = "GENERATED"
	Acquired  EventType = "ACQUIRED"
	Unblocked EventType = "UNBLOCKED"
	Released  EventType = "RELEASED" // the lease ran out
	Deleted   EventType = "DELETED"
	Expired   EventType = "EXPIRED" // not kept alive in time
)

// EventTypes lists every event type, in the schema's order.
var EventTypes = []EventType{Generated, Acquired, Unblocked, Released, Deleted, Expired}

// Event is one thing that happened to one key.
type Event struct {
	// Seq grows by one per event across the pool's stream of events.
	Seq int64 `json:"seq"`
	// Seq64 is Seq as a string of decimal digits, for readers of this JSON whose
	// numbers are not exact past 2^53.
	Seq64 string `json:"seq64"`
	// Stream names that stream: it changes when the pool's events start again from
	// seq 1 (an in-memory server restarted, a Redis pool made anew).
	Stream string `json:"stream"`
	// Pool is the key's pool, whose stream it is.
	Pool  string    `json:"pool"`
	Type  EventType `json:"type"`
	KeyID string    `json:"keyId"`
	// At is when it happened; for RELEASED and EXPIRED, the deadline that passed.
	At time.Time `json:"at"`
	// Holder is the lease's holder on an ACQUIRED event whose acquire named one.
	Holder string `json:"holder,omitempty"`
}

func keyFrom(k *gen.KeyFields) Key {
	key := Key{
		ID:        k.Id,
		Pool:      k.Pool,
		Status:    Status(k.Status),
		CreatedAt: k.CreatedAt,
		ExpiresAt: k.ExpiresAt,
		History: History{
			TimesAcquired:       k.History.TimesAcquired,
			LeasesExpired:       k.History.LeasesExpired,
			LastAcquiredAt:      k.History.LastAcquiredAt,
			Failures:            k.History.Failures,
			ConsecutiveFailures: k.History.ConsecutiveFailures,
		},
		CoolingUntil: k.CoolingUntil,
		Name:         deref(k.Name),
	}
	if l := k.Lease; l != nil {
		key.Lease = &LeaseInfo{Token: l.Token, Fence: bigInt(l.Fence64), Fence64: l.Fence64, AcquiredAt: l.AcquiredAt, ExpiresAt: l.ExpiresAt, Holder: deref(l.Holder)}
	}
	return key
}

func leaseFrom(l *gen.LeaseFields) LeaseInfo {
	key := keyFrom(&l.Key)
	return LeaseInfo{Token: l.Token, Fence: bigInt(l.Fence64), Fence64: l.Fence64, AcquiredAt: l.AcquiredAt, ExpiresAt: l.ExpiresAt, Holder: deref(l.Holder), Secret: deref(l.Secret), Key: &key}
}

// deref reads an optional string: "" for null.
func deref(s *string) string {
	if s == nil {
		return ""
	}
	return *s
}

// bigInt reads a BigInt the server wrote: a string of decimal digits (schema.graphqls
// has it so; anything else reads as 0).
func bigInt(s string) int64 {
	n, _ := strconv.ParseInt(s, 10, 64)
	return n
}
