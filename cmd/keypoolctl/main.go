// Command keypoolctl is a command-line client of a keypool server, in the style of
// etcdctl: one subcommand per operation, each printing JSON; events, which follows
// the pool's events as JSON lines; and lease, which runs a command while holding a
// key for it.
//
//	keypoolctl [-server URL] [-timeout D] COMMAND [flags] [args]
//
// Run keypoolctl -h for the commands, and keypoolctl COMMAND -h for one of them.
package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"sort"
	"strings"
	"time"

	"github.com/keypool/keypool/client"
	"github.com/keypool/keypool/internal/buildinfo"
)

// Exit statuses of keypoolctl itself; lease otherwise exits with its command's.
const (
	exitOK    = 0
	exitError = 1 // the server refused, or could not be reached
	exitUsage = 2 // bad flags or arguments
	// exitLeaseLost: the lease was lost while the command ran, and the command was
	// stopped.
	exitLeaseLost = 3
)

// defaultTimeout bounds each request (an acquire's -wait is added to it).
const defaultTimeout = 30 * time.Second

func main() {
	os.Exit(run(os.Args[1:], os.Stdin, os.Stdout, os.Stderr, os.Getenv))
}

// env is what run reads of the environment.
type env struct {
	stdin          io.Reader
	stdout, stderr io.Writer
	getenv         func(string) string
}

// globals are the flags every command takes, before or after its name.
type globals struct {
	server    string
	timeout   time.Duration
	tokenFile string
}

func (g *globals) register(fs *flag.FlagSet) {
	fs.StringVar(&g.server, "server", g.server, "the keypool server's base URL (env KEYPOOL_SERVER)")
	fs.StringVar(&g.tokenFile, "token-file", g.tokenFile, "a file holding the token to send, for a server with access control on (else env KEYPOOL_TOKEN)")
	fs.DurationVar(&g.timeout, "timeout", g.timeout, "how long one request may take (an acquire's -wait is added)")
}

// command is one subcommand.
type command struct {
	args    string // the synopsis after the name
	summary string
	detail  string // more for -h, if any
	// run parses its own flags from fs (already holding the global ones) and runs.
	run func(e *env, g *globals, fs *flag.FlagSet, args []string) int
}

var commands = map[string]command{
	"generate":  {"N [-pool P]", "create N new keys; prints them", "", runGenerate},
	"acquire":   {"[-pool P] [-holder H] [-ttl D] [-wait D]", "lease a free key (nothing renews it); prints the lease", "", runAcquire},
	"unblock":   {"ID [-token T] [-cooldown D] [-failed]", "end a key's lease (only lease T's, if given), to COOLING with -cooldown; prints the key", "", runUnblock},
	"restore":   {"ID", "bring a COOLING or QUARANTINED key back to AVAILABLE; prints the key", "", runRestore},
	"import":    {"[-pool P] [-keepalive-ttl D] < SECRETS", "import keys of your own, one secret a line from standard input; prints the keys (without secrets)", "", runImport},
	"renew":     {"ID -token T [-ttl D]", "extend lease T of a key; prints the lease", "", runRenew},
	"keepalive": {"ID", "move a key's keep-alive deadline; prints the key", "", runKeepAlive},
	"delete":    {"ID", "delete a key; prints its id", "", runDelete},
	"get":       {"ID", "print a key", "", runGet},
	"stats":     {"[-pool P]", "print the counts of a pool, or of every pool", "", runStats},
	"pools":     {"", "print every pool with its counts", "", runPools},
	"keys":      {"[-pool P] [-status S]", "print keys, one JSON object a line", "", runKeys},
	"events":    {"[-pool P] [-types T,...] [-after N]", "print a pool's events, one JSON object a line, until interrupted", eventsHelp, runEvents},
	"token":     {"NAME ROLE [POOLS]", "make a new random token for the server's -auth-file: prints the token, then its line for the file", tokenHelp, runToken},
	"lease":     {"[-pool P] [-holder H] [-ttl D] [-wait D] [-grace D] [-cooldown-on N [-cooldown D]] -- CMD [ARGS...]", "run CMD while holding a key for it", leaseHelp, runLease},
}

const tokenHelp = `ROLE is admin, client or viewer; POOLS, a comma-separated list of pools the token
acts on (every pool when left out). The first line printed is the token: give it to its user
(KEYPOOL_TOKEN or -token-file). The second is its line for the server's -auth-file, which holds
only the token's SHA-256: add it to the file, and send the server SIGHUP. Nothing is sent to
the server.`

const eventsHelp = `Each event is a line {"seq":N,"type":T,"keyId":ID,"at":TIME}; an interrupt (SIGINT,
SIGTERM) ends the command with status 0. When the connection is lost, or the server cuts a
subscriber that fell behind (SLOW_CONSUMER), it reconnects with backoff and resumes after the
last seq printed, so that no event is missed or printed twice; it says so on stderr. With
-after N it first replays the retained events after seq N. Another coded error ends it.`

