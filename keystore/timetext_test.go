package keystore_test

import (
	"math"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/keypool/keypool/keystore"
)

// FuzzAppendTime holds AppendTime, which keeps the text of recent seconds, to what
// encoding with time's own RFC 3339 writes, for any instant in any zone, and for the
// same second asked again with other fractions (the kept text's path).
//
//	go test -run '^$' -fuzz FuzzAppendTime -fuzztime 30s ./keystore/
func FuzzAppendTime(f *testing.F) {
	for _, seed := range [][2]int64{
		{1796137073, 469712172}, {1796137073, 0}, {1796137073, 100}, {1796137073, 120000000}, {0, 1},
		{-62135596800, 0}, {-62135596801, 5}, {253402300799, 999999999}, {253402300800, 0},
		{math.MaxInt64 / 2, 7}, {math.MinInt64 / 2, 7}, {-1, 999999999},
	} {
		f.Add(seed[0], seed[1], int64(3600))
	}
	f.Fuzz(func(t *testing.T, sec, ns, zone int64) {
		ns = (ns%1e9 + 1e9) % 1e9
		at := time.Unix(sec, ns).In(time.FixedZone("z", int(zone%(18*3600))))
		for _, u := range []time.Time{at, at.Add(time.Duration(1e9-1-ns) % time.Second), at.Truncate(time.Second)} {
			want := `"` + u.UTC().Format(time.RFC3339Nano) + `"`
			require.Equal(t, want, string(keystore.AppendTime([]byte("x"), u))[1:], "%d.%09d", sec, ns)
		}
	})
}
