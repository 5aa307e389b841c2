package redisstore

import (
	"testing"

	"github.com/jonboulle/clockwork"

	"github.com/keypool/keypool/keystore"
	"github.com/keypool/keypool/keystore/storetest"
)

// testSecretsKey is the secrets key of the tests' stores that import keys.
var testSecretsKey = []byte("0123456789abcdef0123456789abcdef")

// TestConformance holds the Redis store to the same suite as the in-memory one. Every
// store the suite opens gets a namespace of its own on one redis-server, so it starts
// empty without flushing another's data.
func TestConformance(t *testing.T) {
	srv := startRedis(t)
	storetest.Run(t, func(t *testing.T, clock *clockwork.FakeClock, opts keystore.Options) keystore.Store {
		return openStore(t, srv, clock, opts, WithSecretsKey(testSecretsKey))
	})
}
