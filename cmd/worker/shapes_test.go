package main

import (
	"context"
	"encoding/json"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/docker/docker/api/types/container"
	"github.com/docker/docker/api/types/filters"
	"github.com/docker/docker/client"
	"github.com/redis/go-redis/v9"

	"github.com/berth-ops/berth/events"
	"github.com/berth-ops/berth/handlers"
	"github.com/berth-ops/berth/internal/testenv"
	"github.com/berth-ops/berth/store"
)

// forFixtures runs f on each sample project (the minimal sample app and
// the real-world one), side by side.
func forFixtures(t *testing.T, f func(t *testing.T, fx testenv.Fixture)) {
	for _, fx := range []testenv.Fixture{testenv.SampleFixture, testenv.RealFixture} {
		t.Run(fx.String(), func(t *testing.T) {
			t.Parallel()
			f(t, fx)
		})
	}
}

// deployNow plans and confirms a deploy, returning its result.
func deployNow(t *testing.T, h *harness, project string) events.Event {
	t.Helper()
	cd, _ := plan(t, h, project, events.ActionDeploy, "test:alice", nil)
	res, _ := confirm(t, h, project, events.ActionDeploy, "test:alice", cd.Token)
	return res
}

// mutateNow plans and confirms a mutation.
func mutateNow(t *testing.T, h *harness, project, action string, a any) events.Event {
	t.Helper()
	cd, _ := plan(t, h, project, action, "test:alice", a)
	res, _ := confirm(t, h, project, action, "test:alice", cd.Token)
	return res
}

// containersOf lists the containers of a compose project, by service.
func containersOf(t *testing.T, project string) map[string][]container.Summary {
	t.Helper()
	cli, err := client.NewClientWithOpts(client.FromEnv, client.WithAPIVersionNegotiation())
	if err != nil {
		t.Fatal(err)
	}
	defer cli.Close()
	list, err := cli.ContainerList(t.Context(), container.ListOptions{All: true,
		Filters: filters.NewArgs(filters.Arg("label", "com.docker.compose.project="+project))})
	if err != nil {
		t.Fatal(err)
	}
	out := map[string][]container.Summary{}
	for _, c := range list {
		svc := c.Labels["com.docker.compose.service"]
		out[svc] = append(out[svc], c)
	}
	return out
}

// servicesIn is the sorted list of services with a container.
func servicesIn(cs map[string][]container.Summary) []string {
	var out []string
	for svc := range cs {
		out = append(out, svc)
	}
	slices.Sort(out)
	return out
}

// addService appends a service to a workspace compose file.
func addService(t *testing.T, d *deployable, file, yaml string) string {
	t.Helper()
	before := d.read(t, file)
	after := strings.Replace(before, "\nservices:\n", "\nservices:\n"+yaml, 1)
	if after == before {
		t.Fatalf("no services: section in %s", file)
	}
	d.write(t, file, after)
	return before
}

// extraService is a service a release adds, with a setting that widens
// its reach (the Docker socket mounted: root on the host; privileged: true
// is refused by this machine's sandboxed engine): a rollback must leave
// nothing of it.
const extraService = `  extra:
    image: ${COMPOSE_PROJECT_NAME}-app:latest
    pull_policy: never
    command: ["worker"]
    volumes:
      - /var/run/docker.sock:/var/run/docker.sock:ro
`

