package testenv

import (
	"context"
	"maps"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/docker/docker/api/types/container"
	"github.com/docker/docker/api/types/volume"
)

// TestFixtures brings up each fixture, checks what it serves and runs,
// leaves behind what a test and the worker make of a project (a backup
// tag, a container of a service the compose files no longer have, a
// volume), and checks that the cleanup removes all of it.
func TestFixtures(t *testing.T) {
	Integration(t)
	for _, f := range []Fixture{SampleFixture, RealFixture} {
		t.Run(f.String(), func(t *testing.T) {
			t.Parallel()
			var project string
			t.Run("up", func(t *testing.T) {
				start := time.Now()
				s := SampleApp(t, WithFixture(f))
				t.Logf("%s: SampleApp took %v", f, time.Since(start).Round(time.Millisecond))
				project = s.Project
				checkFixture(t, s)
				leaveDebris(t, s)
			})
			if project == "" {
				return // skipped or failed before the project existed
			}
			ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
			defer cancel()
			cli, err := dockerClient()
			if err != nil {
				t.Fatal(err)
			}
			defer cli.Close()
			left, err := projectLeftovers(ctx, cli, project)
			if err != nil {
				t.Fatal(err)
			}
			if len(left) > 0 {
				t.Errorf("after the cleanup, project %s left:\n%s", project, strings.Join(left, "\n"))
			}
		})
	}
}

// checkFixture checks a fixture that SampleApp brought up.
func checkFixture(t *testing.T, s *Sample) {
	t.Helper()
	if got := s.Served(t); got != "1.0.0" {
		t.Errorf("web serves version %q, want 1.0.0", got)
	}

	states := map[string]psEntry{}
	for _, c := range s.ps(t) {
		states[c.Service] = c
	}
	if got, want := slices.Sorted(maps.Keys(states)), slices.Sorted(slices.Values(s.Fixture.Services())); !slices.Equal(got, want) {
		t.Errorf("services with containers: %v, want %v", got, want)
	}
	for _, svc := range s.Fixture.OneShots() {
		if c := states[svc]; c.State != "exited" || c.ExitCode != 0 {
			t.Errorf("one-shot %s: state %s, exit code %d, want exited 0", svc, c.State, c.ExitCode)
		}
	}
	for _, svc := range s.Fixture.LongRunning() {
		if c := states[svc]; c.State != "running" {
			t.Errorf("service %s: state %s (%s), want running", svc, c.State, c.Status)
		}
	}
	if c := states["web"]; c.Health != "healthy" {
		t.Errorf("web: health %q, want healthy", c.Health)
	}

	status, env := s.HTTP(t, "/env")
	if status != http.StatusOK {
		t.Errorf("GET /env: status %d", status)
	}
	status, data := s.HTTP(t, "/data")

	switch s.Fixture {
	case SampleFixture:
		if want := "GREETING=\nAPP_ENV=\n"; env != want {
			t.Errorf("GET /env: %q, want %q", env, want)
		}
		if status != http.StatusNotFound {
			t.Errorf("GET /data: status %d, want 404 (no volume, no migration)", status)
		}
	case RealFixture:
		if want := "GREETING=hello from app.env\nAPP_ENV=production\n"; env != want {
			t.Errorf("GET /env: %q, want %q (env_file and compose.prod.yml)", env, want)
		}
		if status != http.StatusOK || !strings.Contains(data, "migrated to 1.0.0\n") {
			t.Errorf("GET /data: status %d, %q; want 200 with \"migrated to 1.0.0\"", status, data)
		}
		if !slices.Equal(s.Files, []string{"compose.yml", "compose.prod.yml"}) {
			t.Errorf("Files = %v", s.Files)
		}
		for _, p := range s.Fixture.ProductionOnly() {
			if _, err := os.Stat(filepath.Join(s.Dir, filepath.FromSlash(p))); err != nil {
				t.Errorf("production-only file: %v", err)
			}
		}
		ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
		defer cancel()
		cli, err := dockerClient()
		if err != nil {
			t.Fatal(err)
		}
		defer cli.Close()
		for _, v := range s.Fixture.Volumes() {
			if _, err := cli.VolumeInspect(ctx, s.Project+"_"+v); err != nil {
				t.Errorf("volume %s: %v", v, err)
			}
		}
	}
}

