package graph

import (
	"context"
	"encoding/json"
	"net/http"
	"strconv"
	"sync"
	"time"

	"github.com/99designs/gqlgen/graphql"
	"github.com/vektah/gqlparser/v2/ast"

	"github.com/keypool/keypool/graph/model"
	"github.com/keypool/keypool/internal/bufpool"
	"github.com/keypool/keypool/keystore"
)

// Compiled operations (issue 14). The requests that services send all day are a few
// documents, each an operation of one field: acquireKey, unblockKey, renewLease,
// keepAlive, deleteKey or key. gqlgen runs each through its whole executor every time:
// an operation context, the extensions, field contexts, a field set per object, a
// buffer per response. A document that gqlgen has once accepted (parsed, validated,
// within every limit) is compiled here instead: its root field, the sources of its
// arguments (literals or variables) and the writer of its selection (objects.go).
// Its next requests call the same resolver and write the same bytes, errors
// included (through gqlgen's own error functions and the same presenter), without
// the executor.
//
// Anything a compiled operation cannot answer exactly goes to gqlgen, before any
// resolver runs: a variable of another type or shape than the plain one (gqlgen words
// the error), an acquire whose wait the complexity limit refuses, a request with
// extensions (persisted queries). Directives, fragments that defer, other fields, or
// more than one root field: never compiled.

// maxCompiledQuery is the longest document text compiled; maxCompiledOps bounds how
// many are (the table starts afresh when full). Together: at most 8 MiB of texts.
const (
	maxCompiledQuery = 8 << 10
	maxCompiledOps   = 1024
)

// compiledOps is the table of compiled operations, by document text and operation name.
type compiledOps struct {
	resolver  *Resolver
	presenter graphql.ErrorPresenterFunc
	recover   graphql.RecoverFunc

	mu  sync.RWMutex
	ops map[compiledKey]*compiledOp // nil: known, not compilable
}

type compiledKey struct{ query, operation string }

func newCompiledOps(r *Resolver, presenter graphql.ErrorPresenterFunc, recover graphql.RecoverFunc) *compiledOps {
	return &compiledOps{resolver: r, presenter: presenter, recover: recover, ops: map[compiledKey]*compiledOp{}}
}

// lookup returns the compiled operation for params, or nil.
func (c *compiledOps) lookup(params *graphql.RawParams) *compiledOp {
	if c == nil || len(params.Extensions) > 0 || len(params.Query) > maxCompiledQuery {
		return nil
	}
	c.mu.RLock()
	op := c.ops[compiledKey{params.Query, params.OperationName}]
	c.mu.RUnlock()
	return op
}

// learn compiles the operation that gqlgen has just accepted for params, once.
func (c *compiledOps) learn(params *graphql.RawParams, opCtx *graphql.OperationContext) {
	if c == nil || len(params.Extensions) > 0 || len(params.Query) > maxCompiledQuery || params.Query == "" {
		return
	}
	key := compiledKey{params.Query, params.OperationName}
	c.mu.RLock()
	_, known := c.ops[key]
	c.mu.RUnlock()
	if known {
		return
	}
	op := compile(opCtx)
	c.mu.Lock()
	if len(c.ops) >= maxCompiledOps {
		clear(c.ops)
	}
	c.ops[key] = op
	c.mu.Unlock()
}

// rootField is a field a compiled operation can answer.
type rootField uint8

const (
	rootAcquireKey rootField = iota + 1
	rootUnblockKey
	rootRenewLease
	rootKeepAlive
	rootDeleteKey
	rootKey
)

// rootFields are the fields compiled, by operation type and name, with the type of
// their answer (nil: an ID) and whether it is non-null.
var rootFields = map[ast.Operation]map[string]struct {
	field   rootField
	answer  *objType
	nonNull bool
}{
	ast.Mutation: {
		"acquireKey": {rootAcquireKey, &leaseType, false},
		"unblockKey": {rootUnblockKey, &keyType, true},
		"renewLease": {rootRenewLease, &leaseType, true},
		"keepAlive":  {rootKeepAlive, &keyType, true},
		"deleteKey":  {rootDeleteKey, nil, true},
	},
	ast.Query: {
		"key": {rootKey, &keyType, false},
	},
}

// compiledOp is one compiled operation.
type compiledOp struct {
	object   string // Mutation or Query
	field    graphql.CollectedField
	root     rootField
	nonNull  bool
	args     map[string]argSource
	fields   []objField // the answer's selection; nil for an ID
	selected int        // its fields: its complexity
	prefix   []byte     // {"data":{"<alias>":
}

// argSource is where an argument's value comes from: a literal, or a variable (with
// its definition's default, if any).
type argSource struct {
	variable string
	nonNull  bool
	value    *string // the literal, or the variable's default; nil: null or none
	hasValue bool
}

