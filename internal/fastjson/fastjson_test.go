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
