package main

import (
	"context"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// storeSecret is the Redis password the tests put in -store; no output may hold it.
const storeSecret = "s3cret-Pa55"

// TestStoreCredentialsNotInErrors: a -store that is refused is named in the one-line
// error without its password.
func TestStoreCredentialsNotInErrors(t *testing.T) {
	for _, store := range []string{
		"redis://:" + storeSecret + "@",                 // no host
		"redis://:" + storeSecret + "@127.0.0.1:port/0", // does not parse
		"postgres://app:" + storeSecret + "@db/keys",    // not Redis
	} {
		var stderr strings.Builder
		err := run(context.Background(), []string{"keypool", "-addr", "127.0.0.1:0", "-store", store},
			func(string) string { return "" }, io.Discard, &stderr, nil)
		require.Error(t, err, store)
		assert.Contains(t, err.Error(), "-store")
		assert.NotContains(t, err.Error(), storeSecret)
		assert.NotContains(t, stderr.String(), storeSecret)
	}
}

// TestStoreCredentialsNotLogged starts the server on a password-protected Redis and
// checks that the start-up log names the store with its password hidden.
func TestStoreCredentialsNotLogged(t *testing.T) {
	sock := startPasswordRedis(t, storeSecret)
	for _, format := range []string{"text", "json"} {
		t.Run(format, func(t *testing.T) {
			s := startServer(t, "-store", "unix://:"+storeSecret+"@"+sock+"?db=0", "-log-format", format)
			s.mustPost(t, `mutation { generateKeys(count: 1) { id } }`, nil, nil) // the password works
			require.NoError(t, s.stop(t))
			logs := s.logs.String()
			assert.Contains(t, logs, "unix://:xxxxx@"+sock, "the store is named, its password hidden")
			assert.NotContains(t, logs, storeSecret)
			assert.NotContains(t, s.out.String(), storeSecret)
		})
	}
}

// startPasswordRedis runs a redis-server that requires password on a private unix
// socket for the test, and returns the socket's path. It skips where redis-server is
// not installed.
func startPasswordRedis(t *testing.T, password string) string {
	t.Helper()
	if _, err := exec.LookPath("redis-server"); err != nil {
		t.Skip("redis-server not installed: apt-get install redis-server")
	}
	dir, err := os.MkdirTemp("", "rs") // a unix socket path must stay short
	require.NoError(t, err)
	t.Cleanup(func() { os.RemoveAll(dir) })
	sock := filepath.Join(dir, "redis.sock")
	cmd := exec.Command("redis-server", "--port", "0", "--unixsocket", sock, "--unixsocketperm", "700",
		"--save", "", "--appendonly", "no", "--dir", dir, "--requirepass", password)
	require.NoError(t, cmd.Start())
	t.Cleanup(func() {
		_ = cmd.Process.Kill()
		_ = cmd.Wait()
	})
	// The socket's file is there from its bind, before Redis listens: wait for an
	// answer to PING (-NOAUTH, with a password) instead.
	require.Eventually(t, func() bool {
		c, err := net.DialTimeout("unix", sock, time.Second)
		if err != nil {
			return false
		}
		defer c.Close()
		_ = c.SetDeadline(time.Now().Add(time.Second))
		if _, err := c.Write([]byte("PING\r\n")); err != nil {
			return false
		}
		n, _ := c.Read(make([]byte, 64))
		return n > 0
	}, 10*time.Second, 10*time.Millisecond, "redis-server did not start")
	return sock
}
