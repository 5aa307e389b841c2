package main

import (
	"bytes"
	"context"
	"encoding/base64"
	"errors"
	"flag"
	"io"
	"net"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/keypool/keypool/internal/buildinfo"
	"github.com/keypool/keypool/middleware"
)

func envOf(vars map[string]string) func(string) string {
	return func(name string) string { return vars[name] }
}

func TestConfigDefaults(t *testing.T) {
	cfg, err := parseConfig(nil, envOf(nil), io.Discard)
	require.NoError(t, err)
	assert.Equal(t, config{
		Addr:         ":8080",
		LeaseTTL:     60 * time.Second,
		KeepAliveTTL: 5 * time.Minute,
		MaxLeaseTTL:  time.Hour,
		MaxGenerate:  10000,
		MaxWaiters:   1000,
		MaxPools:     1000,
		MaxCooldown:  time.Hour,
		Store:        "memory",
		LogFormat:    "text",
		GCHeapFloor:  64,
		AllowedHosts: middleware.DefaultHosts(),
		ReadTimeout:  10 * time.Second,
		IdleTimeout:  2 * time.Minute,
	}, cfg)
}

func TestConfigFlagsAndEnv(t *testing.T) {
	env := envOf(map[string]string{
		"KEYPOOL_ADDR":          "127.0.0.1:9000",
		"KEYPOOL_LEASE_TTL":     "30s",
		"KEYPOOL_KEEPALIVE_TTL": "10m",
		"KEYPOOL_MAX_LEASE_TTL": "2h",
		"KEYPOOL_MAX_GENERATE":  "50",
		"KEYPOOL_MAX_WAITERS":   "20000",
		"KEYPOOL_MAX_POOLS":     "3",
		"KEYPOOL_STORE":         "redis://localhost:6379/0",
		"KEYPOOL_LOG_FORMAT":    "json",
		"KEYPOOL_GC_HEAP_FLOOR": "0",
		"KEYPOOL_ALLOWED_HOSTS": "keypool.lan",
		"KEYPOOL_READ_TIMEOUT":  "5s",
		"KEYPOOL_IDLE_TIMEOUT":  "1m",
		"KEYPOOL_MAX_COOLDOWN":  "2h",
	})
	t.Run("env", func(t *testing.T) {
		cfg, err := parseConfig(nil, env, io.Discard)
		require.NoError(t, err)
		assert.Equal(t, config{
			Addr:         "127.0.0.1:9000",
			LeaseTTL:     30 * time.Second,
			KeepAliveTTL: 10 * time.Minute,
			MaxLeaseTTL:  2 * time.Hour,
			MaxGenerate:  50,
			MaxWaiters:   20000,
			MaxPools:     3,
			MaxCooldown:  2 * time.Hour,
			Store:        "redis://localhost:6379/0",
			LogFormat:    "json",
			AllowedHosts: mustHosts(t, "keypool.lan"),
			ReadTimeout:  5 * time.Second,
			IdleTimeout:  time.Minute,
		}, cfg, "-gc-heap-floor 0 turns the floor off")
	})
	t.Run("flags beat env", func(t *testing.T) {
		cfg, err := parseConfig([]string{
			"-addr", ":1234", "-lease-ttl", "1m30s", "-keepalive-ttl=1h", "-max-lease-ttl", "3h",
			"-max-generate", "7", "-max-waiters", "5", "-max-pools", "9", "-store", "memory", "-log-format", "text",
			"-gc-heap-floor", "128", "-allowed-hosts", "*.example.com,*", "-read-timeout", "3s", "-idle-timeout", "30s",
			"-quarantine-after", "3", "-expired-lease-cooldown", "15s", "-max-cooldown", "10m",
		}, env, io.Discard)
		require.NoError(t, err)
		assert.Equal(t, config{
			Addr:         ":1234",
			LeaseTTL:     90 * time.Second,
			KeepAliveTTL: time.Hour,
			MaxLeaseTTL:  3 * time.Hour,
			MaxGenerate:  7,
			MaxWaiters:   5,
			MaxPools:     9,
			Store:        "memory",

			QuarantineAfter:      3,
			ExpiredLeaseCooldown: 15 * time.Second,
			MaxCooldown:          10 * time.Minute,
			LogFormat:            "text",
			GCHeapFloor:          128,
			AllowedHosts:         mustHosts(t, "*,*.example.com"),
			ReadTimeout:          3 * time.Second,
			IdleTimeout:          30 * time.Second,
		}, cfg)
	})
	t.Run("cool-downs and quarantine with a Redis store", func(t *testing.T) {
		cfg, err := parseConfig([]string{"-store", "redis://localhost:6379/0", "-quarantine-after", "3", "-expired-lease-cooldown", "5s"}, envOf(nil), io.Discard)
		require.NoError(t, err)
		assert.Equal(t, 3, cfg.QuarantineAfter)
		assert.Equal(t, 5*time.Second, cfg.ExpiredLeaseCooldown)
	})
	t.Run("the secrets key, from a file or inline, with a Redis store", func(t *testing.T) {
		key := bytes.Repeat([]byte{7}, 32)
		text := base64.StdEncoding.EncodeToString(key)
		file := filepath.Join(t.TempDir(), "key")
		require.NoError(t, os.WriteFile(file, []byte(text+"\n"), 0o600))
		redis := []string{"-store", "redis://localhost:6379/0"}
		cfg, err := parseConfig(append(redis, "-secrets-key-file", file), envOf(nil), io.Discard)
		require.NoError(t, err)
		assert.Equal(t, key, cfg.SecretsKey)
		cfg, err = parseConfig(redis, envOf(map[string]string{"KEYPOOL_SECRETS_KEY": text}), io.Discard)
		require.NoError(t, err)
		assert.Equal(t, key, cfg.SecretsKey)
		cfg, err = parseConfig(redis, envOf(nil), io.Discard)
		require.NoError(t, err)
		assert.Nil(t, cfg.SecretsKey)
	})
	t.Run("a bad secrets key is named by its flag, never shown", func(t *testing.T) {
		short := base64.StdEncoding.EncodeToString([]byte("sixteen bytes!!!"))
		file := filepath.Join(t.TempDir(), "key")
		require.NoError(t, os.WriteFile(file, []byte(short), 0o600))
		redis := []string{"-store", "redis://localhost:6379/0"}
		for _, c := range []struct {
			args []string
			env  map[string]string
			flag string
		}{
			{append(redis, "-secrets-key", short), nil, "-secrets-key"},
			{redis, map[string]string{"KEYPOOL_SECRETS_KEY": "not base64 at all " + short}, "-secrets-key"},
			{append(redis, "-secrets-key-file", file), nil, "-secrets-key-file"},
			{append(redis, "-secrets-key-file", filepath.Join(t.TempDir(), "none")), nil, "-secrets-key-file"},
			{append(redis, "-secrets-key-file", file, "-secrets-key", short), nil, "-secrets-key-file"},
			{[]string{"-secrets-key", short}, nil, "-secrets-key"}, // the memory store
		} {
			_, err := parseConfig(c.args, envOf(c.env), io.Discard)
			require.Error(t, err, "%v %v", c.args, c.env)
			assert.True(t, strings.HasPrefix(err.Error(), c.flag+":"), err.Error())
			assert.NotContains(t, err.Error(), short)
			assert.NotContains(t, err.Error(), "\n", "one line")
		}
	})
	t.Run("flags alone", func(t *testing.T) {
		cfg, err := parseConfig([]string{"-lease-ttl", "300ms"}, envOf(nil), io.Discard)
		require.NoError(t, err)
		assert.Equal(t, 300*time.Millisecond, cfg.LeaseTTL, "a default lease shorter than a request's minimum is allowed")
	})
}