// compile returns the compiled form of opCtx's operation, or nil if it has none.
func compile(opCtx *graphql.OperationContext) *compiledOp {
	op := opCtx.Operation
	if op == nil || len(op.Directives) > 0 || hasDirectives(op.SelectionSet) {
		return nil
	}
	fields, ok := rootFields[op.Operation]
	if !ok {
		return nil
	}
	object := "Query"
	if op.Operation == ast.Mutation {
		object = "Mutation"
	}
	roots := graphql.CollectFields(opCtx, op.SelectionSet, []string{object})
	if len(roots) != 1 || roots[0].IsDeferred() {
		return nil
	}
	root := roots[0]
	def, ok := fields[root.Name]
	if !ok {
		return nil
	}
	c := &compiledOp{object: object, field: root, root: def.field, nonNull: def.nonNull, args: map[string]argSource{}}
	for _, arg := range root.Arguments {
		src, ok := compileArg(op, arg.Value)
		if !ok {
			return nil
		}
		c.args[arg.Name] = src
	}
	if def.answer != nil {
		if c.fields, c.selected, ok = planObject(opCtx, root.Selections, def.answer); !ok {
			return nil
		}
	}
	c.prefix = append(strconv.AppendQuote([]byte(`{"data":{`), root.Alias), ':')
	return c
}

// compileArg returns the source of an argument's value: a string or null literal, or
// a variable of type ID or Duration whose default, if any, is one.
func compileArg(op *ast.OperationDefinition, v *ast.Value) (argSource, bool) {
	switch v.Kind {
	case ast.StringValue, ast.BlockValue, ast.NullValue:
		return literal(v)
	case ast.Variable:
		def := op.VariableDefinitions.ForName(v.Raw)
		if def == nil || def.Type == nil || def.Type.Elem != nil ||
			(def.Type.NamedType != "ID" && def.Type.NamedType != "Duration") {
			return argSource{}, false
		}
		src := argSource{variable: v.Raw, nonNull: def.Type.NonNull}
		if def.DefaultValue != nil {
			d, ok := literal(def.DefaultValue)
			if !ok {
				return argSource{}, false
			}
			src.value, src.hasValue = d.value, true
		}
		return src, true
	}
	return argSource{}, false
}

func literal(v *ast.Value) (argSource, bool) {
	switch v.Kind {
	case ast.StringValue, ast.BlockValue:
		s := v.Raw
		return argSource{value: &s, hasValue: true}, true
	case ast.NullValue:
		return argSource{hasValue: true}, true
	}
	return argSource{}, false
}

// hasDirectives reports whether any selection in sel, or in the fragments it spreads,
// carries a directive: they may depend on variables, which a compiled selection must not.
func hasDirectives(sel ast.SelectionSet) bool {
	for _, s := range sel {
		switch s := s.(type) {
		case *ast.Field:
			if len(s.Directives) > 0 || hasDirectives(s.SelectionSet) {
				return true
			}
		case *ast.InlineFragment:
			if len(s.Directives) > 0 || hasDirectives(s.SelectionSet) {
				return true
			}
		case *ast.FragmentSpread:
			if len(s.Directives) > 0 || s.Definition == nil || len(s.Definition.Directives) > 0 ||
				hasDirectives(s.Definition.SelectionSet) {
				return true
			}
		}
	}
	return false
}

// argument returns the value of the argument called name: present and a string, or
// nil. ok is false when only gqlgen can say what the request means (a variable that
// is not a string, null where it may not be).
func (c *compiledOp) argument(name string, vars map[string]any) (value *string, ok bool) {
	src, given := c.args[name]
	if !given {
		return nil, true
	}
	if src.variable == "" {
		return src.value, true
	}
	v, present := vars[src.variable]
	if !present {
		if src.hasValue {
			return src.value, true
		}
		return nil, !src.nonNull
	}
	switch v := v.(type) {
	case string:
		return &v, true
	case nil:
		return nil, !src.nonNull
	}
	return nil, false
}

// duration returns the Duration argument called name, parsed as gqlgen's unmarshaler
// parses it; a value it refuses is left to gqlgen to refuse.
func (c *compiledOp) duration(name string, vars map[string]any) (*time.Duration, bool) {
	s, ok := c.argument(name, vars)
	if !ok || s == nil {
		return nil, ok
	}
	d, err := model.UnmarshalDuration(*s)
	if err != nil {
		return nil, false
	}
	return &d, true
}