const leaseHelp = `Acquires a key (waiting up to -wait for one to come free), then runs CMD with, in its
environment, KEYPOOL_KEY (the lease's secret: an imported key's secret, a generated key's id),
KEYPOOL_KEY_ID (the key's id), KEYPOOL_LEASE_TOKEN and KEYPOOL_LEASE_FENCE (a number that
grows with every lease: pass it to systems that should refuse a holder whose lease is gone).
With -cooldown-on N, CMD exiting with status N says "the upstream throttled this key": the
key is released into COOLING for -cooldown (1m by default) instead of AVAILABLE; 75
(EX_TEMPFAIL) is a fitting N.
The lease is renewed while CMD runs, so CMD may run far longer than -ttl. CMD keeps the
terminal: Ctrl-C and Ctrl-\ reach it from the terminal, once, and keypoolctl lives on. SIGTERM
and SIGHUP are forwarded to CMD, and so are SIGINT and SIGQUIT when keypoolctl is not in the
terminal's foreground (no terminal sent them to CMD then). The key is unblocked as soon as CMD
exits (if the server does not answer within 5s, keypoolctl says so and leaves the lease to run
out), and keypoolctl exits with CMD's status (128+N if signal N ended it; 127 if CMD cannot
be found, 126 if it cannot run). If the lease is lost while CMD runs (the key was deleted,
another holder has it, or it could not be renewed in time), CMD gets SIGTERM, then SIGKILL
after -grace, and keypoolctl exits 3.`

func run(args []string, stdin io.Reader, stdout, stderr io.Writer, getenv func(string) string) int {
	e := &env{stdin: stdin, stdout: stdout, stderr: stderr, getenv: getenv}
	g := &globals{server: client.DefaultServer, timeout: defaultTimeout}
	if s := getenv("KEYPOOL_SERVER"); s != "" {
		g.server = s
	}
	root := flag.NewFlagSet("keypoolctl", flag.ContinueOnError)
	g.register(root)
	version := root.Bool("version", false, "print the version (module version, VCS revision and time, Go version) and exit")
	root.Usage = func() { usage(root) }
	if code, ok := parse(e, root, args); !ok {
		return code
	}
	if *version {
		fmt.Fprintln(e.stdout, "keypoolctl", buildinfo.Read())
		return exitOK
	}
	args = root.Args()
	if len(args) == 0 {
		root.SetOutput(e.stderr)
		usage(root)
		return exitUsage
	}
	name, args := args[0], args[1:]
	if name == "help" {
		if len(args) == 1 {
			name, args = args[0], []string{"-h"}
		} else {
			return run([]string{"-h"}, stdin, stdout, stderr, getenv)
		}
	}
	cmd, ok := commands[name]
	if !ok {
		fmt.Fprintf(e.stderr, "keypoolctl: unknown command %q (keypoolctl -h lists them)\n", name)
		return exitUsage
	}
	fs := flag.NewFlagSet("keypoolctl "+name, flag.ContinueOnError)
	g.register(fs)
	fs.Usage = func() {
		w := fs.Output()
		fmt.Fprintf(w, "usage: keypoolctl [global flags] %s %s\n\n%s.\n", name, cmd.args, capitalize(cmd.summary))
		if cmd.detail != "" {
			fmt.Fprintf(w, "\n%s\n", cmd.detail)
		}
		fmt.Fprintf(w, "\nflags:\n")
		fs.PrintDefaults()
	}
	return cmd.run(e, g, fs, args)
}

func usage(fs *flag.FlagSet) {
	w := fs.Output()
	fmt.Fprintf(w, "usage: keypoolctl [global flags] COMMAND [flags] [args]\n\ncommands:\n")
	names := make([]string, 0, len(commands))
	for name := range commands {
		names = append(names, name)
	}
	sort.Strings(names)
	for _, name := range names {
		fmt.Fprintf(w, "  %-10s %s\n", name, commands[name].summary)
	}
	fmt.Fprintf(w, "\nEach command prints JSON, and -h tells more of it. Errors print one line to stderr,\n"+
		"with the server's code, and exit 1 (2 for bad usage).\n\nglobal flags (also after the command):\n")
	fs.PrintDefaults()
}

func capitalize(s string) string {
	if s == "" {
		return s
	}
	return strings.ToUpper(s[:1]) + s[1:]
}