// TestDeployLifecycleOnBothFixtures runs deploy, a failed deploy that adds
// a service (rolled back automatically), rollback, restart, stop, start,
// a release that adds a service and one that removes one, on the minimal
// sample app and on a project shaped as users run them (one-shot
// migrations and seeders, a worker without healthcheck that restarts
// unless stopped, a named volume, an env_file, two compose files,
// production-only files).
func TestDeployLifecycleOnBothFixtures(t *testing.T) {
	forFixtures(t, func(t *testing.T, fx testenv.Fixture) {
		h := newHarness(t, filepath.Clean(tempRoot(t)))
		d := setupFixture(t, h, "po", fx, map[string]any{"stabilize_s": 1})
		real := fx == testenv.RealFixture
		composeFile := d.sample.Files[0]

		// Deploy a new version.
		d.write(t, "version.txt", "2.0.0\n")
		res := deployNow(t, h, "po")
		mustOK(t, res)
		dr := decodeData[handlers.DeployResult](t, res)
		if v := d.sample.Served(t); v != "2.0.0" {
			t.Fatalf("serving %q after deploying 2.0.0", v)
		}
		if real {
			readyBy := map[string]string{}
			for _, s := range dr.Services {
				readyBy[s.Service] = s.ReadyBy
			}
			if readyBy["migrate"] != "completed" || readyBy["seed"] != "completed" || readyBy["web"] != "healthy" || readyBy["worker"] != "stable" {
				t.Fatalf("how the services came up: %v", readyBy)
			}
			if _, data := d.sample.HTTP(t, "/data"); !strings.Contains(data, "migrated to 1.0.0") || !strings.Contains(data, "migrated to 2.0.0") {
				t.Fatalf("the data volume after the deploy: %q", data)
			}
		}
		d.checkUntouched(t)

		// A release that adds a (privileged) service and fails is rolled
		// back: the files, the images, and nothing left of the new service.
		good := addService(t, d, composeFile, extraService)
		failing := "web"
		if real {
			d.write(t, composeFile, strings.Replace(d.read(t, composeFile), `FAIL_MIGRATE: "${FAIL_MIGRATE:-0}"`, `FAIL_MIGRATE: "1"`, 1))
			failing = "migrate"
		} else {
			d.write(t, composeFile, strings.Replace(d.read(t, composeFile), `FAIL_HEALTH: "${FAIL_HEALTH:-0}"`, `FAIL_HEALTH: "1"`, 1))
		}
		d.write(t, "version.txt", "3.0.0\n")
		res = deployNow(t, h, "po")
		if errCode(res) != "health_failed" || res.Error.Data["rolled_back"] != true {
			t.Fatalf("failing release: %+v %s", res.Error, res.Data)
		}
		fr := decodeData[handlers.DeployResult](t, res)
		if fr.Failure == nil || fr.Failure.Service != failing || len(fr.Failure.LastLogs) == 0 {
			t.Fatalf("failure details: %s", res.Data)
		}
		if real && !strings.Contains(strings.Join(fr.Failure.LastLogs, "\n"), `relation "users" already exists`) {
			t.Fatalf("the failing migration's last log lines: %v", fr.Failure.LastLogs)
		}
		if v := d.sample.Served(t); v != "2.0.0" {
			t.Fatalf("serving %q after the rolled-back release", v)
		}
		if cs := containersOf(t, d.sample.Project); len(cs["extra"]) > 0 {
			t.Fatalf("the rolled-back release left its added service: %v", servicesIn(cs))
		}
		d.write(t, composeFile, good)
		d.write(t, "version.txt", "2.0.0\n")
		d.checkUntouched(t)

		// Restart: the long-running services, not the one-shots.
		res = mutateNow(t, h, "po", events.ActionRestart, nil)
		mustOK(t, res)
		rr := decodeData[handlers.RestartResult](t, res)
		var restarted []string
		for _, s := range rr.Services {
			restarted = append(restarted, s.Service)
		}
		if want := strings.Join(fx.LongRunning(), ","); strings.Join(restarted, ",") != want {
			t.Fatalf("restart restarted %v, want %s", restarted, want)
		}

		// Stop, then a deploy without changes says what is down, then start.
		res = mutateNow(t, h, "po", events.ActionStop, nil)
		mustOK(t, res)
		for svc, cs := range containersOf(t, d.sample.Project) {
			for _, c := range cs {
				if c.State == "running" {
					t.Fatalf("%s still running after stop", svc)
				}
			}
		}
		res, _ = h.send("po", events.ActionDeploy, events.Command{User: "test:alice"})
		mustOK(t, res)
		if nd := decodeData[handlers.DeployResult](t, res); nd.Changed || !slices.ContainsFunc(nd.NotUp, func(s string) bool { return strings.HasPrefix(s, "web ") }) ||
			!strings.Contains(nd.Message, "start") {
			t.Fatalf("a deploy without changes while stopped: %+v", nd)
		}
		res, _ = h.send("po", events.ActionStart, events.Command{User: "test:alice"})
		mustOK(t, res)
		if v := d.sample.Served(t); v != "2.0.0" {
			t.Fatalf("serving %q after start", v)
		}
		// The same after `docker compose down`: every container is gone.
		d.sample.Compose(t, "down")
		res, _ = h.send("po", events.ActionStart, events.Command{User: "test:alice"})
		mustOK(t, res)
		if sr := decodeData[handlers.StartResult](t, res); !slices.Contains(sr.Started, "web") {
			t.Fatalf("start after down: %s", res.Data)
		}
		if v := d.sample.Served(t); v != "2.0.0" {
			t.Fatalf("serving %q after start from down", v)
		}

		// A release that adds a service, then a rollback of it.
		good = addService(t, d, composeFile, extraService)
		mustOK(t, deployNow(t, h, "po"))
		if cs := containersOf(t, d.sample.Project); len(cs["extra"]) != 1 || cs["extra"][0].State != "running" {
			t.Fatalf("the added service does not run: %v", servicesIn(cs))
		}
		res, _ = h.send("po", events.ActionConfigGet, events.Command{})
		if !strings.Contains(string(res.Data), `"extra"`) {
			t.Fatalf("the configuration does not list the added service: %s", res.Data)
		}
		mustOK(t, mutateNow(t, h, "po", events.ActionRollback, nil))
		if cs := containersOf(t, d.sample.Project); len(cs["extra"]) > 0 {
			t.Fatalf("rollback left the service the release added: %v", servicesIn(cs))
		}
		d.write(t, composeFile, good)

		// A release that removes a service, then a rollback brings it back.
		for _, f := range d.sample.Files {
			d.write(t, f, withoutService(d.read(t, f), "worker"))
		}
		res = deployNow(t, h, "po")
		mustOK(t, res)
		if cs := containersOf(t, d.sample.Project); len(cs["worker"]) > 0 {
			t.Fatalf("the removed service still has containers: %v", servicesIn(cs))
		}
		mustOK(t, mutateNow(t, h, "po", events.ActionRollback, nil))
		if cs := containersOf(t, d.sample.Project); len(cs["worker"]) != 1 || cs["worker"][0].State != "running" {
			t.Fatalf("rollback did not bring the removed service back: %v", servicesIn(cs))
		}
		if real {
			if _, data := d.sample.HTTP(t, "/data"); !strings.Contains(data, "migrated to 1.0.0") {
				t.Fatalf("the data volume lost its data: %q", data)
			}
		}
		d.checkUntouched(t)
		checkSettled(t, h, d, "po")
	})
}

