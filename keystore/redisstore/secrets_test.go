package redisstore

import (
	"bufio"
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/keypool/keypool/keystore"
)

// TestSecretsKeyAgreement: without a secrets key an import is NOT_CONFIGURED, naming
// the flag; the first replica with a key records its check value, and a replica with
// another key, or with none, then refuses to start, naming the flag.
func TestSecretsKeyAgreement(t *testing.T) {
	srv := startRedis(t)
	ctx := context.Background()
	keyless := openNamespace(t, srv, newFakeClock(), keystore.Options{}, "sealed")
	_, err := keyless.Import(ctx, []keystore.KeyInput{{Secret: "sk-1"}}, keystore.ImportOptions{})
	wantCode(t, err, keystore.ENOTCONFIGURED)
	require.Contains(t, err.Error(), secretsKeyFlag)

	keyed := openNamespace(t, srv, newFakeClock(), keystore.Options{}, "sealed", WithSecretsKey(testSecretsKey))
	must(keyed.Import(ctx, []keystore.KeyInput{{Secret: "sk-1"}}, keystore.ImportOptions{}))(t)
	openNamespace(t, srv, newFakeClock(), keystore.Options{}, "sealed", WithSecretsKey(testSecretsKey)) // the same key

	other := bytes.Repeat([]byte{1}, SecretsKeySize)
	for name, options := range map[string][]Option{"another key": {WithSecretsKey(other)}, "no key": nil} {
		c, cancel := context.WithTimeout(ctx, 10*time.Second)
		pool, _, err := open(c, srv.url(), newFakeClock(), keystore.Options{}, append(options, WithNamespace("sealed"))...)
		cancel()
		if err == nil {
			_ = pool.Close()
			t.Fatalf("a replica with %s started", name)
		}
		require.Contains(t, err.Error(), secretsKeyFlag, name)
	}
	_, _, err = open(ctx, srv.url(), newFakeClock(), keystore.Options{}, WithNamespace("short"), WithSecretsKey([]byte("short")))
	require.ErrorContains(t, err, secretsKeyFlag)
}

// monitor captures Redis's MONITOR output (every command that Redis runs, with its
// arguments) until stop.
type monitor struct {
	mu   sync.Mutex
	buf  bytes.Buffer
	conn net.Conn
	done chan struct{}
}

func startMonitor(t *testing.T, srv *redisServer) *monitor {
	t.Helper()
	conn, err := net.Dial("unix", srv.sock)
	require.NoError(t, err)
	m := &monitor{conn: conn, done: make(chan struct{})}
	_, err = conn.Write([]byte("MONITOR\r\n"))
	require.NoError(t, err)
	r := bufio.NewReader(conn)
	line, err := r.ReadString('\n')
	require.NoError(t, err)
	require.Equal(t, "+OK\r\n", line)
	go func() {
		defer close(m.done)
		for {
			line, err := r.ReadString('\n')
			m.mu.Lock()
			m.buf.WriteString(line)
			m.mu.Unlock()
			if err != nil {
				return
			}
		}
	}()
	t.Cleanup(m.stop)
	return m
}

// seen waits until Redis has told the monitor of a command holding marker.
func (m *monitor) seen(t *testing.T, marker string) {
	t.Helper()
	waitFor(t, func() bool {
		m.mu.Lock()
		defer m.mu.Unlock()
		return strings.Contains(m.buf.String(), marker)
	})
}

func (m *monitor) stop() {
	m.conn.Close()
	<-m.done
}

func (m *monitor) text() string {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.buf.String()
}

// TestImportedSecretStaysSealed: a secret given to Import is in the holder's answers
// (acquire, renew) and nowhere else the Redis store puts things: not in a DUMP of any
// key of the namespace, not in the append-only file (appendfsync always), not in
// MONITOR's record of every command, not in the store's log at debug level. Each place
// is shown to hold the key's name, which is not sealed: the search would find the
// secret if it were there.
func TestImportedSecretStaysSealed(t *testing.T) {
	srv := startRedisAOF(t)
	mon := startMonitor(t, srv)
	var logs bytes.Buffer
	var logMu sync.Mutex
	logger := slog.New(slog.NewTextHandler(&lockedWriter{w: &logs, mu: &logMu}, &slog.HandlerOptions{Level: slog.LevelDebug}))
	s := openNamespace(t, srv, newFakeClock(), keystore.Options{}, "vault", WithSecretsKey(testSecretsKey), WithLogger(logger))
	ctx := context.Background()

	raw := make([]byte, 16)
	rand.Read(raw)
	secret := "sk-live-" + hex.EncodeToString(raw)
	name := "vendor-key-" + hex.EncodeToString(raw[:4])
	imported := must(s.Import(ctx, []keystore.KeyInput{{Secret: secret, Name: name}}, keystore.ImportOptions{Pool: "vendor"}))(t)
	leased := must(s.Acquire(ctx, keystore.AcquireOptions{Pool: "vendor"}))(t)
	require.Equal(t, imported[0].ID, leased.ID)
	require.Equal(t, secret, leased.Lease.Secret, "the holder's answer carries the secret")
	renewed := must(s.Renew(ctx, leased.ID, leased.Lease.Token, nil))(t)
	require.Equal(t, secret, renewed.Lease.Secret)
	got := must(s.Get(ctx, leased.ID))(t)
	require.Equal(t, name, got.Name)
	require.Empty(t, got.Lease.Secret, "a read of the key shows no secret")

	rdb := srv.client()
	defer rdb.Close()
	end := "end-of-test-" + hex.EncodeToString(raw[4:8])
	must(rdb.do("ECHO", end).ToString())(t)
	mon.seen(t, end)
	commands := mon.text()
	require.Contains(t, commands, name)
	require.NotContains(t, commands, secret, "MONITOR shows the secret")

	var dumps bytes.Buffer
	cursor := "0"
	for {
		page := must(rdb.do("SCAN", cursor, "MATCH", "{vault*", "COUNT", "1000").ToArray())(t)
		cursor = must(page[0].ToString())(t)
		for _, key := range must(page[1].AsStrSlice())(t) {
			dumps.WriteString(must(rdb.do("DUMP", key).ToString())(t))
		}
		if cursor == "0" {
			break
		}
	}
	require.Contains(t, dumps.String(), name)
	require.NotContains(t, dumps.String(), secret, "a DUMP holds the secret")

	var aof bytes.Buffer
	require.NoError(t, filepath.WalkDir(srv.dir, func(path string, d os.DirEntry, err error) error {
		if err != nil || d.IsDir() || !strings.Contains(path, "appendonly") {
			return err
		}
		b, err := os.ReadFile(path)
		aof.Write(b)
		return err
	}))
	require.Contains(t, aof.String(), name, "the append-only file holds the import")
	require.NotContains(t, aof.String(), secret, "the append-only file holds the secret")

	logMu.Lock()
	defer logMu.Unlock()
	require.NotContains(t, logs.String(), secret, "the log holds the secret")
}

// lockedWriter serializes the writes of a logger shared by goroutines.
type lockedWriter struct {
	w  *bytes.Buffer
	mu *sync.Mutex
}

func (l *lockedWriter) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.w.Write(p)
}
