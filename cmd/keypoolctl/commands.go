package main

import (
	"bufio"
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/keypool/keypool/auth/tokenfile"
	"github.com/keypool/keypool/client"
)

// simpleCommand is a command that sends one request and prints its answer.
type simpleCommand struct {
	nargs int // how many arguments it takes
	// check, if set, vets the flags and arguments once parsed; a non-empty answer
	// is a usage error.
	check func(args []string) string
	// extra, if set, is added to -timeout (an acquire's -wait).
	extra func() time.Duration
	do    func(ctx context.Context, c *client.Client, args []string) (any, error)
}

func (s simpleCommand) run(e *env, g *globals, fs *flag.FlagSet, args []string) int {
	args, code, ok := parseInterspersed(e, fs, args)
	if !ok {
		return code
	}
	if len(args) != s.nargs {
		return usageError(e, fs, "want %d argument(s), got %d", s.nargs, len(args))
	}
	if s.check != nil {
		if msg := s.check(args); msg != "" {
			return usageError(e, fs, "%s", msg)
		}
	}
	c, code, ok := connect(e, g)
	if !ok {
		return code
	}
	defer c.Close()
	timeout := g.timeout
	if s.extra != nil {
		timeout += s.extra()
	}
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	out, err := s.do(ctx, c, args)
	if err != nil {
		return fail(e, g, err)
	}
	return printJSON(e, out)
}

// given reports whether the flag named name was set on the command line.
func given(fs *flag.FlagSet, name string) bool {
	set := false
	fs.Visit(func(f *flag.Flag) { set = set || f.Name == name })
	return set
}

// leaseFlags are the flags of acquire and lease. A flag not given is not sent, so
// that the server applies its defaults.
type leaseFlags struct {
	pool, holder string
	ttl, wait    time.Duration
}

func (f *leaseFlags) register(fs *flag.FlagSet) {
	poolFlag(fs, &f.pool, "the pool to take a key from")
	fs.StringVar(&f.holder, "holder", "", "who takes the lease (free text, at most 128 bytes), shown wherever the lease is shown")
	fs.DurationVar(&f.ttl, "ttl", 0, "the lease's length, 1s up to the server's -max-lease-ttl (default: the server's -lease-ttl)")
	fs.DurationVar(&f.wait, "wait", 0, "how long to wait for a key when none is free, at most 30s")
}

// poolFlag registers -pool, whose empty default is the server's default pool (or
// every pool, where the command says so).
func poolFlag(fs *flag.FlagSet, pool *string, usage string) {
	fs.StringVar(pool, "pool", "", usage+" (default: the default pool)")
}

// check refuses durations that cannot mean what was asked: a lease of no time, or
// a wait of less than none.
func (f *leaseFlags) check(fs *flag.FlagSet) string {
	switch {
	case given(fs, "ttl") && f.ttl <= 0:
		return "-ttl must be positive"
	case f.wait < 0:
		return "-wait must not be negative"
	}
	return ""
}

func (f *leaseFlags) options() client.AcquireOptions {
	return client.AcquireOptions{Pool: f.pool, Holder: f.holder, TTL: f.ttl, Wait: f.wait}
}

func runGenerate(e *env, g *globals, fs *flag.FlagSet, args []string) int {
	var n int
	var pool string
	poolFlag(fs, &pool, "the pool to make the keys in, made if need be")
	return simpleCommand{
		nargs: 1,
		check: func(args []string) string {
			var err error
			if n, err = strconv.Atoi(args[0]); err != nil {
				return "N must be a whole number, not " + strconv.Quote(args[0])
			}
			return ""
		},
		do: func(ctx context.Context, c *client.Client, _ []string) (any, error) {
			return c.GenerateKeysIn(ctx, pool, n)
		},
	}.run(e, g, fs, args)
}

