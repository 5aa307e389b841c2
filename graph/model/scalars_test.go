package model

import (
	"bytes"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/keypool/keypool/keystore"
)

func TestTimeIsRFC3339NanoInUTC(t *testing.T) {
	at := time.Date(2026, 11, 24, 15, 4, 5, 123456789, time.FixedZone("CET", 3600))
	var buf bytes.Buffer
	MarshalTime(at).MarshalGQL(&buf)
	assert.Equal(t, `"2026-11-24T14:04:05.123456789Z"`, buf.String())

	back, err := UnmarshalTime("2026-11-24T15:04:05.123456789+01:00")
	require.NoError(t, err)
	assert.True(t, back.Equal(at))
	_, err = UnmarshalTime("yesterday")
	assert.Equal(t, keystore.EINVALID, keystore.ErrorCode(err))
}

func TestDurationIsGoSyntax(t *testing.T) {
	for in, want := range map[string]time.Duration{"90s": 90 * time.Second, "1m30s": 90 * time.Second, "1h": time.Hour, "250ms": 250 * time.Millisecond} {
		d, err := UnmarshalDuration(in)
		require.NoError(t, err, in)
		assert.Equal(t, want, d, in)
	}
	for _, bad := range []any{"", "soon", "5", "1 minute", 5, 1.5, nil, true} {
		_, err := UnmarshalDuration(bad)
		assert.Equal(t, keystore.EINVALID, keystore.ErrorCode(err), "%v", bad)
	}
	var buf bytes.Buffer
	MarshalDuration(90 * time.Second).MarshalGQL(&buf)
	assert.Equal(t, `"1m30s"`, buf.String())
}

// TestBigIntIsExactPast2To53: a BigInt is a string of digits both ways, exact where a
// float64 (JavaScript's numbers, jq's) is not.
func TestBigIntIsExactPast2To53(t *testing.T) {
	const n = int64(1<<62 + 1)
	var buf bytes.Buffer
	MarshalBigInt(n).MarshalGQL(&buf)
	assert.Equal(t, `"4611686018427387905"`, buf.String())
	back, err := UnmarshalBigInt("4611686018427387905")
	require.NoError(t, err)
	assert.Equal(t, n, back)
	for _, bad := range []any{"1e3", "0x10", "", "99999999999999999999", 1.5, true} {
		_, err := UnmarshalBigInt(bad)
		assert.Equal(t, keystore.EINVALID, keystore.ErrorCode(err), "%v", bad)
	}
}
