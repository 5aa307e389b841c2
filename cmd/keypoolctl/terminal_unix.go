//go:build unix

package main

import "golang.org/x/sys/unix"

// inTerminalForeground reports whether keypoolctl's process group is the foreground
// group of its controlling terminal: the group to which the terminal sends SIGINT and
// SIGQUIT when Ctrl-C or Ctrl-\ is typed.
func inTerminalForeground() bool {
	fd, err := unix.Open("/dev/tty", unix.O_RDONLY|unix.O_NOCTTY|unix.O_CLOEXEC, 0)
	if err != nil {
		return false // no controlling terminal
	}
	defer unix.Close(fd)
	pgrp, err := unix.IoctlGetInt(fd, unix.TIOCGPGRP)
	return err == nil && pgrp == unix.Getpgrp()
}