// withoutService removes a service's block from a compose file (two-space
// indentation, as the fixtures are written).
func withoutService(yaml, svc string) string {
	var out []string
	skip := false
	for _, line := range strings.Split(yaml, "\n") {
		indent := len(line) - len(strings.TrimLeft(line, " "))
		switch {
		case line == "  "+svc+":":
			skip = true
			continue
		case skip && strings.TrimSpace(line) != "" && indent <= 2:
			skip = false
		}
		if !skip {
			out = append(out, line)
		}
	}
	return strings.Join(out, "\n")
}

// checkSettled asserts what every finished operation leaves: no journal,
// a free lock, and image tags that match the running containers.
func checkSettled(t *testing.T, h *harness, d *deployable, project string) {
	t.Helper()
	if js, _ := filepath.Glob(filepath.Join(h.cfg.StateDir, "targets", "*", "journal.json")); len(js) > 0 {
		t.Fatalf("journals left: %v", js)
	}
	if n := redisExists(t, h.cfg.RedisURL, store.NewKeys("berth:").Lock(project)); n != 0 {
		t.Fatal("the project lock is still held")
	}
	cli, err := client.NewClientWithOpts(client.FromEnv, client.WithAPIVersionNegotiation())
	if err != nil {
		t.Fatal(err)
	}
	defer cli.Close()
	img, err := cli.ImageInspect(t.Context(), d.sample.Project+"-app:latest")
	if err != nil {
		t.Fatal(err)
	}
	for svc, cs := range containersOf(t, d.sample.Project) {
		if svc == "proxy" {
			continue // the proxy fixture's own image
		}
		if d.sample.Fixture == testenv.ProxyFixture && len(cs) != 1 {
			t.Fatalf("%s has %d containers, not the 1 it is scaled to", svc, len(cs))
		}
		for _, c := range cs {
			if d.sample.Fixture == testenv.ProxyFixture && c.State != "running" {
				t.Fatalf("%s container %s is %s", svc, c.ID[:12], c.State)
			}
			if c.ImageID != img.ID {
				t.Fatalf("%s runs image %s, but %s-app:latest is %s", svc, c.ImageID, d.sample.Project, img.ID)
			}
		}
	}
}

