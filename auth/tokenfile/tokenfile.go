// Package tokenfile is what both the server and keypoolctl know of the auth file's
// lines (NAME ROLE SHA256HEX [POOLS]): the roles, a token's digest, and a new token
// with its line. It needs nothing beyond the standard library.
package tokenfile

import (
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"strings"
)

// Role is what a token may do: each role may do what the roles below it may.
type Role int8

// The roles, least first. None is the role of a request that carries no known token.
const (
	None Role = iota
	Viewer
	Client
	Admin
)

var roleNames = [...]string{None: "none", Viewer: "viewer", Client: "client", Admin: "admin"}

func (r Role) String() string {
	if r < 0 || int(r) >= len(roleNames) {
		return fmt.Sprintf("Role(%d)", r)
	}
	return roleNames[r]
}

// ParseRole reads admin, client or viewer.
func ParseRole(s string) (Role, bool) {
	for r := Viewer; r <= Admin; r++ {
		if roleNames[r] == s {
			return r, true
		}
	}
	return None, false
}

// Digest is the hex SHA-256 of a token, as the file holds it.
func Digest(token string) string {
	sum := sha256.Sum256([]byte(token))
	return hex.EncodeToString(sum[:])
}

// New returns a new random token (256 bits, URL-safe) and its line for the file:
// NAME ROLE SHA256HEX, and POOLS (comma-separated) if not empty.
func New(name string, role Role, pools string) (token, line string, err error) {
	if name == "" || strings.ContainsAny(name, " \t\r\n#") {
		return "", "", fmt.Errorf("the name %q must be one word (no spaces, no #)", name)
	}
	if role < Viewer || role > Admin {
		return "", "", fmt.Errorf("the role must be admin, client or viewer")
	}
	if strings.ContainsAny(pools, " \t\r\n") || strings.Contains(","+pools+",", ",,") && pools != "" {
		return "", "", fmt.Errorf("the pools %q must be a comma-separated list of names", pools)
	}
	token = rand.Text() + rand.Text() // 2 x 128 bits in base32
	line = name + " " + role.String() + " " + Digest(token)
	if pools != "" {
		line += " " + pools
	}
	return token, line, nil
}
