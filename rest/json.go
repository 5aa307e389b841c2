package rest

import (
	"encoding/json"
	"net/http"
	"strconv"
	"unicode/utf8"

	"github.com/keypool/keypool/internal/bufpool"
	"github.com/keypool/keypool/keystore"
	"github.com/keypool/keypool/wire"
)

// The response bodies are appended by hand into pooled buffers: the shapes are fixed and
// small, and this path is measured against a bare net/http handler. Field names are the
// GraphQL schema's.
//
// A Lease inside a Key has no "key" field (the enclosing object is its key). The Key
// inside a Lease (acquire, renew) is a whole Key, so its "lease" repeats the lease, again
// without "key": every Key has one shape wherever it appears, and nothing is cyclic.

// appendString appends s as a JSON string. Ids, tokens and statuses are plain ASCII and
// take the fast path; anything else goes through encoding/json's escaping.
func appendString(b []byte, s string) []byte {
	for i := 0; i < len(s); i++ {
		if c := s[i]; c < 0x20 || c == '"' || c == '\\' || c >= utf8.RuneSelf || c == '<' || c == '>' || c == '&' {
			quoted, _ := json.Marshal(s) // a string always marshals
			return append(b, quoted...)
		}
	}
	b = append(b, '"')
	b = append(b, s...)
	return append(b, '"')
}

func appendKey(b []byte, k *keystore.Key) []byte {
	b = append(b, `{"id":`...)
	b = appendString(b, k.ID)
	b = append(b, `,"pool":`...)
	b = appendString(b, k.Pool)
	b = append(b, `,"status":`...)
	b = appendString(b, string(k.Status))
	b = append(b, `,"createdAt":`...)
	b = wire.AppendTime(b, k.CreatedAt)
	b = append(b, `,"expiresAt":`...)
	b = wire.AppendTime(b, k.ExpiresAt)
	b = append(b, `,"lease":`...)
	if k.Lease != nil && k.Status == keystore.Blocked {
		b = appendLeaseFields(b, k.Lease)
		b = append(b, '}')
	} else {
		b = append(b, "null"...)
	}
	b = append(b, `,"coolingUntil":`...)
	if k.CoolingUntil == nil {
		b = append(b, "null"...)
	} else {
		b = wire.AppendTime(b, *k.CoolingUntil)
	}
	b = append(b, `,"name":`...)
	if k.Name == "" {
		b = append(b, "null"...)
	} else {
		b = appendString(b, k.Name)
	}
	b = append(b, `,"history":{"timesAcquired":`...)
	b = strconv.AppendInt(b, k.History.TimesAcquired, 10)
	b = append(b, `,"leasesExpired":`...)
	b = strconv.AppendInt(b, k.History.LeasesExpired, 10)
	b = append(b, `,"lastAcquiredAt":`...)
	if k.History.LastAcquiredAt.IsZero() {
		b = append(b, "null"...)
	} else {
		b = wire.AppendTime(b, k.History.LastAcquiredAt)
	}
	b = append(b, `,"failures":`...)
	b = strconv.AppendInt(b, k.History.Failures, 10)
	b = append(b, `,"consecutiveFailures":`...)
	b = strconv.AppendInt(b, k.History.ConsecutiveFailures, 10)
	return append(b, "}}"...)
}

// appendLeaseFields appends a lease object without its closing brace.
func appendLeaseFields(b []byte, l *keystore.Lease) []byte {
	b = append(b, `{"token":`...)
	b = appendString(b, l.Token)
	b = append(b, `,"fence":`...)
	b = strconv.AppendInt(b, l.Fence, 10)
	b = append(b, `,"fence64":"`...)
	b = strconv.AppendInt(b, l.Fence, 10)
	b = append(b, '"')
	b = append(b, `,"acquiredAt":`...)
	b = wire.AppendTime(b, l.AcquiredAt)
	b = append(b, `,"expiresAt":`...)
	b = wire.AppendTime(b, l.ExpiresAt)
	b = append(b, `,"holder":`...)
	if l.Holder == "" {
		b = append(b, "null"...)
	} else {
		b = appendString(b, l.Holder)
	}
	// Set only in the holder's own answers (acquire, renew).
	b = append(b, `,"secret":`...)
	if l.Secret == "" {
		return append(b, "null"...)
	}
	return appendString(b, l.Secret)
}

// appendLease appends the lease that k holds, with k as its "key".
func appendLease(b []byte, k *keystore.Key) []byte {
	b = appendLeaseFields(b, k.Lease)
	b = append(b, `,"key":`...)
	b = appendKey(b, k)
	return append(b, '}')
}

// writeKeys writes {"keys":[…]} a pooled buffer's worth at a time: the largest answer
// runs to megabytes, which one growing buffer would allocate twice over
// (TestLargestGenerateIsBounded). A page of a listing (next not nil) ends with its
// "nextCursor", null on the last page.
func writeKeys(w http.ResponseWriter, status int, keys []keystore.Key, next ...*string) {
	buf := bufpool.Get()
	b := append(*buf, `{"keys":[`...)
	w.Header()["Content-Type"] = jsonContentType
	w.WriteHeader(status)
	for i := range keys {
		if i > 0 {
			b = append(b, ',')
		}
		b = appendKey(b, &keys[i])
		if len(b) >= flushBytes {
			_, _ = w.Write(b)
			b = b[:0]
		}
	}
	b = append(b, ']')
	if len(next) > 0 {
		b = append(b, `,"nextCursor":`...)
		if next[0] == nil {
			b = append(b, "null"...)
		} else {
			b = appendString(b, *next[0])
		}
	}
	_, _ = w.Write(append(b, '}'))
	*buf = b
	bufpool.Put(buf)
}

// flushBytes is how much of a long answer writeKeys gathers before writing it.
const flushBytes = bufpool.MaxSize / 2

func appendStats(b []byte, s keystore.Stats) []byte {
	return append(appendStatsFields(append(b, '{'), s), '}')
}

// appendStatsFields appends the members of a Stats object, without its braces.
func appendStatsFields(b []byte, s keystore.Stats) []byte {
	b = append(b, `"total":`...)
	b = strconv.AppendInt(b, int64(s.Total), 10)
	b = append(b, `,"available":`...)
	b = strconv.AppendInt(b, int64(s.Available), 10)
	b = append(b, `,"blocked":`...)
	b = strconv.AppendInt(b, int64(s.Blocked), 10)
	b = append(b, `,"cooling":`...)
	b = strconv.AppendInt(b, int64(s.Cooling), 10)
	b = append(b, `,"quarantined":`...)
	b = strconv.AppendInt(b, int64(s.Quarantined), 10)
	b = append(b, `,"waiting":`...)
	return strconv.AppendInt(b, int64(s.Waiting), 10)
}

func appendHistory(b []byte, samples []keystore.StatsSample) []byte {
	b = append(b, `{"samples":[`...)
	for i := range samples {
		if i > 0 {
			b = append(b, ',')
		}
		b = wire.AppendTime(append(b, `{"at":`...), samples[i].At)
		b = append(appendStatsFields(append(b, ','), samples[i].Stats), '}')
	}
	return append(b, "]}"...)
}

func appendPools(b []byte, pools []keystore.PoolStats) []byte {
	b = append(b, `{"pools":[`...)
	for i := range pools {
		if i > 0 {
			b = append(b, ',')
		}
		b = append(b, `{"name":`...)
		b = appendString(b, pools[i].Name)
		b = append(b, `,"stats":`...)
		b = appendStats(b, pools[i].Stats)
		b = append(b, '}')
	}
	return append(b, "]}"...)
}
