package docker

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"runtime"
	"slices"
	"testing"
	"time"

	"github.com/berth-ops/berth"
	"github.com/berth-ops/berth/internal/testenv"
)

// The environment of the helper process: helperEnv says which helper to
// run, the others what it runs on.
const (
	helperEnv        = "BERTH_DOCKER_TEST_HELPER"
	helperDirEnv     = "BERTH_DOCKER_TEST_DIR"
	helperProjectEnv = "BERTH_DOCKER_TEST_PROJECT"
	helperTagEnv     = "BERTH_DOCKER_TEST_TAG"
)

// TestMain runs the test binary as a helper process when helperEnv says
// so, and the tests otherwise.
func TestMain(m *testing.M) {
	if os.Getenv(helperEnv) == "compose-wait" {
		os.Exit(composeWaitHelper())
	}
	os.Exit(m.Run())
}

// composeWaitHelper stands for a worker: it runs a tagged
// `compose wait worker` on the sample project, which blocks without a
// word while the worker runs (a Compose that writes would die of SIGPIPE
// when its reader dies, parent-death signal or not).
func composeWaitHelper() int {
	e, err := New()
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 2
	}
	spec := berth.ComposeSpec{Dir: os.Getenv(helperDirEnv), Files: []string{testenv.SampleComposeFile},
		Project: os.Getenv(helperProjectEnv), Tag: os.Getenv(helperTagEnv)}
	err = e.Compose(context.Background(), spec, "", nil, "wait", "worker")
	fmt.Fprintln(os.Stderr, "compose wait returned:", err)
	return 1
}

// TestComposeDiesWithWorker kills (SIGKILL) a process while it runs a
// Compose that would block for as long as the sample project runs:
// Compose must die with it.
func TestComposeDiesWithWorker(t *testing.T) {
	if runtime.GOOS != "linux" {
		t.Skip("the parent-death signal is Linux's")
	}
	s := testenv.SampleApp(t)
	if bin := newTestEngine(t).ComposeBinary(); len(bin) != 1 {
		testenv.Unavailable(t, "no Compose v2 binary to run directly (it runs as %q)", bin)
	}
	tag := "test-orphan-" + s.Project

	helper := exec.Command(os.Args[0], "-test.run=^$")
	helper.Env = append(os.Environ(), helperEnv+"=compose-wait",
		helperDirEnv+"="+s.Dir, helperProjectEnv+"="+s.Project, helperTagEnv+"="+tag)
	helper.Stderr = os.Stderr
	if err := helper.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		helper.Process.Kill()
		helper.Wait()
		// Whatever the test saw, leave no Compose behind.
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		newTestEngine(t).StopOperation(ctx, tag)
	})

	var running []int
	for deadline := time.Now().Add(30 * time.Second); len(running) == 0; time.Sleep(50 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("no process carries tag %s after 30 s", tag)
		}
		running = TaggedProcesses(t, tag)
	}
	if slices.Contains(running, helper.Process.Pid) {
		t.Errorf("the helper itself carries the tag")
	}
	// Let Compose get to its wait; it must still run then.
	time.Sleep(time.Second)
	if len(TaggedProcesses(t, tag)) == 0 {
		t.Fatal("compose wait ended on its own")
	}
	if err := helper.Process.Kill(); err != nil {
		t.Fatal(err)
	}
	helper.Wait()
	WaitUntagged(t, tag, 5*time.Second)
}
