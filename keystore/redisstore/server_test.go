package redisstore

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/jonboulle/clockwork"
	"github.com/redis/rueidis"

	"github.com/keypool/keypool/keystore"
)

// redisServer is a private redis-server on a unix socket in a temporary directory.
type redisServer struct {
	t    testing.TB
	dir  string
	sock string
	aof  bool // append-only file, fsync'd before every reply: a kill -9 loses nothing
	cmd  *exec.Cmd
}

// startRedis starts a redis-server for the test and stops it at the end; it skips the
// test where redis-server is not installed.
func startRedis(t testing.TB) *redisServer { return startRedisWith(t, false) }

// startRedisAOF is startRedis with an append-only file, so that a kill -9 and a
// restart lose nothing.
func startRedisAOF(t testing.TB) *redisServer { return startRedisWith(t, true) }

func startRedisWith(t testing.TB, aof bool) *redisServer {
	t.Helper()
	if _, err := exec.LookPath("redis-server"); err != nil {
		t.Skip("redis-server not installed: apt-get install redis-server")
	}
	// A unix socket path must stay short (108 bytes): t.TempDir() can be too long.
	dir, err := os.MkdirTemp("", "rs")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	s := &redisServer{t: t, dir: dir, sock: filepath.Join(dir, "redis.sock"), aof: aof}
	s.start()
	t.Cleanup(s.kill)
	return s
}

func (s *redisServer) url() string { return "unix://" + s.sock }

// start runs redis-server and waits until it answers PING. It loads dump.rdb from
// the directory if a SHUTDOWN SAVE left one.
func (s *redisServer) start() {
	s.t.Helper()
	appendonly := []string{"--appendonly", "no"}
	if s.aof {
		appendonly = []string{"--appendonly", "yes", "--appendfsync", "always"}
	}
	s.cmd = exec.Command("redis-server", append([]string{
		"--port", "0", "--unixsocket", s.sock, "--unixsocketperm", "700",
		"--save", "", "--dir", s.dir, "--dbfilename", "dump.rdb"}, appendonly...)...)
	s.cmd.Dir = s.dir
	s.cmd.Stdout, s.cmd.Stderr = nil, nil
	if err := s.cmd.Start(); err != nil {
		s.t.Fatal(err)
	}
	deadline := time.Now().Add(10 * time.Second)
	for {
		err := s.ping()
		if err == nil {
			return
		}
		if time.Now().After(deadline) {
			s.t.Fatalf("redis-server did not start: %v", err)
		}
		time.Sleep(10 * time.Millisecond) // polling for a child process to come up, not a TTL rule
	}
}

// ping reports whether the server answers PING (not while it loads its data).
func (s *redisServer) ping() error {
	c, err := s.dial()
	if err != nil {
		return err
	}
	defer c.Close()
	ctx, cancel := context.WithTimeout(context.Background(), time.Second)
	defer cancel()
	return c.Do(ctx, c.B().Ping().Build()).Error()
}

func (s *redisServer) dial() (rueidis.Client, error) {
	opt, err := rueidis.ParseURL(s.url())
	if err != nil {
		return nil, err
	}
	opt.DisableCache, opt.DisableRetry, opt.ForceSingleClient = true, true, true
	return rueidis.NewClient(opt)
}

// admin is a plain client of the test's redis-server, to look inside it.
type admin struct {
	t testing.TB
	c rueidis.Client
}

func (s *redisServer) client() *admin {
	s.t.Helper()
	c, err := s.dial()
	if err != nil {
		s.t.Fatal(err)
	}
	return &admin{t: s.t, c: c}
}

func (a *admin) Close() { a.c.Close() }

// do runs one command.
func (a *admin) do(args ...string) rueidis.RedisResult {
	return a.c.Do(context.Background(), a.c.B().Arbitrary(args...).Build())
}

// shutdownSave saves the data set to dump.rdb and stops the server.
func (s *redisServer) shutdownSave() {
	s.t.Helper()
	rdb := s.client()
	defer rdb.Close()
	_ = rdb.do("SHUTDOWN", "SAVE").Error() // the connection drops: no reply
	_ = s.cmd.Wait()
	s.cmd = nil
	_, err := os.Stat(filepath.Join(s.dir, "dump.rdb"))
	if err != nil {
		s.t.Fatalf("SHUTDOWN SAVE left no dump.rdb: %v", err)
	}
}

// pause stops the server's process (SIGSTOP): connections stay open, nothing answers.
func (s *redisServer) pause() { _ = s.cmd.Process.Signal(syscall.SIGSTOP) }

// resume continues a paused server (SIGCONT).
func (s *redisServer) resume() { _ = s.cmd.Process.Signal(syscall.SIGCONT) }

func (s *redisServer) kill() {
	if s.cmd != nil && s.cmd.Process != nil {
		_ = s.cmd.Process.Kill()
		_ = s.cmd.Wait()
		s.cmd = nil
	}
}

// info returns one field of INFO.
func (s *redisServer) info(section, name string) string {
	s.t.Helper()
	rdb := s.client()
	defer rdb.Close()
	text, err := rdb.do("INFO", section).ToString()
	if err != nil {
		s.t.Fatal(err)
	}
	for _, line := range strings.Split(text, "\n") {
		if k, v, ok := strings.Cut(strings.TrimSpace(line), ":"); ok && k == name {
			return v
		}
	}
	s.t.Fatalf("INFO %s has no %s", section, name)
	return ""
}

var namespaces atomic.Int64

// openStore opens a Store on srv under a namespace of its own and closes it at the end.
// testStore is a pool in Redis with its backend, for tests that look inside.
type testStore struct {
	*keystore.Pool
	b *Store
}

func openStore(t testing.TB, srv *redisServer, clock clockwork.Clock, opts keystore.Options, options ...Option) testStore {
	t.Helper()
	ns := fmt.Sprintf("t%d", namespaces.Add(1))
	return openNamespace(t, srv, clock, opts, ns, options...)
}

func openNamespace(t testing.TB, srv *redisServer, clock clockwork.Clock, opts keystore.Options, ns string, options ...Option) testStore {
	t.Helper()
	return openAt(t, srv.url(), clock, opts, ns, options...)
}

// openAt opens a store on the Redis at url (a proxy's, say) under namespace ns.
func openAt(t testing.TB, url string, clock clockwork.Clock, opts keystore.Options, ns string, options ...Option) testStore {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	pool, b, err := open(ctx, url, clock, opts, append([]Option{WithNamespace(ns)}, options...)...)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = pool.Close() })
	return testStore{pool, b}
}

// newFakeClock starts at a whole second, so that microseconds are exact.
func newFakeClock() *clockwork.FakeClock {
	return clockwork.NewFakeClockAt(time.Date(2026, 11, 24, 12, 0, 0, 0, time.UTC))
}
