package main

import (
	"encoding/base64"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net/url"
	"os"
	"strings"
	"time"

	"github.com/keypool/keypool/auth"
	"github.com/keypool/keypool/keystore"
	"github.com/keypool/keypool/keystore/redisstore"
	"github.com/keypool/keypool/middleware"
	"github.com/keypool/keypool/redact"
)

// config is the server's configuration, from flags, then environment variables, then
// defaults (a flag beats its variable, which beats the default).
type config struct {
	Addr         string
	LeaseTTL     time.Duration
	KeepAliveTTL time.Duration
	MaxLeaseTTL  time.Duration
	MaxGenerate  int
	MaxWaiters   int
	MaxPools     int
	// QuarantineAfter, ExpiredLeaseCooldown and MaxCooldown: keys held back (CONTRACT
	// "Cool-down and quarantine").
	QuarantineAfter      int
	ExpiredLeaseCooldown time.Duration
	MaxCooldown          time.Duration
	Store                string
	// RedisMinReplicas (-redis-min-replicas): Redis replicas that must confirm each
	// request (WAIT) before it is answered.
	RedisMinReplicas int
	// SecretsKeyFile (-secrets-key-file) and SecretsKeyText (-secrets-key) give the key
	// that seals imported secrets in Redis; SecretsKey is that key, read and checked by
	// parseConfig.
	SecretsKeyFile string
	SecretsKeyText secretsKeyText
	SecretsKey     []byte
	LogFormat      string
	CORSOrigins    middleware.Origins
	LogLevel       slog.Level
	GCHeapFloor    int // MiB
	AllowedHosts   middleware.Hosts
	ReadTimeout    time.Duration
	IdleTimeout    time.Duration
	// AuthFile (-auth-file): the tokens of access control; "" leaves it off.
	AuthFile string
	// guard is AuthFile read, set by run; nil with access control off.
	guard *auth.Guard
	// ShowVersion (-version): print the version and exit; nothing else is checked.
	ShowVersion bool
}

// DefaultGCHeapFloor is the default -gc-heap-floor, in MiB: a small pool's heap grows to
// it between collections, instead of collecting hundreds of times a second.
const DefaultGCHeapFloor = 64

// Defaults of the connection bounds.
const (
	// defaultReadTimeout bounds how long a client may take to send a request's headers,
	// and then its body: 1 MiB in 10 s is 100 KB/s.
	defaultReadTimeout = 10 * time.Second
	// defaultIdleTimeout bounds how long a keep-alive connection may wait for its next request.
	defaultIdleTimeout = 2 * time.Minute
)

// envVars names the environment variable of each flag.
var envVars = map[string]string{
	"addr":                   "KEYPOOL_ADDR",
	"lease-ttl":              "KEYPOOL_LEASE_TTL",
	"keepalive-ttl":          "KEYPOOL_KEEPALIVE_TTL",
	"max-lease-ttl":          "KEYPOOL_MAX_LEASE_TTL",
	"max-generate":           "KEYPOOL_MAX_GENERATE",
	"max-waiters":            "KEYPOOL_MAX_WAITERS",
	"max-pools":              "KEYPOOL_MAX_POOLS",
	"quarantine-after":       "KEYPOOL_QUARANTINE_AFTER",
	"expired-lease-cooldown": "KEYPOOL_EXPIRED_LEASE_COOLDOWN",
	"max-cooldown":           "KEYPOOL_MAX_COOLDOWN",
	"store":                  "KEYPOOL_STORE",
	"redis-min-replicas":     "KEYPOOL_REDIS_MIN_REPLICAS",
	"secrets-key-file":       "KEYPOOL_SECRETS_KEY_FILE",
	"secrets-key":            "KEYPOOL_SECRETS_KEY",
	"log-format":             "KEYPOOL_LOG_FORMAT",
	"cors-origins":           "KEYPOOL_CORS_ORIGINS",
	"log-level":              "KEYPOOL_LOG_LEVEL",
	"gc-heap-floor":          "KEYPOOL_GC_HEAP_FLOOR",
	"allowed-hosts":          "KEYPOOL_ALLOWED_HOSTS",
	"read-timeout":           "KEYPOOL_READ_TIMEOUT",
	"idle-timeout":           "KEYPOOL_IDLE_TIMEOUT",
	"auth-file":              "KEYPOOL_AUTH_FILE",
}