// leaveDebris makes what down does not remove: a backup tag as the worker
// makes them, a container of a service that is not in the compose files
// (one a rollback dropped), and a volume labelled with the project.
func leaveDebris(t *testing.T, s *Sample) {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
	defer cancel()
	cli, err := dockerClient()
	if err != nil {
		t.Fatal(err)
	}
	defer cli.Close()
	img := s.Project + "-app:latest"
	if err := cli.ImageTag(ctx, img, "berth-release/"+s.Project+":web-20261204t000000000z-test"); err != nil {
		t.Fatal(err)
	}
	labels := map[string]string{projectLabel: s.Project, "com.docker.compose.service": "dropped"}
	if _, err := cli.ContainerCreate(ctx, &container.Config{Image: img, Cmd: []string{"worker"}, Labels: labels},
		nil, nil, nil, s.Project+"-dropped-1"); err != nil {
		t.Fatal(err)
	}
	if _, err := cli.VolumeCreate(ctx, volume.CreateOptions{Name: s.Project + "_dropped", Labels: map[string]string{projectLabel: s.Project}}); err != nil {
		t.Fatal(err)
	}
}

// TestWaitReadyFailures checks that the waiter fails at once, not at its
// deadline, when a one-shot fails: migrate, which web waits for (then
// `up` fails too), and seed, which nothing waits for (`up -d` succeeds).
func TestWaitReadyFailures(t *testing.T) {
	Integration(t)
	for _, tc := range []struct{ env, service, exit string }{
		{"FAIL_MIGRATE", "migrate", "code 1"},
		{"FAIL_SEED", "seed", "code 2"},
	} {
		t.Run(tc.service, func(t *testing.T) {
			t.Parallel()
			s := SampleApp(t, WithFixture(RealFixture), SampleEnv(tc.env, "1"), SampleNoUp())
			ctx, cancel := context.WithTimeout(t.Context(), upTimeout)
			defer cancel()
			out, upErr := s.run(ctx, "up", "-d", "--build")
			if wantFail := tc.service == "migrate"; (upErr != nil) != wantFail {
				t.Errorf("up -d: error %v, want an error: %v\n%s", upErr, wantFail, out)
			}
			start := time.Now()
			err := s.waitReady(ctx, readyTimeout)
			took := time.Since(start)
			if err == nil || !strings.Contains(err.Error(), "service "+tc.service+")") || !strings.Contains(err.Error(), tc.exit) {
				t.Fatalf("waitReady: %v, want an error on %s exiting with %s", err, tc.service, tc.exit)
			}
			if took > 10*time.Second {
				t.Errorf("waitReady took %v to fail", took)
			}
			t.Logf("waitReady failed in %v: %v", took.Round(time.Millisecond), err)
		})
	}
}

// TestRealAppVersion checks SampleVersion with the real app: the version
// is served and migrated to.
func TestRealAppVersion(t *testing.T) {
	s := SampleApp(t, WithFixture(RealFixture), SampleVersion("2.3.4"))
	if got := s.Served(t); got != "2.3.4" {
		t.Errorf("served %q, want 2.3.4", got)
	}
	if status, data := s.HTTP(t, "/data"); status != http.StatusOK || data != "migrated to 2.3.4\n" {
		t.Errorf("GET /data: %d %q", status, data)
	}
}

// ps returns the project's containers.
func (s *Sample) ps(t *testing.T) []psEntry {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
	defer cancel()
	out, err := s.output(ctx, "ps", "-a", "--format", "json")
	if err != nil {
		t.Fatal(err)
	}
	ps, err := parsePS(out)
	if err != nil {
		t.Fatal(err)
	}
	return ps
}
