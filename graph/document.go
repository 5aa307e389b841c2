package graph

import (
	"cmp"
	"context"
	"net/http"
	"strings"
	"time"

	"github.com/99designs/gqlgen/graphql"
	"github.com/99designs/gqlgen/graphql/errcode"
	"github.com/vektah/gqlparser/v2/ast"
	"github.com/vektah/gqlparser/v2/gqlerror"
	"github.com/vektah/gqlparser/v2/parser"

	"github.com/keypool/keypool/keystore"
	"github.com/keypool/keypool/wire"
)

// codeComplexity is gqlgen's code for an operation that asks too much at once; the
// document limits answer with it too.
const codeComplexity = "COMPLEXITY_LIMIT_EXCEEDED"

// operationChecks is keypool's extension of the executor, used after the persisted
// queries' and the complexity limit. As a parameter mutator it checks each document
// the query cache does not hold against the document limits (limits.go) before gqlgen
// parses and validates it: gqlparser's validator and gqlgen's complexity walk are
// quadratic or worse in some shapes (repeated fields, fragment fan-out), and gqlgen
// validates before the complexity limit runs. The check is one pass over the text,
// a parse with the token limit, then one walk of the syntax tree that writes every
// fragment spread out as the validator would: each step linear in what the limits
// allow. As the last operation-context mutator it sees only operations that passed
// every check (gqlgen stops at the first that fails): it refuses a subscription over
// plain HTTP and anything but a query over GET, then commits the operation's parked
// cache additions (admission).
type operationChecks struct {
	docs *boundedCache[*ast.QueryDocument]
}

var (
	_ graphql.HandlerExtension          = operationChecks{}
	_ graphql.OperationParameterMutator = operationChecks{}
	_ graphql.OperationContextMutator   = operationChecks{}
)

func (operationChecks) ExtensionName() string                          { return "OperationChecks" }
func (operationChecks) Validate(schema graphql.ExecutableSchema) error { return nil }

func (d operationChecks) MutateOperationParameters(ctx context.Context, params *graphql.RawParams) *gqlerror.Error {
	if params.Query == "" {
		return coded(wire.CodeBadRequest, "the request has no query")
	}
	if d.docs.Contains(params.Query) {
		return nil // it passed before
	}
	tokens, err := scanDocument(params.Query)
	if err != nil {
		return err
	}
	doc, perr := parser.ParseQueryWithTokenLimit(&ast.Source{Input: params.Query}, MaxDocumentTokens)
	if perr != nil {
		err = gqlerror.WrapIfUnwrapped(perr)
		errcode.Set(err, errcode.ParseFailed)
		return err
	}
	if err = measureDocument(doc); err == nil {
		admissionFor(ctx).docCost = documentCost(len(params.Query), tokens)
	}
	return err
}

func (operationChecks) MutateOperationContext(ctx context.Context, opCtx *graphql.OperationContext) *gqlerror.Error {
	method, _ := ctx.Value(plainHTTPKey{}).(string)
	switch op := opCtx.Operation.Operation; {
	case method == http.MethodGet && op != ast.Query:
		return coded(wire.CodeMethodNotAllowed, "a %s must be sent with POST", op)
	case method != "" && op == ast.Subscription:
		return coded(wire.CodeBadRequest, "a subscription needs a websocket, or a POST with Accept: text/event-stream")
	}
	if a, ok := opCtx.Stats.GetExtension(admissionName).(*admission); ok {
		for _, commit := range a.commits {
			commit()
		}
	}
	return nil
}

// astBytesPerToken is what a parsed document costs in memory per token (gqlparser
// allocates a node, a position and often a slice per token), rounded up from what it
// was measured at, so that the query cache is bounded by what it really holds.
const astBytesPerToken = 400

func documentCost(queryBytes, tokens int) int {
	return queryBytes + tokens*astBytesPerToken
}

