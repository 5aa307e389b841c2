// Package fastjson decodes the JSON bodies that requests send all day with
// goccy/go-json, some four times faster than encoding/json, and leaves everything else
// to encoding/json, which has the last word on what a body means and words its errors.
//
// goccy/go-json is no validator (it takes "\0" in a string, for one), so a body must have
// passed json.Valid first; what goccy/go-json refuses, or panics on, is reported as not
// decoded, for the caller to decode again with encoding/json.
package fastjson

import (
	"bytes"
	"unicode/utf8"

	gojson "github.com/goccy/go-json"
)

// Options are encoding/json's decoder settings that callers use.
type Options struct {
	UseNumber             bool
	DisallowUnknownFields bool
}

// Decode decodes body, one JSON value that json.Valid accepted with nothing but white
// space around it trimmed away, into dst, and reports whether it did; when it did not,
// dst may be half filled and the caller decodes body again into a fresh value with
// encoding/json.
func Decode(body []byte, dst any, opts Options) (ok bool) {
	defer func() {
		if recover() != nil {
			ok = false
		}
	}()
	if !utf8.Valid(body) {
		return false // encoding/json's replacement of bad bytes is the rule
	}
	if !opts.DisallowUnknownFields && (!opts.UseNumber || !hasNumber(body)) {
		// Decoding the whole body at once is some three times faster than the stream
		// decoder, which alone has the two options; UseNumber changes nothing in a body
		// without numbers.
		return gojson.Unmarshal(body, dst) == nil
	}
	dec := gojson.NewDecoder(bytes.NewReader(body))
	if opts.UseNumber {
		dec.UseNumber()
	}
	if opts.DisallowUnknownFields {
		dec.DisallowUnknownFields()
	}
	return dec.Decode(dst) == nil && dec.InputOffset() == int64(len(body))
}

// hasNumber reports whether body, valid JSON, holds a number: a digit or a minus sign
// outside its strings (true, false and null have neither).
func hasNumber(body []byte) bool {
	for i := 0; i < len(body); i++ {
		switch c := body[i]; {
		case c == '"':
			for i++; i < len(body) && body[i] != '"'; i++ {
				if body[i] == '\\' {
					i++
				}
			}
		case c == '-' || c >= '0' && c <= '9':
			return true
		}
	}
	return false
}
