package docker_test

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/berth-ops/berth"
	"github.com/berth-ops/berth/docker"
	"github.com/berth-ops/berth/events"
	"github.com/berth-ops/berth/internal/testenv"
)

func sampleSpec(s *testenv.Sample) berth.ComposeSpec {
	return berth.ComposeSpec{Dir: s.Dir, Files: s.Files, Project: s.Project}
}

// collect gathers the lines of a Compose run, checking that they are
// clean.
type collect struct {
	t     *testing.T
	mu    sync.Mutex
	lines []string
}

func (c *collect) line(s string) {
	if strings.ContainsAny(s, "\x1b\r\n") || strings.TrimSpace(s) == "" {
		c.t.Errorf("unclean line %q", s)
	}
	c.mu.Lock()
	c.lines = append(c.lines, s)
	c.mu.Unlock()
}

func (c *collect) text() string {
	c.mu.Lock()
	defer c.mu.Unlock()
	return strings.Join(c.lines, "\n")
}

// output returns the output lines of a Compose error, joined.
func output(err error) string {
	lines, _ := events.AsError(err).Data["output"].([]string)
	return strings.Join(lines, "\n")
}

// TestComposer runs the Composer on one sample project on the real
// engine: build, up, tags, logs, a timeout and a failed health.
func TestComposer(t *testing.T) {
	s := testenv.SampleApp(t, testenv.SampleNoUp())
	e := newEngine(t)
	ctx := t.Context()
	spec := sampleSpec(s)
	appImage := s.Project + "-app:latest"

	t.Run("build", func(t *testing.T) {
		c := &collect{t: t}
		if err := e.Compose(ctx, spec, events.CodeBuildFailed, c.line, "build"); err != nil {
			t.Fatal(err)
		}
		out := c.text()
		if len(c.lines) < 5 || !strings.Contains(out, "COPY app /app") || !strings.Contains(out, "naming to docker.io/library/"+appImage) {
			t.Errorf("build output:\n%s", out)
		}
		if _, err := e.ImageID(ctx, appImage); err != nil {
			t.Fatal(err)
		}
	})

	t.Run("up", func(t *testing.T) {
		c := &collect{t: t}
		if err := e.Compose(ctx, spec, events.CodeHealthFailed, c.line, "up", "-d", "--wait", "--wait-timeout", "30"); err != nil {
			t.Fatal(err)
		}
		out := c.text()
		for _, want := range []string{"Container " + s.Project + "-web-1  Healthy", "Container " + s.Project + "-worker-1  Healthy"} {
			if !strings.Contains(out, want) {
				t.Errorf("up output lacks %q:\n%s", want, out)
			}
		}
		cs, err := e.Containers(ctx, s.Project)
		if err != nil {
			t.Fatal(err)
		}
		if len(cs) != 2 || cs[0].State != "running" || cs[0].Health != "healthy" || cs[1].State != "running" {
			t.Errorf("containers %+v", cs)
		}
	})

	t.Run("images", func(t *testing.T) {
		ref := "berth-test/" + s.Project + ":release-1"
		t.Cleanup(func() {
			cctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
			defer cancel()
			e.RemoveImage(cctx, ref)
		})
		id, err := e.ImageID(ctx, appImage)
		if err != nil {
			t.Fatal(err)
		}
		if !strings.HasPrefix(id, "sha256:") {
			t.Errorf("image id %q", id)
		}
		// The tag is seen by a watcher, from the time it asks on.
		wctx, stopWatch := context.WithCancel(ctx)
		seen := make(chan string, 16)
		watched := make(chan error, 1)
		go func() {
			watched <- e.WatchImageTags(wctx, time.Now().Add(-time.Second), func(r string) { seen <- r })
		}()
		if err := e.TagImage(ctx, id, ref); err != nil {
			t.Fatal(err)
		}
		for got := ""; got != ref; {
			select {
			case got = <-seen:
			case err := <-watched:
				t.Fatalf("the watch ended: %v", err)
			case <-time.After(10 * time.Second):
				t.Fatalf("no tag event for %s", ref)
			}
		}
		stopWatch()
		if err := <-watched; err != nil {
			t.Errorf("a watch whose context ended: %v", err)
		}
		if got, err := e.ImageID(ctx, ref); err != nil || got != id {
			t.Fatalf("ImageID(%s) = %q, %v; want %s", ref, got, err, id)
		}
		if err := e.RemoveImage(ctx, ref); err != nil {
			t.Fatal(err)
		}
		_, err = e.ImageID(ctx, ref)
		wantCode(t, err, events.CodeNotFound)
		if err := e.RemoveImage(ctx, ref); err != nil {
			t.Errorf("removing a missing tag: %v", err)
		}
		if got, err := e.ImageID(ctx, appImage); err != nil || got != id {
			t.Errorf("the project's image is gone: %q, %v", got, err)
		}
		// The image's last tag, used by the running containers.
		wantCode(t, e.RemoveImage(ctx, id), events.CodeConflict)
		wantCode(t, e.TagImage(ctx, "berth-test/no-such-image:1", ref), events.CodeNotFound)
		wantCode(t, e.TagImage(ctx, id, "Bad Ref"), events.CodeBadRequest)
		wantCode(t, e.TagImage(ctx, id, "berth-test/x@sha256:"+strings.Repeat("0", 64)), events.CodeBadRequest)
	})

	t.Run("ServiceLogsTail", func(t *testing.T) {
		id := s.ContainerID(t, "web")
		// The app logs two lines at start, then a tick a second.
		var lines []string
		for deadline := time.Now().Add(15 * time.Second); ; time.Sleep(200 * time.Millisecond) {
			var err error
			if lines, err = e.ServiceLogsTail(ctx, id, 3); err != nil {
				t.Fatal(err)
			}
			if len(lines) >= 3 || time.Now().After(deadline) {
				break
			}
		}
		if len(lines) != 3 {
			t.Fatalf("lines %q", lines)
		}
		for _, l := range lines {
			if !strings.HasPrefix(l, "stdout: ") && !strings.HasPrefix(l, "stderr: ") {
				t.Errorf("line %q", l)
			}
		}
		all, err := e.ServiceLogsTail(ctx, id, 1000)
		if err != nil || !strings.Contains(strings.Join(all, "\n"), "stderr: sampleapp warning: this is stderr") {
			t.Errorf("logs %q, %v", all, err)
		}
		_, err = e.ServiceLogsTail(ctx, "no-such-container", 3)
		wantCode(t, err, events.CodeNotFound)
	})

	t.Run("timeout", func(t *testing.T) {
		tagged := spec
		tagged.Tag = "test-timeout-" + s.Project
		tctx, cancel := context.WithTimeout(ctx, 3*time.Second)
		defer cancel()
		c := &collect{t: t}
		start := time.Now()
		err := e.Compose(tctx, tagged, events.CodeInternal, c.line, "logs", "-f", "worker")
		wantCode(t, err, events.CodeTimeout)
		if d := time.Since(start); d > 8*time.Second {
			t.Errorf("returned after %v", d)
		}
		if out := c.text(); !strings.Contains(out, "tick") {
			t.Errorf("streamed no tick:\n%s", out)
		}
		if out := output(err); !strings.Contains(out, "tick") {
			t.Errorf("error output %q", out)
		}
		docker.WaitUntagged(t, tagged.Tag, 3*time.Second)

		// While it runs, its processes carry the tag.
		cctx, cancel2 := context.WithCancel(ctx)
		time.AfterFunc(2*time.Second, cancel2)
		var running []int
		var once sync.Once
		err = e.Compose(cctx, tagged, events.CodeInternal, func(string) {
			once.Do(func() { running = docker.TaggedProcesses(t, tagged.Tag) })
		}, "logs", "-f", "worker")
		if !errors.Is(err, context.Canceled) {
			t.Errorf("canceled: %v", err)
		}
		if len(running) == 0 {
			t.Errorf("no process carries tag %s while Compose runs", tagged.Tag)
		}
		docker.WaitUntagged(t, tagged.Tag, 3*time.Second)
	})

	t.Run("health failed", func(t *testing.T) {
		env := filepath.Join(s.Dir, ".env")
		if err := os.WriteFile(env, []byte("FAIL_HEALTH=1\n"), 0o644); err != nil {
			t.Fatal(err)
		}
		defer os.Remove(env)
		c := &collect{t: t}
		err := e.Compose(ctx, spec, events.CodeHealthFailed, c.line, "up", "-d", "--wait", "--wait-timeout", "10")
		wantCode(t, err, events.CodeHealthFailed)
		ee := events.AsError(err)
		out := output(err)
		if !strings.Contains(out, "container "+s.Project+"-web-1 is unhealthy") || !strings.Contains(ee.Message, "is unhealthy") ||
			ee.Data["exit_code"] != 1 || ee.Hint == "" {
			t.Errorf("error %+v", ee)
		}
		if c.text() != out {
			t.Errorf("streamed %q, error output %q", c.text(), out)
		}
	})
}

// TestComposeBuildFailure builds a broken Dockerfile.
func TestComposeBuildFailure(t *testing.T) {
	s := testenv.SampleApp(t, testenv.SampleNoUp())
	e := newEngine(t)
	if err := os.WriteFile(filepath.Join(s.Dir, "Dockerfile"), []byte("FROM scratch\nCOPY does-not-exist /x\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	c := &collect{t: t}
	err := e.Compose(t.Context(), sampleSpec(s), events.CodeBuildFailed, c.line, "build")
	wantCode(t, err, events.CodeBuildFailed)
	ee := events.AsError(err)
	out := output(err)
	if !strings.Contains(out, "COPY does-not-exist /x") || !strings.Contains(out, `"/does-not-exist" not found`) {
		t.Errorf("output:\n%s", out)
	}
	if !strings.Contains(ee.Message, "docker compose build failed") || !strings.Contains(ee.Hint, "build error") {
		t.Errorf("error %+v", ee)
	}
	if n := len(strings.Split(out, "\n")); n > docker.ComposeTailLines {
		t.Errorf("%d output lines", n)
	}
}