func TestConfigBadValues(t *testing.T) {
	for _, tc := range []struct {
		name string
		args []string
		env  map[string]string
		flag string
	}{
		{"unparsable duration", []string{"-lease-ttl", "soon"}, nil, "-lease-ttl"},
		{"unparsable duration from env", nil, map[string]string{"KEYPOOL_KEEPALIVE_TTL": "5 minutes"}, "-keepalive-ttl"},
		{"zero lease ttl", []string{"-lease-ttl", "0s"}, nil, "-lease-ttl"},
		{"negative keep-alive ttl", []string{"-keepalive-ttl", "-1m"}, nil, "-keepalive-ttl"},
		{"non-positive max lease ttl", []string{"-max-lease-ttl", "0"}, nil, "-max-lease-ttl"},
		{"lease ttl over max", []string{"-lease-ttl", "2h"}, nil, "-lease-ttl"},
		{"lease ttl over max from env", nil, map[string]string{"KEYPOOL_MAX_LEASE_TTL": "30s"}, "-lease-ttl"},
		{"max generate zero", []string{"-max-generate", "0"}, nil, "-max-generate"},
		{"max generate not a number", nil, map[string]string{"KEYPOOL_MAX_GENERATE": "lots"}, "-max-generate"},
		{"max waiters zero", []string{"-max-waiters", "0"}, nil, "-max-waiters"},
		{"max pools zero", []string{"-max-pools", "0"}, nil, "-max-pools"},
		{"negative min replicas", []string{"-redis-min-replicas", "-1"}, nil, "-redis-min-replicas"},
		{"min replicas on memory", nil, map[string]string{"KEYPOOL_REDIS_MIN_REPLICAS": "1"}, "-redis-min-replicas"},
		{"max waiters negative from env", nil, map[string]string{"KEYPOOL_MAX_WAITERS": "-1"}, "-max-waiters"},
		{"max waiters not a number", nil, map[string]string{"KEYPOOL_MAX_WAITERS": "many"}, "-max-waiters"},
		{"store scheme", []string{"-store", "postgres://db"}, nil, "-store"},
		{"store without host", []string{"-store", "redis://"}, nil, "-store"},
		{"log format", []string{"-log-format", "xml"}, nil, "-log-format"},
		{"log format from env", nil, map[string]string{"KEYPOOL_LOG_FORMAT": "yaml"}, "-log-format"},
		{"empty addr", []string{"-addr", ""}, nil, "-addr"},
		{"negative heap floor", []string{"-gc-heap-floor", "-1"}, nil, "-gc-heap-floor"},
		{"unknown flag", []string{"-verbose"}, nil, "-verbose"},
		{"allowed host with a scheme", []string{"-allowed-hosts", "http://keypool.lan"}, nil, "-allowed-hosts"},
		{"allowed host with a port, from env", nil, map[string]string{"KEYPOOL_ALLOWED_HOSTS": "keypool.lan:8080"}, "-allowed-hosts"},
		{"zero read timeout", []string{"-read-timeout", "0s"}, nil, "-read-timeout"},
		{"read timeout not a duration", nil, map[string]string{"KEYPOOL_READ_TIMEOUT": "10"}, "-read-timeout"},
		{"negative idle timeout", []string{"-idle-timeout", "-1s"}, nil, "-idle-timeout"},
		{"negative quarantine-after", []string{"-quarantine-after", "-1"}, nil, "-quarantine-after"},
		{"quarantine-after from env", nil, map[string]string{"KEYPOOL_QUARANTINE_AFTER": "often"}, "-quarantine-after"},
		{"negative expired-lease cool-down", []string{"-expired-lease-cooldown", "-1s"}, nil, "-expired-lease-cooldown"},
		{"max cool-down under a second", nil, map[string]string{"KEYPOOL_MAX_COOLDOWN": "500ms"}, "-max-cooldown"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := parseConfig(tc.args, envOf(tc.env), io.Discard)
			require.Error(t, err)
			assert.Contains(t, err.Error(), tc.flag)
			assert.NotContains(t, err.Error(), "\n", "one line")
		})
	}
}

