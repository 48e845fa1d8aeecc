package docker

import (
	"os"
	"testing"
	"time"
)

// TaggedProcesses returns the pids of the live processes (but the test's
// own) whose environment carries BERTH_OP=<tag>.
func TaggedProcesses(t testing.TB, tag string) []int {
	t.Helper()
	procs, err := findTagged("/proc", tag, os.Getpid())
	if err != nil {
		t.Fatal(err)
	}
	var pids []int
	for _, p := range procs {
		pids = append(pids, p.pid)
	}
	return pids
}

// WaitUntagged waits up to within for no live process to carry
// BERTH_OP=<tag>, and fails t when some still do.
func WaitUntagged(t testing.TB, tag string, within time.Duration) {
	t.Helper()
	deadline := time.Now().Add(within)
	for {
		left := TaggedProcesses(t, tag)
		if len(left) == 0 {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("processes %v still carry BERTH_OP=%s after %v", left, tag, within)
		}
		time.Sleep(50 * time.Millisecond)
	}
}
