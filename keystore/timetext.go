package keystore

import (
	"sync/atomic"
	"time"
)

// AppendTime appends t as every transport writes an instant: a JSON string in RFC 3339
// with fractional seconds (trailing zeros trimmed), in UTC, as t.UTC().AppendFormat(b,
// time.RFC3339Nano) writes it.
//
// The answers of a pool name the same few seconds over and over (a lease's start and
// end, its key's birth), so the text of a second is formatted once and kept in a small
// table, and only the fraction is written each time.
func AppendTime(b []byte, t time.Time) []byte {
	sec := t.Unix()
	text := secondTexts[uint64(sec)%uint64(len(secondTexts))].Load()
	if text == nil || text.sec != sec {
		text = formatSecond(sec)
		if text == nil { // a year of other than four digits
			b = append(b, '"')
			b = t.UTC().AppendFormat(b, time.RFC3339Nano)
			return append(b, '"')
		}
		secondTexts[uint64(sec)%uint64(len(secondTexts))].Store(text)
	}
	b = append(b, '"')
	b = append(b, text.text[:]...)
	if ns := t.Nanosecond(); ns != 0 {
		var digits [10]byte
		digits[0] = '.'
		for i := 9; i > 0; i-- {
			digits[i] = byte('0' + ns%10)
			ns /= 10
		}
		end := 10
		for digits[end-1] == '0' {
			end--
		}
		b = append(b, digits[:end]...)
	}
	return append(b, `Z"`...)
}

// secondText is the text of one second, "2006-01-02T15:04:05", in UTC.
type secondText struct {
	sec  int64
	text [19]byte
}

// secondTexts holds the text of recent seconds, by second modulo its size: shared by
// every goroutine, each entry immutable once stored.
var secondTexts [256]atomic.Pointer[secondText]

func formatSecond(sec int64) *secondText {
	st := &secondText{sec: sec}
	if len(time.Unix(sec, 0).UTC().AppendFormat(st.text[:0], "2006-01-02T15:04:05")) != len(st.text) {
		return nil
	}
	return st
}