func mustHosts(t *testing.T, list string) middleware.Hosts {
	t.Helper()
	h, err := middleware.ParseHosts(list)
	require.NoError(t, err)
	return h
}

func TestConfigHelp(t *testing.T) {
	var usage strings.Builder
	_, err := parseConfig([]string{"-h"}, envOf(nil), &usage)
	assert.True(t, errors.Is(err, flag.ErrHelp))
	assert.Contains(t, usage.String(), "KEYPOOL_LEASE_TTL")
	assert.Contains(t, usage.String(), "-max-waiters int\n")
	assert.Contains(t, usage.String(), "KEYPOOL_MAX_WAITERS")
}

// TestVersion: keypool -version prints one line (the module's version, the VCS revision
// and time when the build recorded them, the Go version) and exits 0, serving nothing and
// whatever else the flags and the environment say.
func TestVersion(t *testing.T) {
	bad := envOf(map[string]string{"KEYPOOL_LEASE_TTL": "soon", "KEYPOOL_STORE": "postgres://db"})
	for _, args := range [][]string{{"-version"}, {"--version"}, {"-addr", "", "-version"}} {
		var stdout, stderr strings.Builder
		err := run(context.Background(), append([]string{"keypool"}, args...), bad, &stdout, &stderr, func(net.Addr) {
			t.Errorf("%v: the server started", args)
		})
		require.NoError(t, err, "%v", args)
		assert.Empty(t, stderr.String())
		assert.Equal(t, "keypool "+buildinfo.Read().String()+"\n", stdout.String(), "%v", args)
		assert.Regexp(t, `^keypool (\(devel\)|v\S+)( \(revision [0-9a-f]+(-modified)?(, \S+)?\))? go\S+\n$`, stdout.String())
		assert.Contains(t, stdout.String(), " "+runtime.Version()+"\n")
	}
}

// TestRedisMinReplicasConfig: -redis-min-replicas (or KEYPOOL_REDIS_MIN_REPLICAS)
// with a Redis store.
func TestRedisMinReplicasConfig(t *testing.T) {
	cfg, err := parseConfig([]string{"-store", "redis://127.0.0.1:6379/0", "-redis-min-replicas", "2"}, func(string) string { return "" }, io.Discard)
	require.NoError(t, err)
	assert.Equal(t, 2, cfg.RedisMinReplicas)
	env := map[string]string{"KEYPOOL_REDIS_MIN_REPLICAS": "1", "KEYPOOL_STORE": "redis://127.0.0.1:6379/0"}
	cfg, err = parseConfig(nil, func(k string) string { return env[k] }, io.Discard)
	require.NoError(t, err)
	assert.Equal(t, 1, cfg.RedisMinReplicas)
}
