//go:build !linux

package docker

import (
	"context"
	"syscall"
)

// setParentDeathSignal leaves a as it is: only Linux has a parent-death
// signal.
func setParentDeathSignal(*syscall.SysProcAttr) {}

// stopTagged finds no process: only Linux tells a process's environment.
func stopTagged(context.Context, string) (int, error) { return 0, nil }
