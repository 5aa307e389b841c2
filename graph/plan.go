package graph

import (
	"bytes"
	"context"
	"encoding/json"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/99designs/gqlgen/graphql"

	"github.com/keypool/keypool/keystore"
)

// A plan encodes the events of one keyEvents selection straight to the response
// gqlgen would send for each (`{"data":{"keyEvents":{…}}}`, aliases, fragments and
// @skip/@include resolved by graphql.CollectFields), without executing the selection
// per event and per subscriber. Subscriptions with the same selection share one plan,
// and its recent payloads, so that an event is encoded once per distinct selection and
// the same bytes go to every subscriber that wants them.
type plan struct {
	key    string
	root   string // the response name of keyEvents
	fields []planField
	cache  []atomic.Pointer[payload] // by seq, modulo its length; nil: not cached
	set    *planSet
	refs   int // subscriptions using it, under set.mu
}

// planField is one response entry of a KeyEvent: its response name, and what it shows.
type planField struct {
	alias string
	value eventField
}

type eventField uint8

const (
	fieldSeq eventField = iota
	fieldType
	fieldKeyID
	fieldAt
	fieldTypename
)

var eventFields = map[string]eventField{
	"seq": fieldSeq, "type": fieldType, "keyId": fieldKeyID, "at": fieldAt, "__typename": fieldTypename,
}

// payload is one event encoded by one plan.
type payload struct {
	seq   int64
	bytes []byte
}

// The payload cache: each of the first maxCachedPlans distinct selections keeps the
// payloads of its last planCacheSlots events, as many as the default event ring, so
// that subscribers of one selection share each encoding however far apart in the
// ring the workers find them (a subscriber a ring behind is cut); other selections
// encode for each subscriber (a few hundred nanoseconds, still no gqlgen execution).
// Bound: 4 plans × 65,536 payloads of some 200 bytes, about 50 MiB at the very worst;
// a slot holds nothing until an event is encoded into it.
const (
	maxCachedPlans = 4
	planCacheSlots = 1 << 16 // a power of two
)

// planSet holds the plans of the live fan-out subscriptions, by selection.
type planSet struct {
	mu     sync.Mutex
	plans  map[string]*plan
	cached int
	obs    FanoutObserver
}

func newPlanSet(obs FanoutObserver) *planSet {
	return &planSet{plans: map[string]*plan{}, obs: obs}
}

// keyEventFragmentTypes is what a KeyEvent selection's fragments may name.
var keyEventFragmentTypes = []string{"KeyEvent"}

// forField returns the plan of the keyEvents field being resolved in ctx (taking a
// reference: release it), or nil if its selection is not one a plan encodes exactly
// (a deferred fragment), in which case gqlgen executes it.
func (s *planSet) forField(ctx context.Context) *plan {
	fc := graphql.GetFieldContext(ctx)
	opCtx := graphql.GetOperationContext(ctx)
	if fc == nil || opCtx == nil {
		return nil
	}
	collected := graphql.CollectFields(opCtx, fc.Field.Selections, keyEventFragmentTypes)
	fields := make([]planField, 0, len(collected))
	var key strings.Builder
	key.WriteString(fc.Field.Alias)
	for _, f := range collected {
		value, ok := eventFields[f.Name]
		if !ok || f.IsDeferred() {
			return nil
		}
		fields = append(fields, planField{alias: f.Alias, value: value})
		key.WriteByte(0)
		key.WriteString(f.Alias)
		key.WriteByte(1)
		key.WriteString(f.Name)
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	p := s.plans[key.String()]
	if p == nil {
		p = &plan{key: key.String(), root: fc.Field.Alias, fields: fields, set: s}
		if s.cached < maxCachedPlans {
			p.cache = make([]atomic.Pointer[payload], planCacheSlots)
			s.cached++
		}
		s.plans[p.key] = p
	}
	p.refs++
	return p
}

// release drops a reference to p; the last one forgets it.
func (p *plan) release() {
	s := p.set
	s.mu.Lock()
	defer s.mu.Unlock()
	p.refs--
	if p.refs == 0 {
		delete(s.plans, p.key)
		if p.cache != nil {
			s.cached--
		}
	}
}

// payload returns ev as this plan's subscribers receive it: the response's JSON.
// Safe for concurrent use; the bytes are shared and must not be modified.
func (p *plan) payload(ev *keystore.Event) []byte {
	if p.cache == nil {
		return p.encode(ev)
	}
	slot := &p.cache[ev.Seq&(planCacheSlots-1)]
	if c := slot.Load(); c != nil && c.seq == ev.Seq {
		return c.bytes
	}
	b := p.encode(ev)
	slot.Store(&payload{seq: ev.Seq, bytes: b})
	return b
}

// encode writes the response gqlgen writes for ev: its data, marshalled by gqlgen's
// own marshalers for each field, in the selection's order, as encoding/json then
// writes a graphql.Response (which escapes <, > and & in strings).
func (p *plan) encode(ev *keystore.Event) []byte {
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
		b = append(b, ':')
		switch f.value {
		case fieldSeq:
			b = strconv.AppendInt(b, ev.Seq, 10)
		case fieldType:
			b = appendMarshaled(b, graphql.MarshalString(string(ev.Type)))
		case fieldKeyID:
			b = appendMarshaled(b, graphql.MarshalID(ev.KeyID))
		case fieldAt:
			b = append(b, '"')
			b = ev.At.UTC().AppendFormat(b, time.RFC3339Nano)
			b = append(b, '"')
		case fieldTypename:
			b = append(b, `"KeyEvent"`...)
		}
	}
	b = append(b, "}}}"...)
	if bytes.ContainsAny(b, "<>&\u2028\u2029") {
		var escaped bytes.Buffer
		json.HTMLEscape(&escaped, b)
		b = escaped.Bytes()
	}
	return b
}

// appendMarshaled appends what a gqlgen marshaler writes.
func appendMarshaled(b []byte, m graphql.Marshaler) []byte {
	w := sliceWriter{b}
	m.MarshalGQL(&w)
	return w.b
}

type sliceWriter struct{ b []byte }

func (w *sliceWriter) Write(p []byte) (int, error) {
	w.b = append(w.b, p...)
	return len(p), nil
}