// serve answers a request for the compiled operation c, or returns false, having
// done nothing, when gqlgen must.
func (ops *compiledOps) serve(w http.ResponseWriter, r *http.Request, mediaType string, c *compiledOp, vars map[string]any) bool {
	call, ok := c.prepare(ops.resolver, vars)
	if !ok {
		return false
	}
	ctx := graphql.WithResponseContext(r.Context(), ops.presenter, ops.recover)
	fields := &struct{ field, root graphql.FieldContext }{ // one allocation for the two
		field: graphql.FieldContext{Object: c.object, Field: c.field, IsMethod: true, IsResolver: true, NonNull: c.nonNull},
		root:  graphql.FieldContext{Object: c.object}, // as gqlgen's root: its path is the field's alone
	}
	fields.field.Parent = &fields.root
	ctx = graphql.WithFieldContext(ctx, &fields.field)
	key, id, err, panicked := ops.run(ctx, call)
	switch {
	case panicked:
		graphql.AddError(ctx, err)
	case err != nil:
		graphql.AddError(ctx, graphql.AddFieldLocationToError(ctx, err))
	case key == nil && id == nil && c.nonNull:
		graphql.AddInvalidNullError(ctx, "")
	case key == nil && id == nil:
		writeData(w, mediaType, c.prefix, []byte("null}}"))
		return true
	default:
		buf := bufpool.Get()
		defer bufpool.Put(buf)
		*buf = append(*buf, c.prefix...)
		if id != nil {
			*buf = appendString(*buf, *id)
		} else {
			*buf = appendObject(*buf, c.fields, key)
		}
		*buf = append(*buf, "}}"...)
		writeData(w, mediaType, *buf)
		return true
	}
	data := json.RawMessage("null")
	if !c.nonNull {
		data = json.RawMessage(append(append([]byte(`{`), c.prefix[len(`{"data":{`):]...), "null}"...))
	}
	writeResponse(w, mediaType, &graphql.Response{Errors: graphql.GetErrors(ctx), Data: data})
	return true
}

// run calls the resolver, recovering a panic as gqlgen does.
func (ops *compiledOps) run(ctx context.Context, call func(context.Context) (*keystore.Key, *string, error)) (key *keystore.Key, id *string, err error, panicked bool) {
	defer func() {
		if p := recover(); p != nil {
			key, id, err, panicked = nil, nil, graphql.ErrorOnPath(ctx, ops.recover(ctx, p)), true
		}
	}()
	key, id, err = call(ctx)
	return key, id, err, false
}

// prepare reads the arguments of a request for c and returns the call of its
// resolver, or false if gqlgen must answer it.
func (c *compiledOp) prepare(r *Resolver, vars map[string]any) (func(context.Context) (*keystore.Key, *string, error), bool) {
	lease := func(l *model.Lease, err error) (*keystore.Key, *string, error) {
		if l == nil {
			return nil, nil, err
		}
		return l.Key, nil, err
	}
	key := func(k *keystore.Key, err error) (*keystore.Key, *string, error) { return k, nil, err }
	id, ok := c.argument("id", vars)
	if !ok || (id == nil && c.root != rootAcquireKey) {
		return nil, false // a required id that is missing: gqlgen's error
	}
	switch c.root {
	case rootAcquireKey:
		ttl, ok1 := c.duration("ttl", vars)
		wait, ok2 := c.duration("wait", vars)
		if !ok1 || !ok2 || acquireKeyComplexity(c.selected, ttl, wait) > ComplexityLimit {
			return nil, false
		}
		return func(ctx context.Context) (*keystore.Key, *string, error) {
			return lease(r.Mutation().AcquireKey(ctx, ttl, wait))
		}, true
	case rootUnblockKey:
		token, ok := c.argument("token", vars)
		return func(ctx context.Context) (*keystore.Key, *string, error) {
			return key(r.Mutation().UnblockKey(ctx, *id, token))
		}, ok
	case rootRenewLease:
		token, ok1 := c.argument("token", vars)
		ttl, ok2 := c.duration("ttl", vars)
		return func(ctx context.Context) (*keystore.Key, *string, error) {
			return lease(r.Mutation().RenewLease(ctx, *id, *token, ttl))
		}, ok1 && ok2 && token != nil
	case rootKeepAlive:
		return func(ctx context.Context) (*keystore.Key, *string, error) {
			return key(r.Mutation().KeepAlive(ctx, *id))
		}, true
	case rootDeleteKey:
		return func(ctx context.Context) (*keystore.Key, *string, error) {
			deleted, err := r.Mutation().DeleteKey(ctx, *id)
			if err != nil {
				return nil, nil, err
			}
			return nil, &deleted, nil
		}, true
	case rootKey:
		return func(ctx context.Context) (*keystore.Key, *string, error) {
			return key(r.Query().Key(ctx, *id))
		}, true
	}
	return nil, false
}
