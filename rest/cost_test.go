package rest_test

import (
	"bytes"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"runtime"
	"testing"

	"github.com/jonboulle/clockwork"
	"github.com/stretchr/testify/require"

	"github.com/keypool/keypool/keystore"
	"github.com/keypool/keypool/rest"
)

// TestLargestGenerateIsBounded: the largest answer REST gives, -max-generate keys,
// allocates less than the 16 MiB a request may cost: the keys are written
// a pooled buffer at a time, not gathered into one growing body.
func TestLargestGenerateIsBounded(t *testing.T) {
	store, err := keystore.NewMemory(clockwork.NewFakeClock(), keystore.Options{})
	require.NoError(t, err)
	t.Cleanup(func() { _ = store.Close() })
	h := rest.New(store, nil)
	body, err := json.Marshal(map[string]int{"count": keystore.DefaultMaxGenerate})
	require.NoError(t, err)
	req := httptest.NewRequest(http.MethodPost, "/v1/keys", bytes.NewReader(body))
	req.Header.Set("Content-Type", "application/json")
	rec := httptest.NewRecorder()
	rec.Body = bytes.NewBuffer(make([]byte, 0, 8<<20)) // the client's memory, not the server's
	var before, after runtime.MemStats
	runtime.ReadMemStats(&before)
	h.ServeHTTP(rec, req)
	runtime.ReadMemStats(&after)
	require.Equal(t, http.StatusCreated, rec.Code, "%.300s", rec.Body)
	var out struct{ Keys []struct{ ID string } }
	require.NoError(t, json.Unmarshal(rec.Body.Bytes(), &out))
	require.Len(t, out.Keys, keystore.DefaultMaxGenerate)
	allocated := after.TotalAlloc - before.TotalAlloc
	t.Logf("%d keys, %d bytes of answer, %d bytes allocated", len(out.Keys), rec.Body.Len(), allocated)
	require.Less(t, allocated, uint64(16<<20))
}