// parseConfig reads args (without the program name) and the environment through
// getenv. Any bad value is a one-line error naming its flag. -h and -help return
// flag.ErrHelp after printing the usage to stderr.
func parseConfig(args []string, getenv func(string) string, stderr io.Writer) (config, error) {
	cfg := config{AllowedHosts: middleware.DefaultHosts()}
	fs := flag.NewFlagSet("keypool", flag.ContinueOnError)
	fs.SetOutput(io.Discard) // errors are returned as one line; usage only on -help
	fs.StringVar(&cfg.Addr, "addr", ":8080", "address to listen on")
	fs.DurationVar(&cfg.LeaseTTL, "lease-ttl", keystore.DefaultLeaseTTL, "default lease length")
	fs.DurationVar(&cfg.KeepAliveTTL, "keepalive-ttl", keystore.DefaultKeepAliveTTL, "how long a key lives without keepAlive")
	fs.DurationVar(&cfg.MaxLeaseTTL, "max-lease-ttl", keystore.DefaultMaxLeaseTTL, "longest lease, renewals included")
	fs.IntVar(&cfg.MaxGenerate, "max-generate", keystore.DefaultMaxGenerate, "most keys one generateKeys may create")
	fs.IntVar(&cfg.MaxWaiters, "max-waiters", keystore.DefaultMaxWaiters, "most acquires that may wait for a key at once; one more that would wait is refused at once with TOO_MANY_WAITERS (REST 429). A waiter holds a connection, its request and a goroutine or two, about 40 KB, for up to 30s: 1000 cost some 40 MB and 1000 file descriptors")
	fs.IntVar(&cfg.MaxPools, "max-pools", keystore.DefaultMaxPools, "most pools that may be made; a generateKeys into one more is refused (BAD_USER_INPUT). An empty pool costs only its counters and its retained events")
	fs.IntVar(&cfg.QuarantineAfter, "quarantine-after", 0, "consecutive failures (unblocks with failed, leases that run out) that send a key to QUARANTINED until restoreKey; 0 never does")
	fs.DurationVar(&cfg.ExpiredLeaseCooldown, "expired-lease-cooldown", 0, "how long a key whose lease ran out cools (COOLING) before it is handed out again, since its last holder may still be using it; 0s frees it at once")
	fs.DurationVar(&cfg.MaxCooldown, "max-cooldown", keystore.DefaultMaxCooldown, "longest cool-down an unblockKey may ask for")
	fs.StringVar(&cfg.Store, "store", "memory", "where keys live: memory, or redis://host:port/db")
	fs.IntVar(&cfg.RedisMinReplicas, "redis-min-replicas", 0, "Redis replicas that must confirm each request (WAIT) before it is answered, so that a failover to one loses no answered lease; one not confirmed in time is UNAVAILABLE (may or may not have been applied)")
	fs.StringVar(&cfg.SecretsKeyFile, "secrets-key-file", "", "file holding the key that seals imported secrets in Redis: 32 random bytes in base64 (openssl rand -base64 32); every replica needs the same one, and it never goes to Redis")
	fs.Var(&cfg.SecretsKeyText, "secrets-key", "the key that seals imported secrets in Redis, in base64, for tests: prefer -secrets-key-file")
	fs.StringVar(&cfg.LogFormat, "log-format", "text", "log format: text or json")
	fs.TextVar(&cfg.LogLevel, "log-level", slog.LevelInfo, "least severe log level: debug (adds a line per HTTP request), info, warn or error")
	fs.IntVar(&cfg.GCHeapFloor, "gc-heap-floor", DefaultGCHeapFloor, "MiB the heap may grow by between garbage collections, or an eighth of the live heap when more; 0 (or GOGC set) for Go's default pacing")
	fs.Var(&cfg.CORSOrigins, "cors-origins", "comma-separated origins allowed to call from a browser (CORS and websocket), or *; same-origin always works")
	fs.Var(&cfg.AllowedHosts, "allowed-hosts", "comma-separated host names browsers may reach the server by (*.example.com for subdomains, * for any); loopback names and IP addresses always work")
	fs.DurationVar(&cfg.ReadTimeout, "read-timeout", defaultReadTimeout, "longest a client may take to send a request's headers, and again its body (streams are not cut)")
	fs.DurationVar(&cfg.IdleTimeout, "idle-timeout", defaultIdleTimeout, "longest a keep-alive connection may wait for its next request")
	fs.StringVar(&cfg.AuthFile, "auth-file", "", "file of tokens, a line NAME ROLE SHA256HEX [POOLS] each (keypoolctl token makes them): every API route then needs Authorization: Bearer TOKEN; SIGHUP rereads it. Empty: no access control")
	fs.BoolVar(&cfg.ShowVersion, "version", false, "print the version (module version, VCS revision and time, Go version) and exit")
	fs.VisitAll(func(f *flag.Flag) {
		if env, ok := envVars[f.Name]; ok {
			f.Usage += " (env " + env + ")"
		}
	})

	// Environment first, so that flags parsed next override it.
	var envErr error
	fs.VisitAll(func(f *flag.Flag) {
		env, ok := envVars[f.Name]
		if !ok || envErr != nil {
			return
		}
		if v := getenv(env); v != "" {
			if err := fs.Set(f.Name, v); err != nil {
				envErr = fmt.Errorf("-%s: bad value %q from %s: %v", f.Name, v, env, unwrapFlagError(err))
			}
		}
	})
	fs.Usage = func() {
		fmt.Fprintln(fs.Output(), "Usage: keypool [flags]")
		fs.PrintDefaults()
	}
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			fs.SetOutput(stderr)
			fs.Usage()
			return config{}, err
		}
		return config{}, errors.New(firstLine(err.Error()))
	}
	if cfg.ShowVersion { // whatever else the flags and the environment say
		return config{ShowVersion: true}, nil
	}
	if envErr != nil {
		return config{}, envErr
	}
	if fs.NArg() > 0 {
		return config{}, fmt.Errorf("unexpected argument %q", fs.Arg(0))
	}
	if err := cfg.validate(); err != nil {
		return config{}, err
	}
	var err error
	cfg.SecretsKey, err = cfg.loadSecretsKey()
	return cfg, err
}

