// Package redact shortens secrets before they reach a log line.
//
// A key id is a bearer secret for whoever holds it, so logs carry only a short prefix:
// enough to tell keys apart while reading, not enough to use one.
package redact

import (
	"strings"
)

// prefixLen is how many characters of a key id or token survive in logs.
const prefixLen = 6

// minSecretLen is the length from which a path segment is taken for a key id or a
// lease token (both are 22 characters; route words like "keepalive" are shorter).
const minSecretLen = 16

// KeyID returns id cut to its first six characters followed by "…"; ids of six
// characters or fewer are returned unchanged.
func KeyID(id string) string {
	if len(id) <= prefixLen {
		return id
	}
	return id[:prefixLen] + "…"
}

// Path returns the URL path p with every segment long enough to be a key id or a
// lease token cut as KeyID cuts it, so /v1/keys/{id}/unblock can be logged.
func Path(p string) string {
	if len(p) < minSecretLen {
		return p
	}
	long := false
	for seg := range strings.SplitSeq(p, "/") {
		if len(seg) >= minSecretLen {
			long = true
			break
		}
	}
	if !long {
		return p
	}
	segs := strings.Split(p, "/")
	for i, seg := range segs {
		if len(seg) >= minSecretLen {
			segs[i] = KeyID(seg)
		}
	}
	return strings.Join(segs, "/")
}
