package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"os"
	"os/exec"
	"os/signal"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/keypool/keypool/client"
)

// defaultGrace is how long a command whose lease was lost has, after SIGTERM, to
// exit before it is killed.
const defaultGrace = 10 * time.Second

// defaultCooldown is how long a key released by -cooldown-on cools: long enough for
// an upstream's per-minute quota to come back.
const defaultCooldown = time.Minute

// releaseTimeout bounds the unblock once the command has ended (or could not start).
// The client would retry an unreachable server until the lease ran out, an hour with
// -ttl 1h, and keypoolctl would outlive its command by that long; a key left BLOCKED
// frees itself when its lease runs out.
const releaseTimeout = 5 * time.Second

// handled are the signals lease takes itself once it has connected, so that none of
// them kills keypoolctl while it holds a key (which would leave the key BLOCKED until
// the lease ran out): during the acquire each gives it up; while the command runs,
// each is the command's (see forward).
var handled = []os.Signal{syscall.SIGINT, syscall.SIGQUIT, syscall.SIGTERM, syscall.SIGHUP}

// runLease acquires a key, runs the command with it while renewing the lease, passes
// signals on to it (see forward), unblocks the key as soon as it exits, and exits
// with its status. If the lease is lost meanwhile, the command is stopped.
func runLease(e *env, g *globals, fs *flag.FlagSet, args []string) int {
	var f leaseFlags
	f.register(fs)
	grace := fs.Duration("grace", defaultGrace, "how long CMD has to exit after SIGTERM, if the lease is lost, before it is killed")
	cooldownOn := fs.Int("cooldown-on", -1, "an exit status of CMD that means the upstream throttled the key (75, EX_TEMPFAIL, say): the key is released into COOLING for -cooldown")
	cooldown := fs.Duration("cooldown", defaultCooldown, "how long a key released by -cooldown-on cools")
	if code, ok := parse(e, fs, args); !ok {
		return code
	}
	argv := fs.Args()
	if len(argv) == 0 {
		return usageError(e, fs, "no command to run (keypoolctl lease [flags] -- CMD [ARGS...])")
	}
	if msg := f.check(fs); msg != "" {
		return usageError(e, fs, "%s", msg)
	}
	switch {
	case given(fs, "cooldown-on") && (*cooldownOn < 0 || *cooldownOn > 255):
		return usageError(e, fs, "-cooldown-on must be an exit status, 0 to 255")
	case *cooldown <= 0:
		return usageError(e, fs, "-cooldown must be positive")
	}
	c, code, ok := connect(e, g)
	if !ok {
		return code
	}
	defer c.Close()

	// From here on a signal never kills keypoolctl itself while it holds a key: it
	// stops the acquire, or goes to the command.
	signals := make(chan os.Signal, 4)
	signal.Notify(signals, handled...)
	defer signal.Stop(signals)

	lease, cancel, code, ok := acquireLease(e, g, c, f, signals)
	if !ok {
		return code
	}
	defer cancel()
	defer func() { _ = unblock(lease) }() // a no-op once released below

	cmd := exec.Command(argv[0], argv[1:]...)
	cmd.Stdin, cmd.Stdout, cmd.Stderr = e.stdin, e.stdout, e.stderr
	// The command gets the lease, not keypoolctl's own token to the server.
	cmd.Env = append(slices.DeleteFunc(os.Environ(), func(kv string) bool { return strings.HasPrefix(kv, "KEYPOOL_TOKEN=") }),
		"KEYPOOL_KEY="+lease.Secret(),
		"KEYPOOL_KEY_ID="+lease.KeyID(),
		"KEYPOOL_LEASE_TOKEN="+lease.Token(),
		"KEYPOOL_LEASE_FENCE="+strconv.FormatInt(lease.Fence(), 10),
	)
	keepWithParent(cmd)
	if err := cmd.Start(); err != nil {
		release(e, g, lease)
		fmt.Fprintf(e.stderr, "keypoolctl: lease: %v\n", err)
		if errors.Is(err, exec.ErrNotFound) || errors.Is(err, os.ErrNotExist) {
			return 127 // as a shell says of a command it cannot find
		}
		return 126
	}
	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait() }()

	var kill <-chan time.Time // armed once the lease is lost and the command told
	lostLease := lease.Done()
	for {
		select {
		case s := <-signals:
			forward(cmd, s)
		case <-lostLease:
			lostLease = nil
			fmt.Fprintf(e.stderr, "keypoolctl: %s; stopping %s (SIGTERM, then SIGKILL after %s)\n",
				describe(g, lease.Err()), argv[0], *grace)
			_ = cmd.Process.Signal(syscall.SIGTERM)
			timer := time.NewTimer(*grace)
			defer timer.Stop()
			kill = timer.C
		case <-kill:
			kill = nil
			_ = cmd.Process.Kill()
		case err := <-exited:
			status := exitStatus(cmd, err)
			if lostLease == nil {
				return exitLeaseLost
			}
			var opts []client.ReleaseOption
			if status == *cooldownOn {
				opts = append(opts, client.Cooldown(*cooldown))
			}
			err = unblock(lease, opts...)
			if errors.Is(err, client.ErrLeaseLost) {
				fmt.Fprintf(e.stderr, "keypoolctl: %s, before %s's exit was seen\n", describe(g, err), argv[0])
				return exitLeaseLost
			}
			if err != nil {
				notFreed(e, g, lease, err)
			}
			return status
		}
	}
}

