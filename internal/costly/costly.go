// Package costly writes the costliest GraphQL requests a client can send keypool
// within the request body limit: one shape per way a document can make the parser,
// the validator, the complexity walk or the executor do more than linear work, or
// allocate more than its size. The benchmark in graph/ and the hostile tests drive
// the server with them.
package costly

import (
	"encoding/json"
	"fmt"
	"slices"
	"strings"
)

// Doc is one request: its shape's name and its JSON POST body.
type Doc struct {
	Name string
	Body []byte
}

// shape builds a document of n repeated units.
type shape struct {
	name string
	// tokens is how many GraphQL tokens one unit adds (comments count as tokens).
	tokens int
	// doc returns the document of n units, with its operationName and variables
	// (either may be empty). A shape that writes its own JSON returns body instead.
	doc func(n int) (query, operationName string, variables any)
	// body, if set, writes the whole JSON body for n units.
	body func(n int) []byte
}

func repeat(n int, unit func(i int) string) string {
	var b strings.Builder
	for i := range n {
		b.WriteString(unit(i))
	}
	return b.String()
}

func same(s string) func(int) string { return func(int) string { return s } }

var shapes = []shape{
	{name: "fields/repeated", tokens: 1, doc: func(n int) (string, string, any) {
		return "{ stats {" + repeat(n, same(" total")) + " } }", "", nil
	}},
	{name: "aliases/distinct", tokens: 6, doc: func(n int) (string, string, any) {
		return "{" + repeat(n, func(i int) string { return fmt.Sprintf(" a%d: stats { total }", i) }) + " }", "", nil
	}},
	{name: "aliases/one response name", tokens: 6, doc: func(n int) (string, string, any) {
		return "{" + repeat(n, same(" a: stats { total }")) + " }", "", nil
	}},
	{name: "aliases/__typename", tokens: 3, doc: func(n int) (string, string, any) {
		return "{" + repeat(n, func(i int) string { return fmt.Sprintf(" t%d: __typename", i) }) + " }", "", nil
	}},
	{name: "fragments/one spread many times", tokens: 2, doc: func(n int) (string, string, any) {
		return "{" + repeat(n, same(" ...F")) + " } fragment F on Query { stats { total available blocked } }", "", nil
	}},
	{name: "fragments/doubling fan-out", tokens: 10, doc: func(n int) (string, string, any) {
		q := "{ ...F0 }" + repeat(n, func(i int) string {
			return fmt.Sprintf(" fragment F%d on Query { ...F%d ...F%d }", i, i+1, i+1)
		})
		return q + fmt.Sprintf(" fragment F%d on Query { stats { total } }", n), "", nil
	}},
	{name: "fragments/wide fan-out", tokens: 30, doc: func(n int) (string, string, any) {
		// Every fragment spreads every later one: n² spreads from n fragments.
		var b strings.Builder
		b.WriteString("{ ...F0 }")
		for i := range n {
			fmt.Fprintf(&b, " fragment F%d on Query { stats { total }", i)
			for j := i + 1; j < n && j < i+8; j++ {
				fmt.Fprintf(&b, " ...F%d", j)
			}
			b.WriteString(" }")
		}
		return b.String(), "", nil
	}},
	{name: "fragments/chain", tokens: 8, doc: func(n int) (string, string, any) {
		q := "{ ...F0 }" + repeat(n, func(i int) string {
			return fmt.Sprintf(" fragment F%d on Query { ...F%d }", i, i+1)
		})
		return q + fmt.Sprintf(" fragment F%d on Query { stats { total } }", n), "", nil
	}},
	{name: "fragments/cycle", tokens: 8, doc: func(n int) (string, string, any) {
		return "{ ...F0 }" + repeat(n, func(i int) string {
			return fmt.Sprintf(" fragment F%d on Query { ...F%d }", i, (i+1)%n)
		}), "", nil
	}},
	{name: "fragments/unused", tokens: 10, doc: func(n int) (string, string, any) {
		return "{ stats { total } }" + repeat(n, func(i int) string {
			return fmt.Sprintf(" fragment U%d on Query { stats { total } }", i)
		}), "", nil
	}},
	{name: "directives/on one field", tokens: 7, doc: func(n int) (string, string, any) {
		return "{ stats" + repeat(n, same(" @skip(if: false)")) + " { total } }", "", nil
	}},
	{name: "directives/on many fields", tokens: 8, doc: func(n int) (string, string, any) {
		return "{ stats {" + repeat(n, same(" total @include(if: true)")) + " } }", "", nil
	}},
	{name: "directives/unknown", tokens: 2, doc: func(n int) (string, string, any) {
		return "{ stats" + repeat(n, func(i int) string { return fmt.Sprintf(" @d%d", i) }) + " { total } }", "", nil
	}},
	{name: "variables/many definitions", tokens: 4, doc: func(n int) (string, string, any) {
		return "query(" + repeat(n, func(i int) string { return fmt.Sprintf(" $v%d: Int", i) }) + ") { stats { total } }", "", nil
	}},
	{name: "variables/many uses", tokens: 13, doc: func(n int) (string, string, any) {
		return "query($id: ID!) {" + repeat(n, func(i int) string { return fmt.Sprintf(" k%d: key(id: $id) { id }", i) }) + " }",
			"", map[string]any{"id": "k"}
	}},
	{name: "variables/wide JSON list", body: func(n int) []byte {
		return []byte(`{"query":"{ stats { total } }","variables":{"x":[` + strings.Repeat("0,", n) + `0]}}`)
	}},
	{name: "variables/wide JSON objects", body: func(n int) []byte {
		return []byte(`{"query":"{ stats { total } }","variables":{"x":[` + strings.Repeat("{},", n) + `{}]}}`)
	}},
	{name: "variables/deep JSON", body: func(n int) []byte {
		n = min(n, 9000) // encoding/json's own limit is 10000 levels
		return []byte(`{"query":"{ stats { total } }","variables":{"x":` + strings.Repeat("[", n) + strings.Repeat("]", n) + `}}`)
	}},
	{name: "variables/wide event list", body: func(n int) []byte {
		q, _ := json.Marshal(`subscription($t: [KeyEventType!]) { keyEvents(types: $t) { seq } }`)
		return []byte(`{"query":` + string(q) + `,"variables":{"t":[` + strings.Repeat(`"GENERATED",`, n) + `"EXPIRED"]}}`)
	}},
	{name: "values/deep list literal", tokens: 2, doc: func(n int) (string, string, any) {
		return "{ key(id: " + strings.Repeat("[", n) + strings.Repeat("]", n) + ") { id } }", "", nil
	}},
	{name: "values/wide list literal", tokens: 1, doc: func(n int) (string, string, any) {
		return "{ key(id: [" + repeat(n, same(" 1")) + " ]) { id } }", "", nil
	}},
	{name: "values/deep object literal", tokens: 4, doc: func(n int) (string, string, any) {
		return "{ key(id: " + repeat(n, same("{a: ")) + "1" + strings.Repeat("}", n) + ") { id } }", "", nil
	}},
	{name: "arguments/repeated", tokens: 3, doc: func(n int) (string, string, any) {
		return "{ key(" + repeat(n, same(` id: "k"`)) + ") { id } }", "", nil
	}},
	{name: "nesting/valid selections", tokens: 4, doc: func(n int) (string, string, any) {
		inner := "id"
		var b strings.Builder
		b.WriteString(`{ key(id: "k") {`)
		for range n / 2 {
			b.WriteString(" lease { key {")
		}
		b.WriteString(" " + inner)
		for range n / 2 {
			b.WriteString(" } }")
		}
		b.WriteString(" } }")
		return b.String(), "", nil
	}},
	{name: "nesting/braces", tokens: 2, doc: func(n int) (string, string, any) {
		return strings.Repeat("{ a ", n) + strings.Repeat("}", n), "", nil
	}},
	{name: "strings/one long literal", doc: func(n int) (string, string, any) {
		return `{ key(id: "` + strings.Repeat("k", n) + `") { id } }`, "", nil
	}},
	{name: "strings/escapes", doc: func(n int) (string, string, any) {
		return `{ key(id: "` + strings.Repeat(`\u0041`, n/6) + `") { id } }`, "", nil
	}},
	{name: "strings/block string of lines", doc: func(n int) (string, string, any) {
		return `{ key(id: """` + strings.Repeat("\n", n) + `""") { id } }`, "", nil
	}},
	{name: "strings/many literals", tokens: 12, doc: func(n int) (string, string, any) {
		return "{" + repeat(n, func(i int) string { return fmt.Sprintf(` k%d: key(id: "k") { id }`, i) }) + " }", "", nil
	}},
	{name: "names/one long field name", doc: func(n int) (string, string, any) {
		return "{ " + strings.Repeat("x", n) + " }", "", nil
	}},
	{name: "names/many unknown fields", tokens: 1, doc: func(n int) (string, string, any) {
		return "{" + repeat(n, func(i int) string { return fmt.Sprintf(" sats%d", i) }) + " }", "", nil
	}},
	{name: "comments/many lines", tokens: 1, doc: func(n int) (string, string, any) {
		return strings.Repeat("#\n", n) + "{ stats { total } }", "", nil
	}},
	{name: "operations/many in one document", tokens: 8, doc: func(n int) (string, string, any) {
		return repeat(n, func(i int) string { return fmt.Sprintf("query Q%d { stats { total } } ", i) }), "Q0", nil
	}},
	{name: "introspection/aliases under __schema", tokens: 10, doc: func(n int) (string, string, any) {
		return "{ __schema {" + repeat(n, func(i int) string {
			return fmt.Sprintf(" t%d: types { name fields { name } }", i)
		}) + " } }", "", nil
	}},
	{name: "introspection/__type aliases", tokens: 15, doc: func(n int) (string, string, any) {
		return "{" + repeat(n, func(i int) string {
			return fmt.Sprintf(` t%d: __type(name: "Key") { fields { name } }`, i)
		}) + " }", "", nil
	}},
	{name: "execution/aliased generateKeys", tokens: 11, doc: func(n int) (string, string, any) {
		return "mutation {" + repeat(n, func(i int) string {
			return fmt.Sprintf(" g%d: generateKeys(count: 10000) { id }", i)
		}) + " }", "", nil
	}},
}