func runAcquire(e *env, g *globals, fs *flag.FlagSet, args []string) int {
	var f leaseFlags
	f.register(fs)
	return simpleCommand{
		check: func([]string) string { return f.check(fs) },
		extra: func() time.Duration { return f.wait },
		do: func(ctx context.Context, c *client.Client, _ []string) (any, error) {
			return c.AcquireKey(ctx, f.options())
		},
	}.run(e, g, fs, args)
}

func runUnblock(e *env, g *globals, fs *flag.FlagSet, args []string) int {
	token := fs.String("token", "", "end the key's lease only if it is this one (LEASE_MISMATCH otherwise)")
	cooldown := fs.Duration("cooldown", 0, "send the key to COOLING for this long (1s up to the server's -max-cooldown) instead of AVAILABLE")
	failed := fs.Bool("failed", false, "record a failure of the key (at the server's -quarantine-after in a row it is QUARANTINED)")
	return simpleCommand{
		nargs: 1,
		check: func([]string) string {
			if given(fs, "cooldown") && *cooldown <= 0 {
				return "-cooldown must be positive"
			}
			return ""
		},
		do: func(ctx context.Context, c *client.Client, args []string) (any, error) {
			return c.UnblockKeyWith(ctx, args[0], *token, client.UnblockOptions{Cooldown: *cooldown, Failed: *failed})
		},
	}.run(e, g, fs, args)
}

func runRestore(e *env, g *globals, fs *flag.FlagSet, args []string) int {
	return simpleCommand{
		nargs: 1,
		do: func(ctx context.Context, c *client.Client, args []string) (any, error) {
			return c.RestoreKey(ctx, args[0])
		},
	}.run(e, g, fs, args)
}

// runImport imports the secrets that standard input holds, one a line (blank lines
// skipped), never from the arguments, which other users of the machine can read.
func runImport(e *env, g *globals, fs *flag.FlagSet, args []string) int {
	var opts client.ImportOptions
	poolFlag(fs, &opts.Pool, "the pool to put the keys in, made if need be")
	fs.DurationVar(&opts.KeepAliveTTL, "keepalive-ttl", 0, "subject the keys to the keep-alive rule with this TTL (default: kept until deleted)")
	var secrets []client.KeyInput
	return simpleCommand{
		check: func([]string) string {
			if given(fs, "keepalive-ttl") && opts.KeepAliveTTL <= 0 {
				return "-keepalive-ttl must be positive"
			}
			sc := bufio.NewScanner(e.stdin)
			sc.Buffer(make([]byte, 0, 8192), 1<<20)
			for sc.Scan() {
				if line := strings.TrimRight(sc.Text(), "\r"); strings.TrimSpace(line) != "" {
					secrets = append(secrets, client.KeyInput{Secret: line})
				}
			}
			switch {
			case sc.Err() != nil:
				return "reading standard input: " + sc.Err().Error()
			case len(secrets) == 0:
				return "no secrets on standard input (one a line)"
			}
			return ""
		},
		do: func(ctx context.Context, c *client.Client, _ []string) (any, error) {
			return c.ImportKeys(ctx, secrets, opts)
		},
	}.run(e, g, fs, args)
}

func runRenew(e *env, g *globals, fs *flag.FlagSet, args []string) int {
	token := fs.String("token", "", "the token of the lease to renew (required)")
	ttl := fs.Duration("ttl", 0, "the lease's new length from now (default: the server's -lease-ttl)")
	return simpleCommand{
		nargs: 1,
		check: func([]string) string {
			switch {
			case *token == "":
				return "-token is required"
			case given(fs, "ttl") && *ttl <= 0:
				return "-ttl must be positive"
			}
			return ""
		},
		do: func(ctx context.Context, c *client.Client, args []string) (any, error) {
			return c.RenewLease(ctx, args[0], *token, *ttl)
		},
	}.run(e, g, fs, args)
}

func runKeepAlive(e *env, g *globals, fs *flag.FlagSet, args []string) int {
	return simpleCommand{
		nargs: 1,
		do: func(ctx context.Context, c *client.Client, args []string) (any, error) {
			return c.KeepAlive(ctx, args[0])
		},
	}.run(e, g, fs, args)
}

