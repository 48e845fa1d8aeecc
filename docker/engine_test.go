package docker_test

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/docker/docker/api/types/container"

	"github.com/berth-ops/berth"
	"github.com/berth-ops/berth/docker"
	"github.com/berth-ops/berth/events"
	"github.com/berth-ops/berth/internal/testenv"
)

func newEngine(t *testing.T) *docker.Engine {
	t.Helper()
	e, err := docker.New()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { e.Close() })
	return e
}

func wantCode(t *testing.T, err error, code events.Code) {
	t.Helper()
	if got := events.ErrorCode(err); got != code {
		t.Fatalf("error %v (code %q), want code %s", err, got, code)
	}
}

// TestEngine runs against one sample project on the real engine.
func TestEngine(t *testing.T) {
	s := testenv.SampleApp(t, testenv.SampleVersion("2.3.4"))
	e := newEngine(t)
	ctx := t.Context()

	t.Run("Ping", func(t *testing.T) {
		if err := e.Ping(ctx); err != nil {
			t.Fatal(err)
		}
		past, cancel := context.WithDeadline(ctx, time.Now().Add(-time.Second))
		defer cancel()
		wantCode(t, e.Ping(past), events.CodeTimeout)
	})

	t.Run("Containers", func(t *testing.T) {
		cs, err := e.Containers(ctx, s.Project)
		if err != nil {
			t.Fatal(err)
		}
		if len(cs) != 2 || cs[0].Service != "web" || cs[1].Service != "worker" {
			t.Fatalf("containers %+v, want web and worker", cs)
		}
		web, worker := cs[0], cs[1]
		for _, c := range cs {
			if c.State != "running" || c.StartedAt.IsZero() || !c.FinishedAt.IsZero() ||
				!strings.HasPrefix(c.ImageID, "sha256:") || c.Image != s.Project+"-app:latest" ||
				c.Name != s.Project+"-"+c.Service+"-1" || len(c.ID) != 64 || c.OneShot {
				t.Errorf("container %+v", c)
			}
		}
		if web.Health != "healthy" || len(web.HealthLog) == 0 || len(web.HealthLog) > docker.MaxHealthLog ||
			web.HealthLog[len(web.HealthLog)-1] != "healthcheck: ok" {
			t.Errorf("web health %q, log %q", web.Health, web.HealthLog)
		}
		if worker.Health != "" || worker.HealthLog != nil || worker.Ports != nil {
			t.Errorf("worker health %q, log %q, ports %+v", worker.Health, worker.HealthLog, worker.Ports)
		}
		if len(web.Ports) != 1 || web.Ports[0].HostPort == 0 || web.Ports[0].ContainerPort != 8080 ||
			web.Ports[0].Proto != "tcp" || web.Ports[0].HostIP != "127.0.0.1" {
			t.Fatalf("web ports %+v", web.Ports)
		}
		// The published port serves the version of the sample.
		resp, err := http.Get(fmt.Sprintf("http://127.0.0.1:%d/", web.Ports[0].HostPort))
		if err != nil {
			t.Fatal(err)
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if strings.TrimSpace(string(body)) != "2.3.4" {
			t.Errorf("GET / = %q, want 2.3.4", body)
		}

		// An unknown project has no container; a bad name is refused.
		cs, err = e.Containers(ctx, s.Project+"-none")
		if err != nil || len(cs) != 0 {
			t.Errorf("unknown project: %+v, %v", cs, err)
		}
		_, err = e.Containers(ctx, "Bad Name")
		wantCode(t, err, events.CodeBadRequest)
	})

	t.Run("ComposeModel", func(t *testing.T) {
		spec := berth.ComposeSpec{Dir: s.Dir, Files: s.Files, Project: s.Project}
		m, err := e.ComposeModel(ctx, spec)
		if err != nil {
			t.Fatal(err)
		}
		image := s.Project + "-app:latest"
		web, worker := m.Services["web"], m.Services["worker"]
		if m.Name != s.Project || !slices.Equal(m.ServiceNames(), []string{"web", "worker"}) {
			t.Fatalf("model %q with services %q", m.Name, m.ServiceNames())
		}
		if web.Name != "web" || web.Image != image || !web.Build || !web.Healthcheck || web.HealthTimeout != 4*time.Second ||
			web.Replicas != 1 || len(web.Ports) != 1 || web.Ports[0] != (berth.ComposePort{Target: 8080, HostIP: "127.0.0.1", Protocol: "tcp"}) {
			t.Errorf("web %+v", web)
		}
		if worker.Image != image || worker.Build || worker.Healthcheck || worker.DependsOn["web"] != "service_started" ||
			worker.Replicas != 1 || worker.Ports != nil || m.Completion("worker") != berth.MayFinish {
			t.Errorf("worker %+v", worker)
		}

		broken := filepath.Join(s.Dir, "broken.yml")
		if err := os.WriteFile(broken, []byte("services:\n  web:\n    image: [\n"), 0o644); err != nil {
			t.Fatal(err)
		}
		for file, msg := range map[string]string{"broken.yml": "yaml", "missing.yml": "missing.yml"} {
			spec.Files = []string{file}
			_, err = e.ComposeModel(ctx, spec)
			wantCode(t, err, events.CodeBadRequest)
			if ee := events.AsError(err); !strings.Contains(ee.Message, msg) || ee.Data["exit_code"] == 0 {
				t.Errorf("%s: error %+v", file, ee)
			}
		}
		spec.Files = []string{"../compose.yml"}
		_, err = e.ComposeModel(ctx, spec)
		wantCode(t, err, events.CodeBadRequest)
	})

	webID := s.ContainerID(t, "web")
	logs := func(t *testing.T, ctx context.Context, id string, opts berth.LogOptions) ([]events.LogLine, error) {
		var got []events.LogLine
		err := e.Logs(ctx, id, opts, func(l events.LogLine) error {
			got = append(got, l)
			return nil
		})
		return got, err
	}

	t.Run("LogsAll", func(t *testing.T) {
		got, err := logs(t, ctx, webID, berth.LogOptions{})
		if err != nil {
			t.Fatal(err)
		}
		want := []events.LogLine{
			{Stream: "stdout", Line: "sampleapp starting mode=web version=2.3.4"},
			{Stream: "stderr", Line: "sampleapp warning: this is stderr"},
		}
		for _, w := range want {
			if !slices.Contains(got, w) {
				t.Errorf("no line %+v in %+v", w, got)
			}
		}
		for _, l := range got {
			if l.TS != "" || strings.HasSuffix(l.Line, "\n") || strings.HasSuffix(l.Line, "\r") {
				t.Errorf("line %+v", l)
			}
		}
	})

	t.Run("LogsTail", func(t *testing.T) {
		got, err := logs(t, ctx, webID, berth.LogOptions{Tail: 5})
		if err != nil {
			t.Fatal(err)
		}
		if len(got) == 0 || len(got) > 5 {
			t.Errorf("tail 5: %d lines %+v", len(got), got)
		}
	})

	t.Run("LogsTimestamps", func(t *testing.T) {
		got, err := logs(t, ctx, webID, berth.LogOptions{Timestamps: true})
		if err != nil {
			t.Fatal(err)
		}
		if len(got) < 2 {
			t.Fatalf("%d lines", len(got))
		}
		for _, l := range got {
			ts, err := time.Parse(time.RFC3339Nano, l.TS)
			if err != nil || time.Since(ts) > 10*time.Minute || strings.HasPrefix(l.Line, l.TS[:4]) {
				t.Errorf("line %+v: %v", l, err)
			}
		}
		if !slices.ContainsFunc(got, func(l events.LogLine) bool {
			return l.Stream == "stderr" && l.Line == "sampleapp warning: this is stderr"
		}) {
			t.Errorf("no stderr line in %+v", got)
		}
	})

	t.Run("LogsSinceUntil", func(t *testing.T) {
		got, err := logs(t, ctx, webID, berth.LogOptions{Since: time.Now().Add(time.Hour)})
		if err != nil || len(got) != 0 {
			t.Errorf("since the future: %+v, %v", got, err)
		}
		got, err = logs(t, ctx, webID, berth.LogOptions{Until: time.Now().Add(-time.Hour)})
		if err != nil || len(got) != 0 {
			t.Errorf("until an hour ago: %+v, %v", got, err)
		}
		got, err = logs(t, ctx, webID, berth.LogOptions{Since: time.Now().Add(-time.Hour)})
		if err != nil || len(got) == 0 {
			t.Errorf("since an hour ago: %d lines, %v", len(got), err)
		}
	})

	t.Run("LogsErrors", func(t *testing.T) {
		_, err := logs(t, ctx, "berth-no-such-container", berth.LogOptions{})
		wantCode(t, err, events.CodeNotFound)
		stop := errors.New("stop")
		err = e.Logs(ctx, webID, berth.LogOptions{}, func(events.LogLine) error { return stop })
		if err != stop {
			t.Errorf("callback error: got %v", err)
		}
	})

	t.Run("LogsFollow", func(t *testing.T) {
		fctx, cancel := context.WithTimeout(ctx, 3*time.Second)
		defer cancel()
		start := time.Now()
		got, err := logs(t, fctx, webID, berth.LogOptions{Tail: 1, Follow: true})
		if err != nil {
			t.Fatalf("follow: %v", err)
		}
		if d := time.Since(start); d < 2500*time.Millisecond {
			t.Errorf("follow returned after %v, before its context ended", d)
		}
		var ticks []int
		for _, l := range got {
			if n, ok := strings.CutPrefix(l.Line, "tick "); ok {
				v, _ := strconv.Atoi(n)
				ticks = append(ticks, v)
			}
		}
		if len(ticks) < 3 || !slices.IsSorted(ticks) {
			t.Errorf("follow for 3s: ticks %v in %+v", ticks, got)
		}
	})

	t.Run("RemoveStrayContainers", func(t *testing.T) {
		// What a recreate cut short leaves: the old container under
		// Compose's temporary name, with the project's labels.
		cli := e.Client()
		stray := "0123456789ab_" + s.Project + "-worker-1"
		created, err := cli.ContainerCreate(ctx, &container.Config{
			Image: s.Project + "-app:latest", Cmd: []string{"worker"},
			Labels: map[string]string{docker.LabelProject: s.Project, docker.LabelService: "worker"},
		}, nil, nil, nil, stray)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() {
			rctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
			defer cancel()
			_ = cli.ContainerRemove(rctx, created.ID, container.RemoveOptions{Force: true})
		})
		if err := cli.ContainerStart(ctx, created.ID, container.StartOptions{}); err != nil {
			t.Fatal(err)
		}
		removed, err := e.RemoveStrayContainers(ctx, s.Project)
		if err != nil || len(removed) != 1 || removed[0] != stray {
			t.Fatalf("removed %v, %v; want %s", removed, err, stray)
		}
		cs, err := e.Containers(ctx, s.Project)
		if err != nil {
			t.Fatal(err)
		}
		var names []string
		for _, c := range cs {
			names = append(names, c.Name)
		}
		if len(cs) != 2 || slices.Contains(names, stray) {
			t.Fatalf("containers after removing the stray: %v", names)
		}
		if removed, err := e.RemoveStrayContainers(ctx, s.Project); err != nil || len(removed) != 0 {
			t.Fatalf("a second call removed %v, %v", removed, err)
		}
	})

	t.Run("LogsTTY", func(t *testing.T) {
		// A container with a TTY has one raw stream: no frames, "\r\n".
		cli := e.Client()
		created, err := cli.ContainerCreate(ctx, &container.Config{
			Image: s.Project + "-app:latest", Cmd: []string{"worker"}, Tty: true,
		}, nil, nil, nil, s.Project+"-tty")
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() {
			rctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
			defer cancel()
			if err := cli.ContainerRemove(rctx, created.ID, container.RemoveOptions{Force: true}); err != nil {
				t.Errorf("remove the tty container: %v", err)
			}
		})
		if err := cli.ContainerStart(ctx, created.ID, container.StartOptions{}); err != nil {
			t.Fatal(err)
		}
		var got []events.LogLine
		for deadline := time.Now().Add(10 * time.Second); time.Now().Before(deadline); time.Sleep(200 * time.Millisecond) {
			got, err = logs(t, ctx, created.ID, berth.LogOptions{Timestamps: true})
			if err != nil {
				t.Fatal(err)
			}
			if slices.ContainsFunc(got, func(l events.LogLine) bool { return l.Line == "tick 1" }) {
				break
			}
		}
		if !slices.ContainsFunc(got, func(l events.LogLine) bool {
			return l.Stream == "stdout" && l.Line == "sampleapp warning: this is stderr" && l.TS != ""
		}) || !slices.ContainsFunc(got, func(l events.LogLine) bool { return l.Line == "tick 1" }) {
			t.Errorf("tty lines %+v", got)
		}
		for _, l := range got {
			if l.Stream != "stdout" || strings.ContainsAny(l.Line, "\r\n") {
				t.Errorf("tty line %+v", l)
			}
		}
	})

	// Last: stopping a container ends a followed stream, and the
	// container shows as exited.
	t.Run("FollowUntilStopAndExited", func(t *testing.T) {
		workerID := s.ContainerID(t, "worker")
		fctx, cancel := context.WithTimeout(ctx, 60*time.Second)
		defer cancel()
		var (
			wg   sync.WaitGroup
			got  []events.LogLine
			lerr error
		)
		wg.Add(1)
		go func() {
			defer wg.Done()
			got, lerr = logs(t, fctx, workerID, berth.LogOptions{Tail: 1, Follow: true})
		}()
		time.Sleep(1500 * time.Millisecond)
		s.Compose(t, "stop", "worker")
		wg.Wait()
		if lerr != nil || fctx.Err() != nil {
			t.Errorf("follow of a stopped container: %v (context: %v)", lerr, fctx.Err())
		}
		if len(got) == 0 || got[len(got)-1].Line != "sampleapp stopping" {
			t.Errorf("last lines %+v", got)
		}

		cs, err := e.Containers(ctx, s.Project)
		if err != nil || len(cs) != 2 {
			t.Fatalf("containers %+v, %v", cs, err)
		}
		w := cs[1]
		if w.Service != "worker" || w.State != "exited" || w.ExitCode != 0 || w.FinishedAt.Before(w.StartedAt) {
			t.Errorf("stopped worker %+v", w)
		}
	})
}

