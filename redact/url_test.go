package redact

import (
	"strings"
	"testing"
)

func TestURL(t *testing.T) {
	for in, want := range map[string]string{
		"memory":                                       "memory",
		"redis://127.0.0.1:6379/0":                     "redis://127.0.0.1:6379/0",
		"redis://:s3cret@127.0.0.1:6379/0":             "redis://:xxxxx@127.0.0.1:6379/0",
		"rediss://app:s3cret@redis.example:6380":       "rediss://app:xxxxx@redis.example:6380",
		"redis://app@redis.example/0":                  "redis://app@redis.example/0", // a user name alone is no secret
		"redis://h/0?namespace=x&password=s3cret&db=1": "redis://h/0?namespace=x&password=xxxxx&db=1",
		"redis://h/0?sentinel_password=s3cret":         "redis://h/0?sentinel_password=xxxxx",
		"redis://h/0?Pass%77ord=s3cret":                "redis://h/0?Pass%77ord=xxxxx",
		"redis://h/0?password=%zz-s3cret":              "redis://h/0?password=xxxxx",
		"unix://:s3cret@/run/redis.sock?db=2":          "unix://:xxxxx@/run/redis.sock?db=2",
		"unix:///run/redis.sock?db=2&token=s3cret":     "unix:///run/redis.sock?db=2&token=xxxxx",
		"redis://:s3cret@h:port/0":                     "redis://xxxxx", // does not parse
		"redis://:s3c ret%@h/0":                        "redis://xxxxx",
		"::s3cret":                                     "xxxxx",
	} {
		got := URL(in)
		if got != want {
			t.Errorf("URL(%q) = %q, want %q", in, got, want)
		}
		if strings.Contains(got, "s3c") {
			t.Errorf("URL(%q) leaks the secret: %q", in, got)
		}
	}
}
