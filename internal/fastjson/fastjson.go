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
	"reflect"
	"strings"
	"sync"
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
	// Decoding the whole body at once is some three times faster than the stream
	// decoder, which alone has the two options: UseNumber changes nothing in a body
	// without numbers, and DisallowUnknownFields nothing in one whose keys all name
	// fields of a flat struct.
	whole := !opts.UseNumber || !hasNumber(body)
	if whole && opts.DisallowUnknownFields {
		names, flat := fieldNames(dst)
		if !flat {
			whole = false
		} else if !onlyKeys(body, names) {
			return false // an unknown field, or a key that only encoding/json can match
		}
	}
	if whole {
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

// fieldNames returns the JSON names of the fields of *dst, if dst points to a flat
// struct: exported fields of scalar types (or pointers to them), none embedded, with
// ASCII names. Anything else (nested objects, whose keys would need checking too) is
// not flat and goes to the stream decoder.
func fieldNames(dst any) ([]string, bool) {
	t := reflect.TypeOf(dst)
	if names, ok := flatStructs.Load(t); ok {
		return names.([]string), names.([]string) != nil
	}
	names := flatNames(t)
	flatStructs.Store(t, names)
	return names, names != nil
}

// flatStructs caches fieldNames by type: the names of a flat struct, or nil.
var flatStructs sync.Map

func flatNames(t reflect.Type) []string {
	if t.Kind() != reflect.Pointer || t.Elem().Kind() != reflect.Struct {
		return nil
	}
	names := []string{}
	for _, f := range reflect.VisibleFields(t.Elem()) {
		if !f.IsExported() || f.Anonymous {
			return nil
		}
		ft := f.Type
		if ft.Kind() == reflect.Pointer {
			ft = ft.Elem()
		}
		switch ft.Kind() {
		case reflect.Struct, reflect.Map, reflect.Slice, reflect.Array, reflect.Interface, reflect.Pointer:
			return nil
		}
		name, _, _ := strings.Cut(f.Tag.Get("json"), ",")
		switch {
		case name == "-":
			continue
		case name == "":
			name = f.Name
		}
		for i := range len(name) {
			if name[i] >= utf8.RuneSelf {
				return nil
			}
		}
		names = append(names, name)
	}
	return names
}

// onlyKeys reports whether every key of the JSON object body (valid JSON) matches one
// of names as encoding/json matches them, case aside. A key with an escape or a
// non-ASCII byte is reported as no match: encoding/json decides those.
func onlyKeys(body []byte, names []string) bool {
	if len(body) == 0 || body[0] != '{' {
		return false
	}
	depth := 0 // of the value being skipped, inside the object
	key := true
	for i := 1; i < len(body); i++ {
		switch c := body[i]; c {
		case '"':
			start := i + 1
			for i++; body[i] != '"'; i++ {
				if body[i] == '\\' {
					i++
				}
			}
			if depth == 0 && key {
				if !knownKey(body[start:i], names) {
					return false
				}
				key = false
			}
		case '{', '[':
			depth++
		case '}', ']':
			depth--
		case ',':
			key = key || depth == 0
		}
	}
	return true
}

func knownKey(key []byte, names []string) bool {
	for _, c := range key {
		if c == '\\' || c >= utf8.RuneSelf {
			return false
		}
	}
	for _, name := range names {
		if strings.EqualFold(string(key), name) {
			return true
		}
	}
	return false
}
