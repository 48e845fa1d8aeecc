package docker

import (
	"context"
	"errors"
	"fmt"
	"os"
	"syscall"
	"time"

	"github.com/berth-ops/berth/events"
)

// stopPoll is how often stopTagged looks again for the processes it
// killed.
const stopPoll = 50 * time.Millisecond

// setParentDeathSignal makes the kernel kill the child when the thread
// that started it ends (a worker killed with SIGKILL included).
func setParentDeathSignal(a *syscall.SysProcAttr) { a.Pdeathsig = syscall.SIGKILL }

// stopTagged kills the processes of /proc that carry operation tag (see
// StopOperation) until none is left.
func stopTagged(ctx context.Context, tag string) (int, error) {
	self, ownGroup := os.Getpid(), syscall.Getpgrp()
	type key struct {
		pid   int
		start uint64
	}
	killed := map[key]bool{}
	tick := time.NewTicker(stopPoll)
	defer tick.Stop()
	for {
		procs, err := findTagged("/proc", tag, self)
		if err != nil {
			return len(killed), events.Errorf(events.CodeInternal, "list the processes of operation %s: %v", tag, err).
				WithHint("the worker reads /proc to find them: check that it is mounted and readable")
		}
		if len(procs) == 0 {
			return len(killed), nil
		}
		for _, p := range procs {
			k := key{p.pid, p.start}
			if killed[k] {
				continue // killed, not reaped yet
			}
			if p.pgrp == p.pid && p.pgrp != ownGroup {
				syscall.Kill(-p.pgrp, syscall.SIGKILL)
			}
			switch err := syscall.Kill(p.pid, syscall.SIGKILL); {
			case err == nil:
				killed[k] = true
			case !errors.Is(err, syscall.ESRCH):
				return len(killed), events.Errorf(events.CodeInternal, "kill process %d of operation %s: %v", p.pid, tag, err).
					WithHint("the worker must run as the user that runs the compose processes (or root)")
			}
		}
		select {
		case <-ctx.Done():
			if errors.Is(ctx.Err(), context.DeadlineExceeded) {
				return len(killed), events.Errorf(events.CodeTimeout,
					"%d processes of operation %s are still alive after SIGKILL", len(procs), tag).
					WithHint("they may be stuck in the kernel (a hung mount or device); look at them with `ps`, then retry")
			}
			return len(killed), fmt.Errorf("docker: stop operation %s: %w", tag, ctx.Err())
		case <-tick.C:
		}
	}
}
