package fanout

import (
	"bytes"
	"context"
	"encoding/json"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"

	"github.com/99designs/gqlgen/graphql"

	"github.com/keypool/keypool/keystore"
	"github.com/keypool/keypool/wire"
)

// A Plan encodes the events of one keyEvents selection straight to the response
// gqlgen would send for each (aliases, fragments and @skip/@include resolved by
// graphql.CollectFields), without executing the selection per event and subscriber.
// Subscriptions with the same selection share one plan and its recent payloads.
type Plan struct {
	key     string
	root    string // the response name of keyEvents
	fields  []planField
	largest int                       // bytes of the largest payload it can encode, about
	turn    int                       // events one turn may carry: as many as maxTurnBytes holds
	cache   []atomic.Pointer[payload] // by seq, modulo its length; nil: not cached
	set     *Plans
	refs    int // subscriptions using it, under set.mu
}

// planField is one response entry of a KeyEvent: its response name, and what it shows.
type planField struct {
	alias string
	value *eventField
}

// eventField is a field of KeyEvent: the most bytes its value takes (about), and how
// gqlgen writes it.
type eventField struct {
	width  int
	append func(b []byte, ev *keystore.Event) []byte
}

var eventFields = map[string]*eventField{
	"seq": {20, func(b []byte, ev *keystore.Event) []byte { return strconv.AppendInt(b, ev.Seq, 10) }},
	"seq64": {22, func(b []byte, ev *keystore.Event) []byte {
		return append(strconv.AppendInt(append(b, '"'), ev.Seq, 10), '"')
	}},
	"type":   {12, func(b []byte, ev *keystore.Event) []byte { return AppendString(b, string(ev.Type)) }},
	"keyId":  {maxPayloadKeyID + 2, func(b []byte, ev *keystore.Event) []byte { return AppendString(b, ev.KeyID) }},
	"at":     {40, func(b []byte, ev *keystore.Event) []byte { return wire.AppendTime(b, ev.At) }},
	"stream": {maxPayloadKeyID + 2, func(b []byte, ev *keystore.Event) []byte { return AppendString(b, ev.Stream) }},
	"pool":   {keystore.MaxPoolName + 2, func(b []byte, ev *keystore.Event) []byte { return AppendString(b, ev.Pool) }},
	"holder": {6*keystore.MaxHolder + 2, func(b []byte, ev *keystore.Event) []byte {
		if ev.Holder == "" {
			return append(b, "null"...)
		}
		return AppendString(b, ev.Holder)
	}},
	"__typename": {10, func(b []byte, _ *keystore.Event) []byte { return append(b, `"KeyEvent"`...) }},
}

type payload struct {
	seq    int64
	stream string // each pool's stream numbers its events from 1: a seq alone names none
	bytes  []byte
}

// The payload cache, bounded in bytes: each of the first maxCachedPlans selections
// keeps the payloads of its last events, as many as planCacheBytes holds at its
// largest payload, up to a ring's worth (the whole of KeyEvent fits), so that its
// subscribers share each encoding however far apart in the ring their turns find them
// (under overload, far). Other selections, or ones too large for minCacheSlots,
// encode for each subscriber, still without gqlgen's execution.
const (
	maxCachedPlans  = 2
	planCacheBytes  = 16 << 20
	maxCacheSlots   = 1 << 16
	minCacheSlots   = 1 << 8
	maxTurnBytes    = 256 << 10 // what one turn encodes for one subscriber, at most
	maxPayloadKeyID = 64        // a key id's length, for the estimate (the pool's are 22, URL-safe)
)

// Plans holds the plans of the live subscriptions, by selection.
type Plans struct {
	mu     sync.Mutex
	plans  map[string]*Plan
	cached int
	obs    Observer
}

