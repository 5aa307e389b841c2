package graph

import (
	"bytes"
	"encoding/json"
	"testing"

	"github.com/stretchr/testify/require"
)

// FuzzDecodeWellFormed: given what checkJSON lets through, the fast decoder of
// requests (goccy/go-json) either refuses a body, which then goes to encoding/json, or
// decodes it exactly as encoding/json does; and never accepts what encoding/json
// refuses.
//
//	go test -run '^$' -fuzz FuzzDecodeWellFormed -fuzztime 60s ./graph/
func FuzzDecodeWellFormed(f *testing.F) {
	for _, seed := range []string{
		`{"query":"{ stats { total } }"}`,
		`{"query":"mutation($id: ID!) { keepAlive(id: $id) { id } }","variables":{"id":"k1","n":12345678901234567890,"f":1.5e300,"b":true,"z":null,"l":[1,"a",{"x":[]}]}}`,
		`{"query":"q","operationName":"Op","extensions":{"persistedQuery":{"version":1,"sha256Hash":"ab"}}}`,
		`{"query":"\u00e9\ud83d\ude00\\\"\n","variables":null}`,
		`{"query":"a","query":"b"}`, `{"Query":"case"}`, `{"query":1}`, `{"variables":"x"}`, `{"variables":[]}`,
		`{} }`, `{}x`, `{"query":"a"} {"query":"b"}`, `{"query":"\xff"}`, `{"query":"a",}`, `{"query":"a"`,
		`{"variables":{"a":1,"a":2}}`, `{"variables":{"n":-0,"m":1E+2}}`, `{"query":"\ud800"}`,
	} {
		f.Add([]byte(seed))
	}
	f.Fuzz(func(t *testing.T, body []byte) {
		body = bytes.TrimSpace(body)
		if checkJSON(body) != nil {
			return // refused before decodeWellFormed runs
		}
		got, ok := decodeWellFormed(body)
		var want wellFormed
		dec := json.NewDecoder(bytes.NewReader(body))
		dec.UseNumber()
		err := dec.Decode(&want)
		valid := err == nil && dec.InputOffset() == int64(len(body))
		if !ok {
			return // encoding/json decides
		}
		require.True(t, valid, "accepted what encoding/json refuses: %q (%v)", body, err)
		require.Equal(t, want.Query, got.Query)
		require.Equal(t, want.OperationName, got.OperationName)
		require.Equal(t, want.Variables, got.Variables)
		require.Equal(t, want.Extensions, got.Extensions)
	})
}
