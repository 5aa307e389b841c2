package middleware

import (
	"fmt"
	"net/http"
	"net/url"
	"slices"
	"strings"
)

// Origins is the set of browser origins allowed to call keypool from another origin:
// over HTTP through CORS, and over WebSocket through CheckOrigin. Same-origin requests
// are always allowed. The zero value allows no other origin.
type Origins struct {
	any     bool
	allowed []string // "scheme://host[:port]", lower case
}

// ParseOrigins reads a comma-separated list of origins such as
// "https://app.example.com,http://localhost:3000"; "*" allows every origin. Blank
// entries are skipped; an empty list allows none.
func ParseOrigins(list string) (Origins, error) {
	var o Origins
	for entry := range strings.SplitSeq(list, ",") {
		entry = strings.TrimSpace(entry)
		switch {
		case entry == "":
			continue
		case entry == "*":
			o.any = true
			continue
		}
		u, err := url.Parse(entry)
		if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" ||
			(u.Path != "" && u.Path != "/") || u.RawQuery != "" || u.Fragment != "" || u.User != nil {
			return Origins{}, fmt.Errorf("bad origin %q: want scheme://host[:port], such as https://app.example.com, or *", entry)
		}
		o.allowed = append(o.allowed, strings.ToLower(u.Scheme+"://"+u.Host))
	}
	return o, nil
}

// String lists the origins as ParseOrigins reads them.
func (o Origins) String() string {
	list := slices.Clone(o.allowed)
	if o.any {
		list = append([]string{"*"}, list...)
	}
	return strings.Join(list, ",")
}

// Set replaces o with the list that ParseOrigins reads from list, so that *Origins is a
// flag.Value.
func (o *Origins) Set(list string) error {
	parsed, err := ParseOrigins(list)
	if err != nil {
		return err
	}
	*o = parsed
	return nil
}

// Empty reports whether no other origin is allowed.
func (o Origins) Empty() bool { return !o.any && len(o.allowed) == 0 }

// Allows reports whether origin (an Origin header's value) is in the list.
func (o Origins) Allows(origin string) bool {
	return o.any || slices.Contains(o.allowed, strings.ToLower(origin))
}

// CheckOrigin is a WebSocket upgrader's origin check: requests without an Origin
// header (not from a browser), from the page's own origin, or from an allowed origin pass.
func (o Origins) CheckOrigin(r *http.Request) bool {
	origin := r.Header.Get("Origin")
	return origin == "" || o.Allows(origin) || sameHost(origin, r.Host)
}

// The CORS answer to a preflight. There are no credentials (keypool has no auth), so
// no Access-Control-Allow-Credentials.
const (
	allowMethods = "GET, POST, DELETE, OPTIONS"
	maxAge       = "600"
)

// CORS answers cross-origin requests from allowed origins: it adds
// Access-Control-Allow-Origin (and Vary: Origin) to their responses, and answers their
// preflight OPTIONS requests itself with 204 and the allowed methods and headers. With
// no origins it returns next unchanged.
func CORS(origins Origins, next http.Handler) http.Handler {
	if origins.Empty() {
		return next
	}
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		h := w.Header()
		h.Add("Vary", "Origin")
		origin := r.Header.Get("Origin")
		preflight := r.Method == http.MethodOptions && origin != "" && r.Header.Get("Access-Control-Request-Method") != ""
		if origin == "" || !origins.Allows(origin) {
			if preflight {
				// Refused: no CORS headers, and the browser blocks the real request.
				w.WriteHeader(http.StatusNoContent)
				return
			}
			next.ServeHTTP(w, r)
			return
		}
		if origins.any {
			h.Set("Access-Control-Allow-Origin", "*")
		} else {
			h.Set("Access-Control-Allow-Origin", origin)
		}
		if !preflight {
			next.ServeHTTP(w, r)
			return
		}
		h.Add("Vary", "Access-Control-Request-Method")
		h.Add("Vary", "Access-Control-Request-Headers")
		h.Set("Access-Control-Allow-Methods", allowMethods)
		// Any request header may be sent: keypool has no credentials for a header to carry.
		if reqHeaders := r.Header.Get("Access-Control-Request-Headers"); reqHeaders != "" && validHeaderList(reqHeaders) {
			h.Set("Access-Control-Allow-Headers", reqHeaders)
		}
		h.Set("Access-Control-Max-Age", maxAge)
		w.WriteHeader(http.StatusNoContent)
	})
}

// validHeaderList reports whether s is a comma-separated list of header names, so that
// it can be echoed back safely.
func validHeaderList(s string) bool {
	for i := 0; i < len(s); i++ {
		c := s[i]
		if !(c == ',' || c == ' ' || c == '-' || c == '_' || c == '.' ||
			'a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || '0' <= c && c <= '9') {
			return false
		}
	}
	return true
}