// TestProjectsOwnTheirProduction: two projects cannot share a production
// directory or a compose project.
func TestProjectsOwnTheirProduction(t *testing.T) {
	h := newHarness(t, filepath.Clean(tempRoot(t)))
	d := setupDeployable(t, h, "po", nil)
	other := t.TempDir()
	if err := os.WriteFile(filepath.Join(other, "compose.yml"), []byte("services:\n  x:\n    image: scratch\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	for name, cfg := range map[string]map[string]any{
		"same production":      {"workspace": other, "production": d.sample.Dir, "compose_project": "another"},
		"same compose project": {"workspace": d.ws, "production": other, "compose_project": d.sample.Project},
	} {
		res, _ := h.send("pz", events.ActionConfigSet, events.Command{User: "test:admin", Args: args(t, cfg)})
		if errCode(res) != "conflict" || !strings.Contains(res.Error.Message, "po") {
			t.Errorf("%s: want a conflict naming po, got %+v", name, res.Error)
		}
	}
	res, _ := h.send("pz", events.ActionConfigSet, events.Command{User: "test:admin", Args: args(t, map[string]any{
		"workspace": d.ws, "production": other, "compose_project": "pz-own"})})
	mustOK(t, res)
	// Once po is deleted, its directory is free.
	cd, _ := plan(t, h, "po", events.ActionConfigDelete, "test:admin", nil)
	res, _ = confirm(t, h, "po", events.ActionConfigDelete, "test:admin", cd.Token)
	mustOK(t, res)
	res, _ = h.send("pz", events.ActionConfigSet, events.Command{User: "test:admin", Args: args(t, map[string]any{
		"workspace": other, "production": d.sample.Dir, "compose_project": d.sample.Project})})
	mustOK(t, res)
}

// TestShutdownGraceDuringBuild: SIGTERM while a deploy builds, with a
// grace period shorter than the build: the build is stopped, production
// rolled back, and the request gets one timeout result from this worker,
// with its real times; the next worker does not run it again.
func TestShutdownGraceDuringBuild(t *testing.T) {
	h := newHarness(t, filepath.Clean(tempRoot(t)))
	h.stop()
	p := h.startProcess()
	d := setupDeployable(t, h, "po", map[string]any{"stabilize_s": 1})
	oldTree := treeHash(t, d.sample.Dir)
	d.write(t, "version.txt", "2.0.0\n")
	cd, _ := plan(t, h, "po", events.ActionDeploy, "test:alice", nil)
	p.kill(t)
	p = h.startProcess("--grace", "1s", "--test-pause-at", "build", "--test-pause-for", "5m")
	id := "grace-build"
	evs := h.subscribe("po", id)
	start := time.Now()
	h.publish("po", events.ActionDeploy, events.Command{ID: id, User: "test:alice", Confirm: cd.Token})
	p.waitFor(t, "pausing (test hook)", 2*time.Minute)
	if err := p.cmd.Process.Signal(os.Interrupt); err != nil {
		t.Fatal(err)
	}
	res, _ := evs.result(t, 3*time.Minute)
	select {
	case <-p.done:
	case <-time.After(time.Minute):
		t.Fatal("the worker did not stop")
	}
	if errCode(res) != "timeout" || res.Error.Data["rolled_back"] != true || !strings.Contains(res.Error.Message, "grace period") {
		t.Fatalf("result after the grace period: %+v", res.Error)
	}
	if res.DurationMS == nil || *res.DurationMS <= 0 || time.Duration(*res.DurationMS)*time.Millisecond > time.Since(start) {
		t.Fatalf("result duration %v", res.DurationMS)
	}
	if treeHash(t, d.sample.Dir) != oldTree {
		t.Fatal("production is not the old tree")
	}
	// The next worker answers nothing new: the command was acknowledged.
	p = h.startProcess()
	time.Sleep(h.cfg.AckWait + 2*time.Second)
	if n := h.storedResults("po", id); n != 1 {
		t.Fatalf("%d results stored, want 1", n)
	}
	res, _ = h.send("po", events.ActionHistory, events.Command{})
	var hist struct {
		Entries []struct {
			RequestID string `json:"request_id"`
			ErrorCode string `json:"error_code"`
		} `json:"entries"`
	}
	_ = json.Unmarshal(res.Data, &hist)
	found := 0
	for _, e := range hist.Entries {
		if e.RequestID == id && e.ErrorCode == "timeout" {
			found++
		}
	}
	if found != 1 {
		t.Fatalf("history holds the request %d times: %+v", found, hist.Entries)
	}
	if v := served(t, h, "po"); v != "1.0.0" {
		t.Fatalf("serving %q", v)
	}
	checkSettled(t, h, d, "po")
	_ = p
}

// TestDockerOutageDuringUp: the engine becomes unreachable while a deploy
// runs up, for longer than the worker waits; the deploy answers
// docker_unavailable with its rollback pending, the project stays locked,
// and the same worker (no restart) finishes the rollback once the engine
// is back.
func TestDockerOutageDuringUp(t *testing.T) {
	h := newHarness(t, filepath.Clean(tempRoot(t)))
	h.stop()
	proxy := newDockerProxy(t, "/var/run/docker.sock")
	if host := os.Getenv("DOCKER_HOST"); strings.HasPrefix(host, "unix://") {
		proxy.target = strings.TrimPrefix(host, "unix://")
	}
	proxy.open()
	env := []string{"DOCKER_HOST=unix://" + proxy.path}
	p := h.startProcessEnv(env)
	d := setupDeployable(t, h, "po", map[string]any{"stabilize_s": 1})
	oldTree := treeHash(t, d.sample.Dir)
	d.write(t, "version.txt", "2.0.0\n")
	cd, _ := plan(t, h, "po", events.ActionDeploy, "test:alice", nil)
	p.kill(t)
	p = h.startProcessEnv(env, "--test-pause-at", "up", "--test-pause-for", "3s", "--undo-wait", "2s")
	id := "outage-up"
	evs := h.subscribe("po", id)
	h.publish("po", events.ActionDeploy, events.Command{ID: id, User: "test:alice", Confirm: cd.Token})
	p.waitFor(t, "pausing (test hook)", 2*time.Minute)
	proxy.close()
	res, _ := evs.result(t, 2*time.Minute)
	if errCode(res) != "docker_unavailable" || res.Error.Data["rollback_pending"] != true {
		t.Fatalf("result while the engine is away: %+v", res.Error)
	}
	// The lock is held: another mutation gets conflict.
	if n := redisExists(t, h.cfg.RedisURL, store.NewKeys("berth:").Lock("po")); n != 1 {
		t.Fatal("the lock was released with the rollback pending")
	}
	time.Sleep(5 * time.Second)
	proxy.open()
	deadline := time.Now().Add(2 * time.Minute)
	for {
		js, _ := filepath.Glob(filepath.Join(h.cfg.StateDir, "targets", "*", "journal.json"))
		if len(js) == 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("the rollback was not finished after the engine came back:\n%s", p.output())
		}
		time.Sleep(200 * time.Millisecond)
	}
	if treeHash(t, d.sample.Dir) != oldTree {
		t.Fatal("production is not the old tree")
	}
	if v := served(t, h, "po"); v != "1.0.0" {
		t.Fatalf("serving %q", v)
	}
	cs := containersOf(t, d.sample.Project)
	if len(cs["web"]) != 1 || len(cs["worker"]) != 1 {
		t.Fatalf("containers after the rollback: %v", servicesIn(cs))
	}
	checkSettled(t, h, d, "po")
	if !strings.Contains(p.output(), "finished an interrupted operation") {
		t.Fatalf("the worker did not say it finished the rollback:\n%s", p.output())
	}
}

// redisExists counts which of keys exist.
func redisExists(t *testing.T, url string, keys ...string) int64 {
	t.Helper()
	rdb := redisClient(t, url)
	defer rdb.Close()
	ctx, cancel := context.WithTimeout(t.Context(), 5*time.Second)
	defer cancel()
	n, err := rdb.Exists(ctx, keys...).Result()
	if err != nil {
		t.Fatal(err)
	}
	return n
}

func redisClient(t *testing.T, url string) *redis.Client {
	t.Helper()
	opts, err := redis.ParseURL(url)
	if err != nil {
		t.Fatal(err)
	}
	return redis.NewClient(opts)
}
