package fastjson

import "testing"

// BenchmarkDecodeUnblockBody decodes REST's most common body, strictly.
//
//	go test -run '^$' -bench DecodeUnblockBody ./internal/fastjson/
func BenchmarkDecodeUnblockBody(b *testing.B) {
	body := []byte(`{"token":"n6dzGvR0-8vsB64-nb3kQg"}`)
	var dst struct {
		Token string `json:"token"`
	}
	b.ReportAllocs()
	for b.Loop() {
		if !Decode(body, &dst, Options{DisallowUnknownFields: true}) {
			b.Fatal("not decoded")
		}
	}
}
