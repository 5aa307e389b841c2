//go:build linux

package main

import (
	"fmt"
	"os"
	"os/exec"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/creack/pty"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"golang.org/x/sys/unix"

	"github.com/keypool/keypool/keystore"
)

// onTerminal is keypoolctl run as a shell runs a command in the foreground: in a
// session of its own whose controlling terminal is a pseudo-terminal, its process
// group the terminal's foreground group. The test types on the terminal's master side
// and reads what is shown there.
type onTerminal struct {
	cmd   *exec.Cmd
	ptmx  *os.File
	lines chan string
	shown []string // every line read so far, for failure messages
	done  bool
}

func startOnTerminal(t *testing.T, server string, args ...string) *onTerminal {
	t.Helper()
	ptmx, tty, err := pty.Open()
	if err != nil {
		t.Skipf("no pseudo-terminal to run keypoolctl on: %v", err)
	}
	t.Cleanup(func() { _ = ptmx.Close() })
	// keypoolctl and its command hold the terminal's side from here on: once they are
	// gone, the master reads EIO, which ends lines.
	defer tty.Close()
	// NOFLSH: else the terminal, right after it sends SIGINT, throws away what the
	// command has written and the master has not read yet, such as what it says of
	// that SIGINT.
	termios, err := unix.IoctlGetTermios(int(tty.Fd()), unix.TCGETS)
	require.NoError(t, err)
	termios.Lflag |= unix.NOFLSH
	require.NoError(t, unix.IoctlSetTermios(int(tty.Fd()), unix.TCSETS, termios))

	cmd := keypoolctl(server, args...)
	cmd.Stdin, cmd.Stdout, cmd.Stderr = tty, tty, tty
	cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true, Setctty: true} // Ctty: its stdin
	require.NoError(t, cmd.Start())
	term := &onTerminal{cmd: cmd, ptmx: ptmx, lines: lines(ptmx)}
	t.Cleanup(func() {
		_ = syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL) // keypoolctl's group: its command too
		term.wait(t)
	})
	return term
}

// typeIn types s on the terminal.
func (term *onTerminal) typeIn(t *testing.T, s string) {
	t.Helper()
	_, err := term.ptmx.WriteString(s)
	require.NoError(t, err)
}

// expect reads what the terminal shows until a line that contains want, and returns
// that line (without the terminal's \r).
func (term *onTerminal) expect(t *testing.T, want string) string {
	t.Helper()
	timeout := time.After(lineTimeout)
	for {
		select {
		case l, ok := <-term.lines:
			require.True(t, ok, "the terminal closed before %q; it showed:\n%s", want, term.screen())
			l = strings.TrimRight(l, "\r")
			term.shown = append(term.shown, l)
			if strings.Contains(l, want) {
				return l
			}
		case <-timeout:
			t.Fatalf("no %q within %s; the terminal showed:\n%s", want, lineTimeout, term.screen())
		}
	}
}

func (term *onTerminal) screen() string { return strings.Join(term.shown, "\n") }

// wait waits for keypoolctl to exit, and returns its status.
func (term *onTerminal) wait(t *testing.T) int {
	t.Helper()
	if !term.done {
		exited := make(chan struct{})
		go func() {
			_ = term.cmd.Wait()
			close(exited)
		}()
		select {
		case <-exited:
		case <-time.After(lineTimeout):
			t.Fatalf("keypoolctl did not exit; the terminal showed:\n%s", term.screen())
		}
		term.done = true
	}
	return term.cmd.ProcessState.ExitCode()
}

// TestLeaseTerminalSignals: Ctrl-C and Ctrl-\ typed on the terminal reach the command
// once each (the terminal sends them to the whole foreground group, keypoolctl and the
// command alike, and keypoolctl does not pass on a second), keypoolctl lives on
// through them, and the command keeps the terminal: it reads a line typed there.
func TestLeaseTerminalSignals(t *testing.T) {
	ts := newTestServer(t)
	keys := ts.generate(t, 1)
	term := startOnTerminal(t, ts.url, "lease", "--", "env", asPrompt+"=1", os.Args[0])
	term.expect(t, "ready")
	// Many times: a second SIGINT that comes before the command has taken the first
	// merges with it, so a doubling shows only now and then (in about half of the runs
	// of keypoolctl that forwarded SIGINT).
	const ctrlCs = 50
	for range ctrlCs {
		term.typeIn(t, "\x03") // Ctrl-C
		term.expect(t, "INT")
	}
	term.typeIn(t, "\x1c") // Ctrl-\
	term.expect(t, "QUIT")
	term.typeIn(t, "hello\n")
	assert.Equal(t, fmt.Sprintf("line=hello INT=%d QUIT=1 TERM=0 HUP=0", ctrlCs), term.expect(t, "line="),
		"the terminal showed:\n%s", term.screen())
	assert.Equal(t, promptStatus, term.wait(t), "the command's status; the terminal showed:\n%s", term.screen())
	assert.Equal(t, keystore.Available, ts.key(t, keys[0].ID).Status, "freed")
}
