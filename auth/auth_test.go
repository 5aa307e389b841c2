package auth

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/keypool/keypool/keystore"
	"github.com/keypool/keypool/wire"
)

func TestParse(t *testing.T) {
	tokens, err := Parse(strings.NewReader("# a comment\n\nops admin " + Digest("a") + "\n" +
		"ci client " + Digest("c") + " build,deploy\n"))
	require.NoError(t, err)
	assert.Equal(t, 2, tokens.Len())
	p := tokens.lookup("c")
	require.NotNil(t, p)
	assert.Equal(t, "ci", p.Name)
	assert.Equal(t, Client, p.Role)
	assert.True(t, p.MayUse("deploy"))
	assert.False(t, p.MayUse("default"))
	assert.True(t, tokens.lookup("a").MayUse("anything"))
	assert.Nil(t, tokens.lookup("b"))
	assert.Nil(t, tokens.lookup(""))

	hash := Digest("x")
	for _, bad := range []struct{ file, want string }{
		{"ops admin", "line 1: want NAME ROLE SHA256HEX [POOLS], got 2 fields"},
		{"ops root " + hash, `line 1 (ops): role must be admin, client or viewer, got "root"`},
		{"ops admin abc", "line 1 (ops): the third field must be a SHA-256 in 64 hex digits"},
		{"ops admin " + strings.Repeat("z", 64), "line 1 (ops): the third field must be a SHA-256 in 64 hex digits"},
		{"ops admin " + hash + "\nops viewer " + Digest("y"), "line 2: the name ops is on an earlier line too"},
		{"ops admin " + hash + "\nci viewer " + hash, "line 2 (ci): the same token is on an earlier line too"},
		{"ops admin " + hash + " a,,b", `line 1 (ops): an empty pool in "a,,b"`},
	} {
		_, err := Parse(strings.NewReader(bad.file))
		if assert.Error(t, err, bad.file) {
			assert.Equal(t, bad.want, err.Error())
			assert.NotContains(t, err.Error(), hash, "no hash in an error")
		}
	}
}

func TestAllow(t *testing.T) {
	ctx := context.Background()
	assert.NoError(t, Allow(ctx, "generateKeys"), "off: everything")
	assert.NoError(t, Allow(ctx, "no such operation"), "off: everything")

	viewer := WithPrincipal(ctx, &Principal{Name: "v", Role: Viewer})
	assert.NoError(t, Allow(viewer, "stats"))
	err := Allow(viewer, "acquireKey")
	assert.Equal(t, wire.CodeForbidden, keystore.ErrorCode(err))
	assert.Equal(t, "acquireKey needs the role client; the token v is viewer", keystore.ErrorMessage(err))

	admin := WithPrincipal(ctx, &Principal{Name: "a", Role: Admin})
	assert.NoError(t, Allow(admin, "deleteKey"))
	assert.Equal(t, wire.CodeForbidden, keystore.ErrorCode(Allow(admin, "newOperation")), "an operation without a rule is refused to every role")

	assert.Equal(t, wire.CodeUnauthenticated, keystore.ErrorCode(Allow(WithPrincipal(ctx, anonymous), "stats")))
}

func TestReload(t *testing.T) {
	path := filepath.Join(t.TempDir(), "tokens")
	write := func(s string) { require.NoError(t, os.WriteFile(path, []byte(s), 0o600)) }
	write("kept viewer " + Digest("k") + "\ngone viewer " + Digest("g") + "\nmoved viewer " + Digest("m") + "\n")
	failures := 0
	g, err := NewGuard(path, func() { failures++ })
	require.NoError(t, err)
	kept, gone, moved := g.Authenticate("Bearer k"), g.Authenticate("Bearer g"), g.Authenticate("bearer m")
	require.NotNil(t, kept)
	require.NotNil(t, gone)
	require.NotNil(t, moved)
	assert.Nil(t, g.Authenticate("Basic k"))
	assert.Nil(t, g.Authenticate("Bearer "))

	keptCtx, stopKept := Bind(context.Background(), kept)
	defer stopKept()
	goneCtx, stopGone := Bind(context.Background(), gone)
	defer stopGone()
	movedCtx, stopMoved := Bind(context.Background(), moved)
	defer stopMoved()

	write("not a file of tokens")
	_, err = g.Reload()
	require.Error(t, err)
	assert.Same(t, kept, g.Authenticate("Bearer k"), "a bad file keeps the tokens in force")

	write("kept viewer " + Digest("k") + "\nmoved admin " + Digest("m") + "\nnew client " + Digest("n") + "\n")
	_, err = g.Reload()
	require.NoError(t, err)
	assert.Same(t, kept, g.Authenticate("Bearer k"))
	assert.Nil(t, g.Authenticate("Bearer g"))
	assert.Equal(t, Admin, g.Authenticate("Bearer m").Role)
	assert.Equal(t, "new", g.Authenticate("Bearer n").Name)
	ended := func(ctx context.Context) bool {
		select {
		case <-ctx.Done(): // AfterFunc cancels it on a goroutine of its own
			return true
		case <-time.After(5 * time.Second):
			return false
		}
	}
	assert.True(t, ended(goneCtx), "a removed token's streams end")
	assert.True(t, ended(movedCtx), "a token whose role changed: its streams end")
	assert.NoError(t, keptCtx.Err(), "a kept token's streams go on")
	assert.Zero(t, failures)
	g.Failed()
	assert.Equal(t, 1, failures)
}