func (s shape) build(n int) []byte {
	if s.body != nil {
		return s.body(n)
	}
	query, operationName, variables := s.doc(n)
	req := map[string]any{"query": query}
	if operationName != "" {
		req["operationName"] = operationName
	}
	if variables != nil {
		req["variables"] = variables
	}
	body, err := json.Marshal(req)
	if err != nil {
		panic(err)
	}
	return body
}

// largest returns the body of the most units whose body still fits maxBytes (and,
// if maxUnits > 0, has at most maxUnits units), by bisection.
func (s shape) largest(maxBytes, maxUnits int) []byte {
	lo, hi := 1, maxBytes
	if maxUnits > 0 {
		hi = min(hi, maxUnits)
	}
	for lo < hi {
		mid := lo + (hi-lo+1)/2
		if len(s.build(mid)) <= maxBytes {
			lo = mid
		} else {
			hi = mid - 1
		}
	}
	return s.build(lo)
}

// answers are small documents with the largest answers the limits let through: as
// many generated keys as the complexity limit allows in one request, in one field,
// in many, and with every field of a key. They must be answered, not refused.
var answers = []Doc{
	answer("answers/generateKeys, the most keys",
		"mutation { a: generateKeys(count: 10000) { id } b: generateKeys(count: 3200) { id } }"),
	answer("answers/generateKeys, many aliases",
		"mutation {"+repeat(100, func(i int) string { return fmt.Sprintf(" g%d: generateKeys(count: 66) { id }", i) })+" }"),
	answer("answers/generateKeys, every field", `mutation { generateKeys(count: 10000) { id status createdAt expiresAt
		lease { token fence acquiredAt expiresAt key { id } } history { timesAcquired leasesExpired lastAcquiredAt } } }`),
}