// secretsKeyText holds -secrets-key as given. Its Set never fails, so that no error
// (the flag package's name a bad value) shows the key; loadSecretsKey checks it.
type secretsKeyText struct{ text string }

func (k *secretsKeyText) String() string {
	if k == nil || k.text == "" {
		return ""
	}
	return "(set)"
}

func (k *secretsKeyText) Set(v string) error {
	k.text = v
	return nil
}

// loadSecretsKey reads the secrets key from -secrets-key-file or -secrets-key (one of
// them, with a Redis store): 32 bytes in base64. nil when neither is given. Its errors
// name the flag, never the key.
func (c config) loadSecretsKey() ([]byte, error) {
	text, flagName := c.SecretsKeyText.text, "-secrets-key"
	switch {
	case c.SecretsKeyFile != "" && text != "":
		return nil, errors.New("-secrets-key-file: give the secrets key once, not also with -secrets-key")
	case c.SecretsKeyFile != "":
		b, err := os.ReadFile(c.SecretsKeyFile)
		if err != nil {
			return nil, fmt.Errorf("-secrets-key-file: %v", err)
		}
		text, flagName = string(b), "-secrets-key-file"
	case text == "":
		return nil, nil
	}
	if c.Store == "memory" {
		return nil, fmt.Errorf("%s: needs a Redis -store (the memory store keeps imported secrets in its own memory only)", flagName)
	}
	key, err := base64.StdEncoding.DecodeString(strings.TrimSpace(text))
	if err != nil || len(key) != redisstore.SecretsKeySize {
		return nil, fmt.Errorf("%s: must be %d bytes in base64 (openssl rand -base64 %d)", flagName, redisstore.SecretsKeySize, redisstore.SecretsKeySize)
	}
	return key, nil
}

