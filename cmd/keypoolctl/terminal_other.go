//go:build !unix

package main

// inTerminalForeground is false where no terminal signals a process group.
func inTerminalForeground() bool { return false }
