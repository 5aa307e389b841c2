package redisstore

import (
	"context"
	"time"

	"github.com/keypool/keypool/keystore"
)

// errNotYet answers the operations of issue 26 (cool-downs, quarantine, imported keys)
// until the Redis scripts keep them (issue 28): refused, never half done.
var errNotYet = keystore.Errorf(keystore.ENOTCONFIGURED,
	"cool-downs, quarantine and imported keys are not supported by the Redis store yet: use -store memory for them")

// UnblockWith implements keystore.Backend: refused until the scripts keep cool-downs.
func (s *Store) UnblockWith(context.Context, uint64, int64, time.Duration, bool) (keystore.Record, error) {
	return keystore.Record{}, errNotYet
}

// Restore implements keystore.Backend: refused until the scripts keep cool-downs.
func (s *Store) Restore(context.Context, uint64) (keystore.Record, error) {
	return keystore.Record{}, errNotYet
}

// Import implements keystore.Backend: refused until the scripts seal secrets.
func (s *Store) Import(context.Context, string, []keystore.KeyInput, time.Duration) ([]keystore.Record, error) {
	return nil, errNotYet
}