// ForField returns the plan of the keyEvents field being resolved in ctx (taking a
// reference: Release it), or nil if its selection is not one a plan encodes exactly
// (a deferred fragment).
func (s *Plans) ForField(ctx context.Context) *Plan {
	fc := graphql.GetFieldContext(ctx)
	collected := graphql.CollectFields(graphql.GetOperationContext(ctx), fc.Field.Selections, []string{"KeyEvent"})
	fields := make([]planField, 0, len(collected))
	var key strings.Builder
	key.WriteString(fc.Field.Alias)
	for _, f := range collected {
		value, ok := eventFields[f.Name]
		if !ok || f.IsDeferred() {
			return nil
		}
		fields = append(fields, planField{alias: f.Alias, value: value})
		key.WriteString("\x00" + f.Alias + "\x01" + f.Name)
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	p := s.plans[key.String()]
	if p == nil {
		p = newPlan(key.String(), fc.Field.Alias, fields, s)
		s.plans[p.key] = p
	}
	p.refs++
	return p
}

// newPlan sizes a plan by its largest payload: its cache (if s has room for one) and
// its turns.
func newPlan(key, root string, fields []planField, s *Plans) *Plan {
	p := &Plan{key: key, root: root, fields: fields, set: s}
	p.largest = len(`{"data":{"":{}}}`) + len(root)
	for _, f := range fields {
		p.largest += len(f.alias) + 4 + f.value.width
	}
	p.turn = max(1, min(maxTurnEvents, maxTurnBytes/p.largest))
	slots := maxCacheSlots
	for slots > minCacheSlots && slots*(p.largest+48) > planCacheBytes {
		slots /= 2
	}
	if slots*(p.largest+48) <= planCacheBytes && s.cached < maxCachedPlans {
		p.cache = make([]atomic.Pointer[payload], slots)
		s.cached++
	}
	return p
}

// Release drops a reference to p; the last one forgets it.
func (p *Plan) Release() {
	s := p.set
	s.mu.Lock()
	defer s.mu.Unlock()
	if p.refs--; p.refs == 0 {
		delete(s.plans, p.key)
		if p.cache != nil {
			s.cached--
		}
	}
}

// Payload returns ev as this plan's subscribers receive it: the response's JSON.
// Safe for concurrent use; the bytes are shared and must not be modified.
func (p *Plan) Payload(ev *keystore.Event) []byte {
	if p.cache == nil {
		return p.encode(ev)
	}
	slot := &p.cache[ev.Seq&int64(len(p.cache)-1)]
	if c := slot.Load(); c != nil && c.seq == ev.Seq && c.stream == ev.Stream {
		return c.bytes
	}
	b := p.encode(ev)
	slot.Store(&payload{seq: ev.Seq, stream: ev.Stream, bytes: b})
	return b
}

// encode writes the response gqlgen writes for ev: its data, marshalled by gqlgen's
// own marshalers for each field, in the selection's order, as encoding/json then
// writes a graphql.Response (which escapes <, > and & in strings).
func (p *Plan) encode(ev *keystore.Event) []byte {
	p.set.obs.FanoutEncoded()
	b := make([]byte, 0, 64+len(p.root)+24*len(p.fields)+len(ev.KeyID))
	b = append(b, `{"data":{`...)
	b = strconv.AppendQuote(b, p.root) // a GraphQL name: no escape is needed
	b = append(b, ":{"...)
	for i, f := range p.fields {
		if i > 0 {
			b = append(b, ',')
		}
		b = strconv.AppendQuote(b, f.alias)
		b = f.value.append(append(b, ':'), ev)
	}
	b = append(b, "}}}"...)
	if bytes.ContainsAny(b, "<>&\u2028\u2029") {
		var escaped bytes.Buffer
		json.HTMLEscape(&escaped, b)
		b = escaped.Bytes()
	}
	return b
}

// AppendString appends s as gqlgen's String and ID marshalers write it: printable
// ASCII other than a quote or a backslash as it is, anything else through them.
func AppendString(b []byte, s string) []byte {
	for i := 0; i < len(s); i++ {
		if c := s[i]; c < 0x20 || c > 0x7e || c == '"' || c == '\\' {
			w := bytes.NewBuffer(b)
			graphql.MarshalString(s).MarshalGQL(w)
			return w.Bytes()
		}
	}
	b = append(b, '"')
	b = append(b, s...)
	return append(b, '"')
}

// maxTurnEvents bounds the events one turn delivers to one subscription (and
// maxTurnBytes their bytes), so that a subscription far behind (a replay) takes its
// turns with the others.
const maxTurnEvents = 4096
