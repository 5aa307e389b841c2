package main

import (
	"os/exec"
	"runtime"
	"syscall"
)

// keepWithParent has the kernel send the command SIGTERM should keypoolctl die without
// stopping it (kill -9): the command must not run on after the lease held for it. The
// signal is tied to the thread that starts the command, so that thread is kept for
// keypoolctl's life.
func keepWithParent(cmd *exec.Cmd) {
	runtime.LockOSThread() // never unlocked: the thread ends with the process
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGTERM}
}
