//go:build !linux

package main

import "os/exec"

// keepWithParent does nothing where the kernel cannot signal a command when its
// parent dies; keypoolctl still stops it on every end it lives to see.
func keepWithParent(*exec.Cmd) {}
