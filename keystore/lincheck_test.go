package keystore_test

import (
	"testing"
	"time"

	"github.com/anishathalye/porcupine"
	"github.com/jonboulle/clockwork"
	"github.com/stretchr/testify/require"

	"github.com/keypool/keypool/keystore"
	"github.com/keypool/keypool/keystore/lincheck"
	"github.com/keypool/keypool/keystore/storetest"
)

// TestMemoryLinearizable records a history of 16 concurrent clients on the in-memory
// store, acquiring from and generating into two pools, and checks it against the
// sequential model (keystore/lincheck): among other things, an acquire of one pool is
// never given a key of the other, and no key held back (COOLING, QUARANTINED) is
// handed out until restored. The clock stands still, so no deadline interferes.
func TestMemoryLinearizable(t *testing.T) {
	m, err := keystore.NewMemory(clockwork.NewFakeClockAt(storetest.Start), lincheck.Options)
	require.NoError(t, err)
	defer m.Close()
	h := lincheck.NewHistory()
	start := time.Now()
	h.Run(t, lincheck.Config{Stores: []keystore.Store{m}, Clients: 16, Calls: 400, Keys: 2, Pools: []string{keystore.DefaultPool, "b"}, Seed: 1, Held: true})
	recorded := time.Since(start)
	res := h.Check(t, time.Minute)
	t.Logf("%s; recorded in %v, checked in %v", h.Summary(), recorded, time.Since(start)-recorded)
	require.Equal(t, porcupine.Ok, res, "the history has no linearization")
}