func runDelete(e *env, g *globals, fs *flag.FlagSet, args []string) int {
	return simpleCommand{
		nargs: 1,
		do: func(ctx context.Context, c *client.Client, args []string) (any, error) {
			if err := c.DeleteKey(ctx, args[0]); err != nil {
				return nil, err
			}
			return struct {
				ID string `json:"id"`
			}{args[0]}, nil
		},
	}.run(e, g, fs, args)
}

func runGet(e *env, g *globals, fs *flag.FlagSet, args []string) int {
	return simpleCommand{
		nargs: 1,
		do: func(ctx context.Context, c *client.Client, args []string) (any, error) {
			return c.Key(ctx, args[0])
		},
	}.run(e, g, fs, args)
}

func runStats(e *env, g *globals, fs *flag.FlagSet, args []string) int {
	pool := fs.String("pool", "", "count this pool's keys only (default: every pool together)")
	return simpleCommand{
		do: func(ctx context.Context, c *client.Client, _ []string) (any, error) {
			return c.PoolStats(ctx, *pool)
		},
	}.run(e, g, fs, args)
}

func runPools(e *env, g *globals, fs *flag.FlagSet, args []string) int {
	return simpleCommand{
		do: func(ctx context.Context, c *client.Client, _ []string) (any, error) {
			return c.Pools(ctx)
		},
	}.run(e, g, fs, args)
}

// runKeys prints every key that the flags select, one JSON object a line, as it
// reads them a page at a time.
func runKeys(e *env, g *globals, fs *flag.FlagSet, args []string) int {
	pool := fs.String("pool", "", "only this pool's keys (default: every pool, by name)")
	status := fs.String("status", "", "only keys in this state: AVAILABLE, BLOCKED, COOLING or QUARANTINED (default: every key)")
	args, code, ok := parseInterspersed(e, fs, args)
	if !ok {
		return code
	}
	if len(args) != 0 {
		return usageError(e, fs, "want no arguments, got %d", len(args))
	}
	c, code, ok := connect(e, g)
	if !ok {
		return code
	}
	defer c.Close()
	enc := json.NewEncoder(e.stdout)
	enc.SetEscapeHTML(false)
	// The server knows the states: a name it does not know is its error, in one line.
	opts := client.ListOptions{Pool: *pool, Status: client.Status(strings.ToUpper(*status)), PageSize: 1000}
	// -timeout bounds each page's request, not the walk: the clock restarts with
	// every key a page brings.
	ctx, cancel := context.WithCancelCause(context.Background())
	defer cancel(nil)
	idle := time.AfterFunc(g.timeout, func() { cancel(fmt.Errorf("no answer within -timeout %v", g.timeout)) })
	defer idle.Stop()
	for key, err := range c.Keys(ctx, opts) {
		idle.Reset(g.timeout)
		if err != nil {
			if cause := context.Cause(ctx); cause != nil {
				err = cause
			}
			return fail(e, g, err)
		}
		if err := enc.Encode(key); err != nil {
			fmt.Fprintf(e.stderr, "keypoolctl: keys: writing: %v\n", err)
			return exitError
		}
	}
	return exitOK
}

func runToken(e *env, _ *globals, fs *flag.FlagSet, args []string) int {
	args, code, ok := parseInterspersed(e, fs, args)
	if !ok {
		return code
	}
	if len(args) != 2 && len(args) != 3 {
		return usageError(e, fs, "token needs NAME and ROLE, and may take POOLS")
	}
	role, ok := tokenfile.ParseRole(args[1])
	if !ok {
		return usageError(e, fs, "the role must be admin, client or viewer, not %q", args[1])
	}
	pools := ""
	if len(args) == 3 {
		pools = args[2]
	}
	token, line, err := tokenfile.New(args[0], role, pools)
	if err != nil {
		return usageError(e, fs, "%v", err)
	}
	fmt.Fprintln(e.stdout, token)
	fmt.Fprintln(e.stdout, line)
	return exitOK
}