// validate checks values that parse but make no sense.
func (c config) validate() error {
	switch {
	case c.Addr == "":
		return errors.New("-addr: must not be empty")
	case c.LeaseTTL <= 0:
		return fmt.Errorf("-lease-ttl: must be positive, got %v", c.LeaseTTL)
	case c.KeepAliveTTL <= 0:
		return fmt.Errorf("-keepalive-ttl: must be positive, got %v", c.KeepAliveTTL)
	case c.MaxLeaseTTL <= 0:
		return fmt.Errorf("-max-lease-ttl: must be positive, got %v", c.MaxLeaseTTL)
	case c.LeaseTTL > c.MaxLeaseTTL:
		return fmt.Errorf("-lease-ttl: %v is longer than -max-lease-ttl %v", c.LeaseTTL, c.MaxLeaseTTL)
	case c.MaxGenerate < 1:
		return fmt.Errorf("-max-generate: must be at least 1, got %d", c.MaxGenerate)
	case c.MaxWaiters < 1:
		return fmt.Errorf("-max-waiters: must be at least 1, got %d", c.MaxWaiters)
	case c.MaxPools < 1:
		return fmt.Errorf("-max-pools: must be at least 1, got %d", c.MaxPools)
	case c.QuarantineAfter < 0:
		return fmt.Errorf("-quarantine-after: must be at least 0, got %d", c.QuarantineAfter)
	case c.ExpiredLeaseCooldown < 0:
		return fmt.Errorf("-expired-lease-cooldown: must be at least 0s, got %v", c.ExpiredLeaseCooldown)
	case c.MaxCooldown < keystore.MinCooldown:
		return fmt.Errorf("-max-cooldown: must be at least %v, got %v", keystore.MinCooldown, c.MaxCooldown)
	case c.RedisMinReplicas < 0:
		return fmt.Errorf("-redis-min-replicas: must be at least 0, got %d", c.RedisMinReplicas)
	case c.RedisMinReplicas > 0 && c.Store == "memory":
		return errors.New("-redis-min-replicas: needs a Redis -store")
	case c.GCHeapFloor < 0:
		return fmt.Errorf("-gc-heap-floor: must be at least 0, got %d", c.GCHeapFloor)
	case c.ReadTimeout <= 0:
		return fmt.Errorf("-read-timeout: must be positive, got %v", c.ReadTimeout)
	case c.IdleTimeout <= 0:
		return fmt.Errorf("-idle-timeout: must be positive, got %v", c.IdleTimeout)
	case c.LogFormat != "text" && c.LogFormat != "json":
		return fmt.Errorf("-log-format: must be text or json, got %q", c.LogFormat)
	}
	if c.Store != "memory" {
		u, err := url.Parse(c.Store)
		redisURL := (u != nil && (u.Scheme == "redis" || u.Scheme == "rediss") && u.Host != "") ||
			(u != nil && u.Scheme == "unix" && u.Path != "")
		if err != nil || !redisURL {
			return fmt.Errorf("-store: must be memory, redis://host:port/db or unix:///path/to/socket?db=N, got %q", redact.URL(c.Store))
		}
	}
	return nil
}

// storeOptions are the keystore options the configuration sets.
// storeKind names the kind of store -store chooses, as /readyz shows it.
func (c config) storeKind() string {
	if c.Store == "memory" {
		return "memory"
	}
	return "redis"
}

func (c config) storeOptions() keystore.Options {
	return keystore.Options{
		LeaseTTL:     c.LeaseTTL,
		KeepAliveTTL: c.KeepAliveTTL,
		MaxLeaseTTL:  c.MaxLeaseTTL,
		MaxGenerate:  c.MaxGenerate,
		MaxWaiters:   c.MaxWaiters,
		MaxPools:     c.MaxPools,

		QuarantineAfter:      c.QuarantineAfter,
		ExpiredLeaseCooldown: c.ExpiredLeaseCooldown,
		MaxCooldown:          c.MaxCooldown,
	}
}

// unwrapFlagError drops the flag package's wrapping ("parse error") for a shorter line.
func unwrapFlagError(err error) error {
	if u := errors.Unwrap(err); u != nil {
		return u
	}
	return err
}

func firstLine(s string) string {
	line, _, _ := strings.Cut(s, "\n")
	return line
}