// parse parses fs's flags from args, with -h printed to stdout (exit 0) and bad
// flags reported to stderr (exit 2). ok is false when the caller must return code.
func parse(e *env, fs *flag.FlagSet, args []string) (code int, ok bool) {
	var out bytes.Buffer
	fs.SetOutput(&out)
	err := fs.Parse(args)
	switch {
	case errors.Is(err, flag.ErrHelp):
		out.Reset()
		fs.Usage()
		_, _ = io.Copy(e.stdout, &out)
		return exitOK, false
	case err != nil:
		_, _ = io.Copy(e.stderr, &out)
		return exitUsage, false
	}
	return 0, true
}

// parseInterspersed is parse for commands whose flags may follow their arguments
// ("unblock ID -token T"); it returns the arguments. After "--" everything is an
// argument, and so is anything that starts with "-" but names no flag, wherever it
// stands: one key id in 64 starts with "-" ("unblock -token T -WORxEWyFKXiBwY6AUU2Ew").
func parseInterspersed(e *env, fs *flag.FlagSet, args []string) (positional []string, code int, ok bool) {
	var flags []string
	for i := 0; i < len(args); i++ {
		switch arg := args[i]; {
		case arg == "--":
			positional = append(positional, args[i+1:]...)
			i = len(args)
		case len(arg) < 2 || arg[0] != '-' || namesNoFlag(fs, arg):
			positional = append(positional, arg)
		default:
			flags = append(flags, arg)
			if takesValue(fs, arg) && i+1 < len(args) {
				i++
				flags = append(flags, args[i])
			}
		}
	}
	if code, ok := parse(e, fs, flags); !ok {
		return nil, code, false
	}
	return positional, 0, true
}

// takesValue reports whether arg, a flag fs defines, takes the next argument as its
// value: it is not boolean and has no "=value" of its own.
func takesValue(fs *flag.FlagSet, arg string) bool {
	name, _, hasValue := strings.Cut(strings.TrimPrefix(arg[1:], "-"), "=")
	f := fs.Lookup(name)
	if hasValue || f == nil {
		return false
	}
	b, ok := f.Value.(interface{ IsBoolFlag() bool })
	return !ok || !b.IsBoolFlag()
}

// namesNoFlag reports whether arg looks like a flag ("-x", "--x=v") that fs does not
// define (help aside).
func namesNoFlag(fs *flag.FlagSet, arg string) bool {
	if len(arg) < 2 || arg[0] != '-' || arg == "--" {
		return false
	}
	name, _, _ := strings.Cut(strings.TrimPrefix(arg[1:], "-"), "=")
	return name != "h" && name != "help" && fs.Lookup(name) == nil
}

// usageError reports a misuse of a command and returns exitUsage.
func usageError(e *env, fs *flag.FlagSet, format string, args ...any) int {
	fmt.Fprintf(e.stderr, "%s: %s\n", fs.Name(), fmt.Sprintf(format, args...))
	fmt.Fprintf(e.stderr, "run '%s -h' for usage\n", fs.Name())
	return exitUsage
}

// fail prints err as one line and returns exitError: the server's code and message
// for an answer of the server, else what went wrong on the way.
func fail(e *env, g *globals, err error) int {
	fmt.Fprintln(e.stderr, "keypoolctl: "+describe(g, err))
	return exitError
}

func describe(g *globals, err error) string {
	var answer *client.Error
	switch {
	case errors.As(err, &answer), errors.Is(err, client.ErrLeaseLost):
		return err.Error() // the server's code and message, in their context
	case errors.Is(err, context.DeadlineExceeded):
		return fmt.Sprintf("no answer from %s within %s (-timeout)", g.server, g.timeout)
	default:
		return fmt.Sprintf("cannot reach %s: %v", g.server, err)
	}
}

// connect returns a client of the server -server names, sending the token of
// -token-file or KEYPOOL_TOKEN, if any.
func connect(e *env, g *globals) (*client.Client, int, bool) {
	token := e.getenv("KEYPOOL_TOKEN")
	if g.tokenFile != "" {
		data, err := os.ReadFile(g.tokenFile)
		if err != nil {
			fmt.Fprintf(e.stderr, "keypoolctl: -token-file: %v\n", err)
			return nil, exitUsage, false
		}
		token = strings.TrimSpace(string(data))
	}
	var opts []client.Option
	if token != "" {
		opts = append(opts, client.WithToken(token))
	}
	c, err := client.New(g.server, opts...)
	if err != nil {
		fmt.Fprintf(e.stderr, "keypoolctl: -server: %v\n", err)
		return nil, exitUsage, false
	}
	return c, 0, true
}

// printJSON writes v as one line of JSON.
func printJSON(e *env, v any) int {
	enc := json.NewEncoder(e.stdout)
	enc.SetEscapeHTML(false)
	if err := enc.Encode(v); err != nil {
		fmt.Fprintf(e.stderr, "keypoolctl: writing the answer: %v\n", err)
		return exitError
	}
	return exitOK
}