// TestEngineUnavailable needs no engine: DOCKER_HOST names a socket that
// does not exist.
func TestEngineUnavailable(t *testing.T) {
	sock := filepath.Join(t.TempDir(), "nonexistent.sock")
	t.Setenv("DOCKER_HOST", "unix://"+sock)
	e := newEngine(t)
	ctx := t.Context()

	err := e.Ping(ctx)
	wantCode(t, err, events.CodeDockerUnavailable)
	ee := events.AsError(err)
	if !strings.Contains(ee.Hint, "DOCKER_HOST") || !strings.Contains(ee.Message, sock) {
		t.Errorf("error %v", ee)
	}
	_, err = e.Containers(ctx, "proj")
	wantCode(t, err, events.CodeDockerUnavailable)
	err = e.Logs(ctx, "abc", berth.LogOptions{}, func(events.LogLine) error { return nil })
	wantCode(t, err, events.CodeDockerUnavailable)
	err = e.Logs(ctx, "abc", berth.LogOptions{Follow: true}, func(events.LogLine) error { return nil })
	wantCode(t, err, events.CodeDockerUnavailable)
}

// The first requests of a new Engine, side by side (a worker's first
// status commands), do not race on the API version: -race sees any.
func TestFirstRequestsSideBySide(t *testing.T) {
	e := newEngine(t)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	errs := make(chan error, 8)
	for range 8 {
		go func() {
			_, err := e.Containers(ctx, "btnone")
			errs <- err
		}()
	}
	for range 8 {
		if err := <-errs; err != nil {
			t.Fatal(err)
		}
	}
}