// scanDocument counts the tokens of q (comments included) and checks its nesting, the
// length of its names and numbers and the bytes of its strings, without allocating.
// It follows GraphQL's lexical grammar closely enough to count; gqlparser judges
// whatever it lets through, under the same token limit.
func scanDocument(q string) (tokens int, err *gqlerror.Error) {
	depth, stringBytes := 0, 0
	for i := 0; i < len(q); {
		c, j := q[i], i+1 // the token is q[i:j]
		if strings.IndexByte(" \t\n\r,", c) >= 0 {
			i++
			continue
		}
		if strings.HasPrefix(q[i:], "\uFEFF") {
			i += len("\uFEFF")
			continue
		}
		if tokens++; tokens > MaxDocumentTokens {
			return 0, coded(errcode.ParseFailed, "the document has more than %d tokens", MaxDocumentTokens)
		}
		switch {
		case c == '#':
			j = len(q)
			if k := strings.IndexAny(q[i:], "\n\r"); k >= 0 {
				j = i + k
			}
		case strings.HasPrefix(q[i:], `"""`):
			for j = i + 3; ; {
				k := strings.Index(q[j:], `"""`)
				if k < 0 {
					j = len(q)
					break
				}
				if j += k + 3; q[j-4] != '\\' { // \""" is an escaped quote
					break
				}
			}
			stringBytes += j - i + 16*strings.Count(q[i:j], "\n") // gqlparser splits a block string into lines
		case c == '"':
			for j < len(q) && q[j] != '"' && q[j] != '\n' && q[j] != '\r' {
				if q[j] == '\\' {
					j++
				}
				j++
			}
			j = min(j+1, len(q))
			stringBytes += j - i
		case c == '{' || c == '[' || c == '(':
			if depth++; depth > MaxDocumentDepth {
				return 0, coded(errcode.ParseFailed, "the document nests deeper than %d", MaxDocumentDepth)
			}
		case c == '}' || c == ']' || c == ')':
			depth = max(depth-1, 0)
		case strings.HasPrefix(q[i:], "..."):
			j = i + 3
		case c == '_' || c == '-' || isAlnum(c):
			for j < len(q) && (isAlnum(q[j]) || strings.IndexByte("_.+-", q[j]) >= 0) && !strings.HasPrefix(q[j:], "...") {
				j++
			}
			if j-i > MaxTokenBytes {
				return 0, coded(errcode.ParseFailed, "the document has a name or number longer than %d bytes", MaxTokenBytes)
			}
		}
		if stringBytes > MaxDocumentStringBytes {
			return 0, coded(errcode.ParseFailed, "the document's strings hold more than %d bytes", MaxDocumentStringBytes)
		}
		i = j
	}
	return tokens, nil
}

func isAlnum(c byte) bool {
	return c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9'
}

// measure walks a parsed document as the validator will, fragment spreads written out,
// and stops at the first limit passed.
type measure struct {
	fragments map[string]*ast.FragmentDefinition
	spreading map[string]bool // the fragments being written out on the current path
	nodes     int
	schema    int // __schema fields in the current operation
	err       *gqlerror.Error
}

// responseName is one response name of a selection set, fragments merged in: how
// often it is selected, and the merged selection set below it.
type responseName struct {
	repeats int
	below   map[string]*responseName
}

func measureDocument(doc *ast.QueryDocument) *gqlerror.Error {
	m := &measure{fragments: make(map[string]*ast.FragmentDefinition, len(doc.Fragments)), spreading: map[string]bool{}}
	for _, f := range doc.Fragments {
		if _, ok := m.fragments[f.Name]; !ok { // the validator uses the first of a name too
			m.fragments[f.Name] = f
		}
	}
	for _, op := range doc.Operations {
		m.schema = 0
		m.add(len(op.VariableDefinitions))
		for _, v := range op.VariableDefinitions {
			m.directives(v.Directives)
		}
		m.directives(op.Directives)
		m.selections(op.SelectionSet, map[string]*responseName{}, 1, false)
	}
	// The validator walks every fragment definition on its own as well.
	for _, f := range doc.Fragments {
		m.schema = 0
		m.directives(f.Directives)
		m.selections(f.SelectionSet, map[string]*responseName{}, 1, false)
	}
	return m.err
}

// add counts n nodes, and reports whether the walk may go on.
func (m *measure) add(n int) bool {
	if m.nodes += n; m.err == nil && m.nodes > MaxDocumentNodes {
		m.err = coded(codeComplexity, "the document has more than %d fields, arguments and directives, fragments written out", MaxDocumentNodes)
	}
	return m.err == nil
}

func (m *measure) directives(list ast.DirectiveList) {
	for _, d := range list {
		if !m.add(1 + len(d.Arguments)) {
			return
		}
	}
}

// selections walks set until an error is found. A node limit passed by a selection's
// directives is reported unless the selection itself breaks a rule.
func (m *measure) selections(set ast.SelectionSet, names map[string]*responseName, depth int, inSchema bool) {
	if depth > MaxDocumentDepth && m.err == nil {
		m.err = coded(codeComplexity, "the document selects deeper than %d, fragments written out", MaxDocumentDepth)
	}
	for _, sel := range set {
		if m.err != nil {
			return
		}
		switch s := sel.(type) {
		case *ast.Field:
			if m.add(1 + len(s.Arguments)) {
				m.directives(s.Directives)
				m.field(s, names, depth, inSchema)
			}
		case *ast.InlineFragment:
			if m.add(1) {
				m.directives(s.Directives)
				m.selections(s.SelectionSet, names, depth, inSchema)
			}
		case *ast.FragmentSpread:
			if !m.add(1) {
				return
			}
			m.directives(s.Directives)
			switch def := m.fragments[s.Name]; {
			case def == nil: // the validator reports an unknown fragment
			case m.spreading[s.Name]:
				m.err = coded(errcode.ValidationFailed, "Cannot spread fragment %q within itself", s.Name)
			default:
				m.spreading[s.Name] = true
				m.selections(def.SelectionSet, names, depth, inSchema)
				delete(m.spreading, s.Name)
			}
		}
	}
}

