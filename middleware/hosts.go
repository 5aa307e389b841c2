package middleware

import (
	"fmt"
	"net"
	"os"
	"slices"
	"strings"
)

// Hosts is the set of names by which browsers may reach keypool: the defence against
// DNS rebinding. A page on a name the attacker controls, once that name is rebound to
// keypool's address, is same-origin with keypool to the browser, so neither CORS nor an
// Origin check stops it; only the Host it sends gives it away.
//
// Loopback names (localhost, *.localhost) and IP addresses are always allowed: browsers
// resolve localhost themselves and an IP address is no DNS name, so neither can be
// rebound. Other names must be listed. The zero value allows only those.
type Hosts struct {
	any      bool
	names    []string // lower case, without a trailing dot
	suffixes []string // from "*.example.com": ".example.com"
}

// DefaultHosts allows, besides loopback names and IP addresses, this machine's host
// name and, for a short one, its mDNS name (NAME.local), so that `go run .` works from
// this machine and from the LAN under its own name.
func DefaultHosts() Hosts {
	name, err := os.Hostname()
	name = normalHost(name)
	if err != nil || !validHostPattern(name) {
		return Hosts{}
	}
	h := Hosts{names: []string{name}}
	if !strings.Contains(name, ".") {
		h.names = append(h.names, name+".local")
	}
	return h
}

// ParseHosts reads a comma-separated list of host names (without ports) such as
// "keypool.lan,*.example.com": "*.example.com" allows every name under example.com, and
// "*" allows every name. Blank entries are skipped.
func ParseHosts(list string) (Hosts, error) {
	var h Hosts
	for entry := range strings.SplitSeq(list, ",") {
		entry = strings.TrimSpace(entry)
		under, wildcard := strings.CutPrefix(entry, "*.")
		switch {
		case entry == "":
		case entry == "*":
			h.any = true
		case wildcard && validHostPattern(normalHost(under)):
			h.suffixes = append(h.suffixes, "."+normalHost(under))
		case !wildcard && validHostPattern(normalHost(entry)):
			h.names = append(h.names, normalHost(entry))
		default:
			return Hosts{}, fmt.Errorf("bad host %q: want a host name such as keypool.lan (no scheme or port), *.example.com, or *", entry)
		}
	}
	return h, nil
}

// String lists the names as ParseHosts reads them.
func (h Hosts) String() string {
	var list []string
	if h.any {
		list = append(list, "*")
	}
	list = append(list, h.names...)
	for _, s := range h.suffixes {
		list = append(list, "*"+s)
	}
	return strings.Join(list, ",")
}

// Set replaces h with the list that ParseHosts reads from list, so that *Hosts is a
// flag.Value.
func (h *Hosts) Set(list string) error {
	parsed, err := ParseHosts(list)
	if err != nil {
		return err
	}
	*h = parsed
	return nil
}

// Allows reports whether hostport, a Host header's value (the port is ignored), names
// keypool as browsers may reach it.
func (h Hosts) Allows(hostport string) bool {
	host := normalHost(hostOnly(hostport))
	switch {
	case host == "":
		return false
	case h.any, net.ParseIP(host) != nil, host == "localhost", strings.HasSuffix(host, ".localhost"):
		return true
	case slices.Contains(h.names, host):
		return true
	}
	for _, suffix := range h.suffixes {
		if strings.HasSuffix(host, suffix) {
			return true
		}
	}
	return false
}

// hostOnly drops the port of a Host header's value, and the brackets of an IPv6 address.
func hostOnly(hostport string) string {
	if host, _, err := net.SplitHostPort(hostport); err == nil {
		return host
	}
	return strings.TrimSuffix(strings.TrimPrefix(hostport, "["), "]")
}

// normalHost is host in lower case, without the trailing dot of a fully qualified name.
func normalHost(host string) string { return strings.TrimSuffix(strings.ToLower(host), ".") }

// validHostPattern reports whether s is a plain host name or IP address: letters,
// digits, '-', '_', '.' and ':' (IPv6), nothing that a scheme, port or path would need.
func validHostPattern(s string) bool {
	if s == "" || net.ParseIP(s) == nil && strings.Contains(s, ":") {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		if !(c == '-' || c == '_' || c == '.' || c == ':' || 'a' <= c && c <= 'z' || '0' <= c && c <= '9') {
			return false
		}
	}
	return true
}