// forward passes s on to the command, unless the terminal sent it to the command as
// well. The command stays in keypoolctl's process group, so that it keeps the
// terminal (a shell or a prompt must read it without being stopped); when that group
// is the terminal's foreground one, Ctrl-C and Ctrl-\ reach the command directly,
// and a second SIGINT would read to many programs as a second Ctrl-C, "abort now".
// So those are left to the terminal, as system(3) does. A signal cannot tell who sent
// it: SIGINT or SIGQUIT sent to keypoolctl alone while it is in the foreground is
// dropped too; sent while it is not (by a supervisor, or to a job in the background),
// it is passed on.
func forward(cmd *exec.Cmd, s os.Signal) {
	if (s == syscall.SIGINT || s == syscall.SIGQUIT) && inTerminalForeground() {
		return
	}
	_ = cmd.Process.Signal(s)
}

// acquireLease acquires the key, or gives up on a signal (exit 128+n) or after
// -timeout plus -wait. The lease lasts until cancel is called.
func acquireLease(e *env, g *globals, c *client.Client, f leaseFlags, signals <-chan os.Signal) (lease *client.Lease, cancel context.CancelFunc, code int, ok bool) {
	// The lease's context must outlive the acquire's bound, so the bound is a timer
	// that cancels it only while the acquire has not come back.
	ctx, cancel := context.WithCancel(context.Background())
	timer := time.AfterFunc(g.timeout+f.wait, cancel)
	type result struct {
		lease *client.Lease
		err   error
	}
	acquired := make(chan result, 1)
	go func() {
		l, err := c.Lease(ctx, f.options())
		acquired <- result{l, err}
	}()
	var interrupted os.Signal
	for {
		select {
		case s := <-signals:
			interrupted = s
			cancel()
		case r := <-acquired:
			inTime := timer.Stop()
			switch {
			case r.err == nil && inTime && interrupted == nil:
				return r.lease, cancel, 0, true
			case r.lease != nil:
				release(e, g, r.lease)
			}
			cancel()
			switch {
			case interrupted != nil:
				return nil, nil, 128 + int(interrupted.(syscall.Signal)), false
			case !inTime:
				return nil, nil, fail(e, g, context.DeadlineExceeded), false
			}
			return nil, nil, fail(e, g, r.err), false
		}
	}
}

// release unblocks the key, saying so if it could not.
func release(e *env, g *globals, lease *client.Lease) {
	if err := unblock(lease); err != nil {
		notFreed(e, g, lease, err)
	}
}

// unblock ends the lease and unblocks the key (as opts say), giving up after
// releaseTimeout.
func unblock(lease *client.Lease, opts ...client.ReleaseOption) error {
	ctx, cancel := context.WithTimeout(context.Background(), releaseTimeout)
	defer cancel()
	return lease.Release(ctx, opts...)
}

// notFreed says that the key could not be unblocked, and until when it stays BLOCKED.
func notFreed(e *env, g *globals, lease *client.Lease, err error) {
	if errors.Is(err, client.ErrLeaseLost) {
		fmt.Fprintf(e.stderr, "keypoolctl: lease: unblocking the key: %s\n", describe(g, err))
		return
	}
	why := describe(g, err)
	if errors.Is(err, context.DeadlineExceeded) {
		why = "no answer from " + g.server // not describe's: -timeout did not bound it
	}
	fmt.Fprintf(e.stderr, "keypoolctl: lease: could not unblock the key within %s (%s); its lease will run out by itself at %s\n",
		releaseTimeout, why, lease.Info().ExpiresAt.Format(time.RFC3339))
}

// exitStatus is what a shell would report for the command: its exit code, or
// 128 plus the signal that ended it.
func exitStatus(cmd *exec.Cmd, err error) int {
	var exitErr *exec.ExitError
	if err != nil && !errors.As(err, &exitErr) {
		return exitError
	}
	ws, ok := cmd.ProcessState.Sys().(syscall.WaitStatus)
	if ok && ws.Signaled() {
		return 128 + int(ws.Signal())
	}
	return cmd.ProcessState.ExitCode()
}