func answer(name, query string) Doc {
	body, err := json.Marshal(map[string]string{"query": query})
	if err != nil {
		panic(err)
	}
	return Doc{Name: name, Body: body}
}

// IsAnswer reports whether doc is one of the largest answers, which the server must
// answer without an error.
func IsAnswer(doc Doc) bool { return strings.HasPrefix(doc.Name, "answers/") }

// Documents returns every shape at its largest within maxBytes and, for shapes made
// of counted tokens, also at its largest within tokenBudget tokens (named "…/under
// the token limit"), so that the checks after the parser's are reached too; then the
// largest answers.
func Documents(maxBytes, tokenBudget int) []Doc {
	docs := slices.Clone(answers)
	for _, s := range shapes {
		docs = append(docs, Doc{Name: s.name, Body: s.largest(maxBytes, 0)})
		if s.tokens > 0 && tokenBudget > 0 {
			// Room for the tokens around the units.
			units := (tokenBudget - 40) / s.tokens
			if units > 0 {
				docs = append(docs, Doc{Name: s.name + "/under the token limit", Body: s.largest(maxBytes, units)})
			}
		}
	}
	return docs
}

// Distinct returns n different documents of the given shape name, each at its
// largest within maxBytes: distinct texts, so that no cache can answer them.
func Distinct(name string, n, maxBytes int) []Doc {
	for _, s := range shapes {
		if s.name != name {
			continue
		}
		base := s.largest(maxBytes-32, 0)
		docs := make([]Doc, n)
		for i := range docs {
			// A comment at the start makes each text distinct and leaves its meaning alone.
			var req map[string]any
			if err := json.Unmarshal(base, &req); err != nil {
				panic(err)
			}
			req["query"] = fmt.Sprintf("#%d\n", i) + req["query"].(string)
			body, _ := json.Marshal(req)
			docs[i] = Doc{Name: fmt.Sprintf("%s #%d", name, i), Body: body}
		}
		return docs
	}
	panic("no shape " + name)
}
