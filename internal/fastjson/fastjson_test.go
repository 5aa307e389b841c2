package fastjson

import (
	"bytes"
	"encoding/json"
	"testing"

	"github.com/stretchr/testify/require"
)

// body has the shapes of REST's request bodies: strings and an optional number.
type body struct {
	Token string `json:"token"`
	TTL   string `json:"ttl"`
	Count *int   `json:"count"`
}

// FuzzDecodeStrict: given what json.Valid accepts, Decode with DisallowUnknownFields
// either refuses a body, which then goes to encoding/json, or decodes it exactly as
// encoding/json's strict decoder does; it never accepts what that decoder refuses.
// (graph's FuzzDecodeWellFormed holds UseNumber to the same rule.)
//
//	go test -run '^$' -fuzz FuzzDecodeStrict -fuzztime 60s ./internal/fastjson/
func FuzzDecodeStrict(f *testing.F) {
	for _, seed := range []string{
		`{"token":"n6dzGvR0-8vsB64-nb3kQg"}`, `{"token":"a","ttl":"90s"}`, `{"count":3}`, `{"count":null}`,
		`{"TOKEN":"case"}`, `{"token":"a","token":"b"}`, `{"tokens":"x"}`, `{"count":1.5}`, `{"count":"3"}`,
		`{"count":99999999999999999999}`, `{"token":"\u00e9\ud83d\ude00\\\"\n"}`, `{"token":"\ud800"}`,
		`{"token":"\xff"}`, `{"token":null}`, `{"token":1}`, `[]`, `null`, `{}`, `{"count":-0}`, `{"count":1e2}`,
		`{"to\u006ben":"x"}`, `{"t\"oken":"x"}`, `{"a":{"token":"x"}}`, `{"token":"x","ttl":["}",{"a":1}]}`,
		`{"tOkEn":"x","Ttl":"1s","COUNT":2}`, `{"\u212aey":1}`, `{"token":"a\\","ttl":"b"}`,
	} {
		f.Add([]byte(seed))
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		data = bytes.TrimSpace(data)
		if !json.Valid(data) {
			return // refused before Decode runs
		}
		var got body
		ok := Decode(data, &got, Options{DisallowUnknownFields: true})
		var want body
		dec := json.NewDecoder(bytes.NewReader(data))
		dec.DisallowUnknownFields()
		err := dec.Decode(&want)
		if !ok {
			return // encoding/json decides
		}
		require.NoError(t, err, "accepted what encoding/json refuses: %q", data)
		require.Equal(t, want, got, "%q", data)
	})
}

// TestDecodeStrictDecodesWhole: the strict bodies that REST is sent all day are decoded
// whole, not by the stream decoder, whose own allocations (a decoder, a stream and its
// buffer) this counts; a body with an unknown field is left to encoding/json.
func TestDecodeStrictDecodesWhole(t *testing.T) {
	strict := Options{DisallowUnknownFields: true}
	for _, b := range []string{`{"token":"n6dzGvR0-8vsB64-nb3kQg"}`, `{"token":"a","ttl":"90s"}`, `{"TOKEN":"a"}`, `{}`} {
		var got body
		require.True(t, Decode([]byte(b), &got, strict), b)
		allocs := testing.AllocsPerRun(100, func() { Decode([]byte(b), &got, strict) })
		require.LessOrEqual(t, allocs, 2.0, "%s: %v allocations: the stream decoder ran", b, allocs)
	}
	for _, b := range []string{`{"tokens":"x"}`, `{"token":"a","x":{"token":"b"}}`, `{"to\u006ben":"x"}`, `{"t\"oken":"x"}`} {
		var got body
		require.False(t, Decode([]byte(b), &got, strict), b)
	}
	// Keys inside nested values are not the object's: only the stream decoder, which
	// checks them against the nested types, takes these.
	var nested struct {
		Inner struct {
			A string `json:"a"`
		} `json:"inner"`
	}
	require.True(t, Decode([]byte(`{"inner":{"a":"x"}}`), &nested, strict))
	require.Equal(t, "x", nested.Inner.A)
	require.False(t, Decode([]byte(`{"inner":{"b":"x"}}`), &nested, strict))
}