func (m *measure) field(f *ast.Field, names map[string]*responseName, depth int, inSchema bool) {
	name := cmp.Or(f.Alias, f.Name)
	if f.Name == "__schema" {
		if m.schema++; m.schema > MaxSchemaFields {
			m.err = coded(codeComplexity, "the operation selects __schema more than %d times", MaxSchemaFields)
			return
		}
	}
	if inSchema && name != f.Name {
		m.err = coded(codeComplexity, "aliases are not allowed under __schema (%s: %s)", name, f.Name)
		return
	}
	r := names[name]
	if r == nil {
		r = &responseName{}
		names[name] = r
	}
	if r.repeats++; r.repeats > MaxResponseNameRepeats {
		m.err = coded(codeComplexity, "the document selects %q more than %d times in one selection set", name, MaxResponseNameRepeats)
		return
	}
	if len(f.SelectionSet) > 0 {
		if r.below == nil {
			r.below = map[string]*responseName{}
		}
		m.selections(f.SelectionSet, r.below, depth+1, inSchema || f.Name == "__schema")
	}
}

// admission holds what one operation would add to the caches. gqlgen adds a document
// to the query cache once it validates, before the complexity limit has looked at
// it, and the persisted queries' extension adds a text before it is even parsed; the
// caches park those additions here, and operationChecks commits them once every
// check has passed. An operation that fails leaves no trace in either cache.
type admission struct {
	docCost int      // documentCost of the query, if operationChecks measured it
	commits []func() // parked additions
}

const admissionName = "keypool.admission"

// admissionFor returns the operation's admission, made on first use; nil outside an
// operation.
func admissionFor(ctx context.Context) *admission {
	if !graphql.HasOperationContext(ctx) {
		return nil
	}
	stats := &graphql.GetOperationContext(ctx).Stats
	a, ok := stats.GetExtension(admissionName).(*admission)
	if !ok {
		a = &admission{}
		stats.SetExtension(admissionName, a)
	}
	return a
}

// generateKeysComplexity returns the complexity of generateKeys: its selection, once
// (keylist.go writes the keys without gqlgen's per-key work), plus its keys' share of
// generateShare, which -max-generate keys take whole. Making keys is what costs, and
// mutation fields run one after another: without it, 100 aliases of
// generateKeys(count: 10000) would make a million keys at once; with it, a request
// makes at most 4/3 of -max-generate keys. A count the store refuses costs 1: it
// makes no key.
func generateKeysComplexity(maxGenerate int) func(childComplexity int, count int64, _ *string) int {
	return func(childComplexity int, count int64, _ *string) int {
		if count < 1 || count > int64(maxGenerate) {
			return 1
		}
		share := (int64(generateShare)*count + int64(maxGenerate) - 1) / int64(maxGenerate)
		return max(childComplexity, 1) + int(share)
	}
}

// importKeysComplexity prices an import by the keys it makes, as generateKeys' count.
func importKeysComplexity(maxGenerate int) func(childComplexity int, _ *string, keys []*keystore.KeyInput, _ *time.Duration) int {
	return func(childComplexity int, _ *string, keys []*keystore.KeyInput, _ *time.Duration) int {
		return generateKeysComplexity(maxGenerate)(childComplexity, int64(len(keys)), nil)
	}
}

// generateShare is the complexity of making -max-generate keys, or of reading a page
// of keystore.MaxListFirst keys.
const generateShare = ComplexityLimit * 3 / 4

// keysComplexity prices a page of keys by its size as generateKeysComplexity prices
// the keys it makes, so that no operation reads more than about MaxListFirst keys.
func keysComplexity(childComplexity int, _ *string, _ *keystore.Status, first *int64, _ *string) int {
	return generateKeysComplexity(keystore.MaxListFirst)(childComplexity, int64(pageSize(first)), nil)
}

// historyComplexity prices history as a full page of keys: it answers up to
// keystore.MaxHistorySamples objects.
func historyComplexity(childComplexity int, _ *string, _ *time.Time) int {
	return generateKeysComplexity(keystore.MaxListFirst)(childComplexity, keystore.MaxHistorySamples, nil)
}

// acquireKeyComplexity is gqlgen's (1 and its selection), and waitShare more for an
// acquire that may wait: without it, 100 aliases of acquireKey(wait: "30s") would hold
// their request for 50 minutes; with it, an operation waits at most once.
func acquireKeyComplexity(childComplexity int, _ *string, _ *time.Duration, wait *time.Duration, _ *string) int {
	c := 1 + childComplexity
	if wait != nil && *wait > 0 {
		c += waitShare
	}
	return c
}

// waitShare is the complexity of a wait: more than half the limit, so that two never fit.
const waitShare = ComplexityLimit * 3 / 4
