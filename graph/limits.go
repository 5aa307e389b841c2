package graph

import (
	"time"

	"github.com/keypool/keypool/wire"
)

// The limits of the GraphQL endpoint, every one in this one place and enforced for
// every transport (docs/api.md's Limits section lists them for users).
//
// The document limits bound what a request can make the server do before the
// complexity limit can look at it: parsing, validation and the complexity walk
// itself. Each is far above what a real client sends (GraphiQL's introspection query
// among them) and low enough that the worst document of any shape costs a few
// milliseconds (BENCHMARKS.md).
const (
	// MaxBodyBytes is the largest HTTP body (413 above it) or websocket message
	// (closed with 1009 above it): wire's, for every transport.
	MaxBodyBytes = wire.MaxBodyBytes

	// MaxDocumentTokens is how many tokens a document may have, comments included
	// (gqlparser keeps every comment); gqlparser's own token limit too.
	MaxDocumentTokens = 5000
	// MaxTokenBytes is the longest name or number in a document.
	MaxTokenBytes = 256
	// MaxDocumentStringBytes is what a document's string literals may hold together
	// (a block string is split into lines, 16 bytes each).
	MaxDocumentStringBytes = 64 << 10
	// MaxDocumentDepth is how deeply a document may nest: brackets, braces and
	// parentheses in its text, and selections through fragment spreads.
	MaxDocumentDepth = 32
	// MaxDocumentNodes is how many fields, fragment spreads, inline fragments,
	// arguments, directives and variable definitions a document may have, counted as
	// the validator walks it: each fragment spread written out, in each operation and
	// fragment definition.
	MaxDocumentNodes = 1000
	// MaxResponseNameRepeats is how often one response name may be selected in one
	// selection set, fragments merged in: the validator compares every pair.
	MaxResponseNameRepeats = 16
	// MaxSchemaFields is how often one operation may select __schema. The complexity
	// limit does not count __schema (so that GraphiQL's introspection query passes),
	// and aliases of it or inside it would multiply the whole schema in one response:
	// aliases are refused under __schema too.
	MaxSchemaFields = 1

	// ComplexityLimit is the most an operation may cost: one per field, lists not
	// multiplied, generateKeys and acquireKey's wait more (document.go). Real queries
	// cost tens; GraphiQL's introspection query is not counted.
	ComplexityLimit = 200

	// MaxJSONValues is how many JSON values (objects, arrays and scalars, at any
	// depth) a request's variables and extensions may hold together: decoding a
	// body-sized list of zeros would cost many times the body. MaxJSONDepth is how
	// deeply they may nest.
	MaxJSONValues = 1000
	MaxJSONDepth  = MaxDocumentDepth

	// QueryCacheBytes bounds the parsed-document cache (a document costs its text and
	// an estimate of its syntax tree, documentCost), PersistedQueryCacheBytes the
	// automatic persisted queries' texts. Only what passed every check is cached.
	QueryCacheBytes          = 32 << 20
	PersistedQueryCacheBytes = 8 << 20

	// MaxSocketOperations is how many operations one websocket may run at once; one
	// more is refused with OPERATION_LIMIT_EXCEEDED, and the others go on.
	MaxSocketOperations = 100
	// WebsocketInitTimeout is how long a websocket may wait before connection_init
	// (then closed with 4408).
	WebsocketInitTimeout = 10 * time.Second
	// WebsocketIdleTimeout is how long an initialised websocket may run no operation
	// (then closed with 1000, as an idle HTTP keep-alive connection is). A live
	// subscription is an operation.
	WebsocketIdleTimeout = 2 * time.Minute
	// WebsocketWriteTimeout bounds a write to a websocket or SSE client that does not read.
	WebsocketWriteTimeout = time.Minute
	// KeepAlivePingInterval is how often an idle legacy graphql-ws socket or SSE
	// stream gets a keep-alive message, so that proxies do not time it out.
	KeepAlivePingInterval = 10 * time.Second
	// PingPongInterval is how often a graphql-transport-ws client is pinged; one that
	// does not answer within twice this is dropped, so half-open sockets are noticed.
	PingPongInterval = 15 * time.Second
)
