package redact

import (
	"testing"
)

func TestKeyID(t *testing.T) {
	for in, want := range map[string]string{
		"":                       "",
		"abc":                    "abc",
		"abcdef":                 "abcdef",
		"abcdefg":                "abcdef…",
		"Zx9_-aQ1w2e3r4t5y6u7i8": "Zx9_-a…",
	} {
		if got := KeyID(in); got != want {
			t.Errorf("KeyID(%q) = %q, want %q", in, got, want)
		}
	}
}

func TestPath(t *testing.T) {
	for in, want := range map[string]string{
		"/v1/stats":                               "/v1/stats",
		"/v1/keys/acquire":                        "/v1/keys/acquire",
		"/v1/keys/Zx9_-aQ1w2e3r4t5y6u7i8":         "/v1/keys/Zx9_-a…",
		"/v1/keys/Zx9_-aQ1w2e3r4t5y6u7i8/unblock": "/v1/keys/Zx9_-a…/unblock",
		"/v1/keys/short/keepalive":                "/v1/keys/short/keepalive",
	} {
		if got := Path(in); got != want {
			t.Errorf("Path(%q) = %q, want %q", in, got, want)
		}
	}
}
