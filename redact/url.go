package redact

import (
	"net/url"
	"strings"
)

// Hidden stands in for a credential in logs and error messages.
const Hidden = "xxxxx"

// URL returns raw, a URL such as -store's redis://user:password@host:6379/0, with its
// credentials hidden: the password of its userinfo, and the value of every query
// parameter whose name says it holds one (see secretParam). A string that does not
// parse as a URL keeps only its scheme, since where a credential in it ends cannot be
// told.
func URL(raw string) string {
	u, err := url.Parse(raw)
	if err != nil {
		if scheme, _, ok := strings.Cut(raw, "://"); ok && !strings.ContainsAny(scheme, ":/@?#") {
			return scheme + "://" + Hidden
		}
		return Hidden
	}
	if u.User != nil {
		if _, ok := u.User.Password(); ok {
			u.User = url.UserPassword(u.User.Username(), Hidden)
		}
	}
	u.RawQuery = query(u.RawQuery)
	return u.String()
}

// query hides the values of secret parameters in a raw query string, pair by pair, so
// that malformed pairs are hidden too and the order is kept.
func query(raw string) string {
	if raw == "" {
		return raw
	}
	pairs := strings.Split(raw, "&")
	for i, pair := range pairs {
		name, _, hasValue := strings.Cut(pair, "=")
		if unescaped, err := url.QueryUnescape(name); err == nil {
			name = unescaped
		}
		if hasValue && secretParam(name) {
			pairs[i] = pair[:strings.IndexByte(pair, '=')+1] + Hidden
		}
	}
	return strings.Join(pairs, "&")
}

// secretParam reports whether a query parameter's name says that its value is a
// credential: password, sentinel_password, pass, passwd, secret, token, ….
func secretParam(name string) bool {
	name = strings.ToLower(name)
	for _, word := range []string{"pass", "secret", "token", "credential"} {
		if strings.Contains(name, word) {
			return true
		}
	}
	return false
}
