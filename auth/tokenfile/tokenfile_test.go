package tokenfile

import (
	"strings"
	"testing"
)

func TestNew(t *testing.T) {
	token, line, err := New("ci", Client, "build,deploy")
	if err != nil {
		t.Fatal(err)
	}
	if want := "ci client " + Digest(token) + " build,deploy"; line != want {
		t.Errorf("line %q, want %q", line, want)
	}
	if len(token) < 40 || strings.ContainsAny(token, " \n") {
		t.Errorf("token %q: want a long word", token)
	}
	other, _, _ := New("ci", Client, "")
	if other == token {
		t.Error("two tokens alike")
	}
	for _, bad := range []struct {
		name  string
		role  Role
		pools string
	}{{"", Admin, ""}, {"a b", Admin, ""}, {"#a", Admin, ""}, {"a", None, ""}, {"a", Admin, "x,,y"}, {"a", Admin, ",x"}, {"a", Admin, "x y"}} {
		if _, _, err := New(bad.name, bad.role, bad.pools); err == nil {
			t.Errorf("New(%q, %v, %q): no error", bad.name, bad.role, bad.pools)
		}
	}
}
