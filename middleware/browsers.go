package middleware

import (
	"fmt"
	"net/http"
	"net/url"
	"strings"

	"github.com/keypool/keypool/keystore"
	"github.com/keypool/keypool/wire"
)

// An ErrorWriter answers a request refused before its route ran, in the error shape of
// that route.
type ErrorWriter func(w http.ResponseWriter, r *http.Request, status int, code keystore.Code, message string)

// RESTError answers in REST's shape: {"error":{"code":…,"message":…}}.
func RESTError(w http.ResponseWriter, _ *http.Request, status int, code keystore.Code, message string) {
	wire.WriteRESTError(w, status, code, message)
}

// GraphQLError answers in GraphQL's shape: {"errors":[{"message":…,"extensions":{"code":…}}]}.
func GraphQLError(w http.ResponseWriter, _ *http.Request, status int, code keystore.Code, message string) {
	wire.WriteGraphQLError(w, wire.MediaJSON, status, code, message)
}

// changesState reports whether a request with method may change the pool: every
// method but the safe ones (RFC 9110: GET, HEAD, OPTIONS, TRACE). Browsers send such
// requests from any page, to any site, without asking first when they are "simple".
func changesState(method string) bool {
	switch method {
	case http.MethodGet, http.MethodHead, http.MethodOptions, http.MethodTrace:
		return false
	}
	return true
}

// fromBrowser reports whether r says it comes from a browser: it carries an Origin or a
// Sec-Fetch-* header, which browsers set and scripts (curl) do not.
func fromBrowser(r *http.Request) bool {
	if r.Header.Get("Origin") != "" {
		return true
	}
	for name := range r.Header {
		if strings.HasPrefix(name, "Sec-Fetch-") {
			return true
		}
	}
	return false
}

// maxEcho bounds how much of a header a refusal's message repeats.
const maxEcho = 100

// Browsers refuses, before next sees them, the browser requests that a page may make
// but must not:
//
//   - any request from a browser (see fromBrowser) to a Host that hosts does not allow:
//     a page on a DNS name rebound to keypool's address;
//   - a request that changes state (see changesState) sent cross-site without a
//     preflight: Sec-Fetch-Site cross-site or same-site, or an Origin that is neither
//     the request's own host nor allowed by origins. An allowed origin passes: its
//     requests went through CORS.
//
// Both are answered 403 with wire.CodeForbidden through refuse. Requests from scripts (no
// Origin, no Sec-Fetch-*) pass; so do same-origin pages and reads from anywhere (CORS
// keeps their answers from other origins' pages).
func Browsers(hosts Hosts, origins Origins, refuse ErrorWriter, next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if !fromBrowser(r) {
			next.ServeHTTP(w, r)
			return
		}
		if !hosts.Allows(r.Host) {
			host := echo(normalHost(hostOnly(r.Host)))
			refuse(w, r, http.StatusForbidden, wire.CodeForbidden, fmt.Sprintf(
				"browsers may not reach this server as %q (a DNS-rebinding defence); if that is its name, start it with -allowed-hosts %s", host, host))
			return
		}
		if changesState(r.Method) && crossSite(r, origins) {
			refuse(w, r, http.StatusForbidden, wire.CodeForbidden, fmt.Sprintf(
				"a cross-site %s from origin %q is refused; allow the origin with -cors-origins", r.Method, echo(r.Header.Get("Origin"))))
			return
		}
		next.ServeHTTP(w, r)
	})
}

// crossSite reports whether a browser sent r from a page of another origin that
// origins does not allow.
func crossSite(r *http.Request, origins Origins) bool {
	origin := r.Header.Get("Origin")
	if origin != "" && origins.Allows(origin) {
		return false
	}
	switch r.Header.Get("Sec-Fetch-Site") {
	case "cross-site", "same-site": // same-site: another port or subdomain, still another origin
		return true
	}
	return origin != "" && !sameHost(origin, r.Host)
}

// sameHost reports whether origin (an Origin header's value) names host (a Host
// header's value). The scheme is not compared: behind a TLS proxy, the page is https
// and the request keypool sees is http.
func sameHost(origin, host string) bool {
	u, err := url.Parse(origin)
	return err == nil && u.Host != "" && strings.EqualFold(u.Host, host)
}

func echo(s string) string {
	if len(s) > maxEcho {
		return s[:maxEcho] + "…"
	}
	return s
}
