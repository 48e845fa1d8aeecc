package main

import (
	"encoding/json"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/berth-ops/berth/events"
	"github.com/berth-ops/berth/handlers"
	"github.com/berth-ops/berth/internal/testenv"
)

// TestStartFirstRollouts deploys the proxy fixture (web start-first
// behind a proxy that resolves it per request) while a probe sends about
// 50 requests a second through the proxy, and asserts that no request
// fails across a start-first deploy, a start-first deploy whose new
// release never becomes healthy, and a rollback; that web ends at its
// configured scale with only the serving release's container; that the
// proxy was never recreated; and that a later plain `docker compose up -d`
// changes nothing.
func TestStartFirstRollouts(t *testing.T) {
	h := newHarness(t, filepath.Clean(tempRoot(t)))
	d := setupFixture(t, h, "po", testenv.ProxyFixture, map[string]any{"stabilize_s": 1, "drain_s": 1})
	ids := func(svc string) []string { return serviceIDs(t, d, svc) }
	proxy := ids("proxy")
	probe, err := testenv.StartProbe(d.sample.Addr(t), 50, 5*time.Minute)
	if err != nil {
		t.Fatal(err)
	}
	defer probe.Stop()

	// The plan says how each service is replaced.
	d.write(t, "version.txt", "2.0.0\n")
	cd, _ := plan(t, h, "po", events.ActionDeploy, "test:alice", nil)
	raw, _ := json.Marshal(cd.Plan)
	var dp handlers.DeployPlan
	if err := json.Unmarshal(raw, &dp); err != nil {
		t.Fatal(err)
	}
	if dp.Rollout == nil || !slices.Equal(dp.Rollout.StartFirst, []string{"web"}) || !slices.Equal(dp.Rollout.Recreate, []string{"proxy"}) {
		t.Fatalf("the plan's rollout: %+v", dp.Rollout)
	}

	// A start-first deploy.
	old := ids("web")
	res, evs := confirm(t, h, "po", events.ActionDeploy, "test:alice", cd.Token)
	mustOK(t, res)
	if dr := decodeData[handlers.DeployResult](t, res); len(dr.Rollouts) != 1 || dr.Rollouts[0].Service != "web" || dr.Rollouts[0].Replaced != 1 ||
		dr.Rollouts[0].ReadyAfterMS <= 0 || dr.Rollouts[0].TotalMS < dr.Rollouts[0].ReadyAfterMS {
		t.Fatalf("the deploy result's rollouts: %+v", dr.Rollouts)
	}
	if v := d.sample.Served(t); v != "2.0.0" {
		t.Fatalf("serving %q after deploying 2.0.0", v)
	}
	now := ids("web")
	if len(now) != 1 || slices.Contains(old, now[0]) {
		t.Fatalf("web containers %v after the rollout, %v before", now, old)
	}
	if !slices.Equal(ids("proxy"), proxy) {
		for _, e := range evs {
			t.Log(e.Kind, e.Step, e.Message)
			for _, l := range e.Lines {
				t.Log("  ", l.Line)
			}
		}
		t.Fatal("the proxy was recreated")
	}
	var steps []string
	for _, e := range evs {
		if e.Kind == events.KindProgress && strings.HasPrefix(e.Message, "web: ") {
			steps = append(steps, e.Message)
		}
	}
	if len(steps) < 3 || !strings.Contains(strings.Join(steps, "\n"), "ready after") || !strings.Contains(steps[len(steps)-1], "removed") {
		t.Fatalf("the rollout's progress: %q", steps)
	}
	// Compose agrees: a plain up changes nothing.
	d.sample.Compose(t, "up", "-d")
	if got := ids("web"); !slices.Equal(got, now) {
		t.Fatalf("a plain compose up replaced web: %v, was %v", got, now)
	}

	// A release whose web never becomes healthy: the old one keeps serving.
	compose := readFile(t, filepath.Join(d.ws, "compose.yml"))
	d.write(t, "compose.yml", strings.Replace(compose, `FAIL_HEALTH: "${FAIL_HEALTH:-0}"`, `FAIL_HEALTH: "1"`, 1))
	d.write(t, "version.txt", "3.0.0\n")
	res = deployNow(t, h, "po")
	if errCode(res) != "health_failed" {
		t.Fatalf("a deploy of an unhealthy release: %+v", res.Error)
	}
	if got := ids("web"); !slices.Equal(got, now) {
		t.Fatalf("after the failed rollout web runs %v, not the release that served (%v)", got, now)
	}
	if v := d.sample.Served(t); v != "2.0.0" {
		t.Fatalf("serving %q after a failed deploy of 3.0.0", v)
	}

	// A good release, then a rollback to 2.0.0, both start-first.
	d.write(t, "compose.yml", compose)
	mustOK(t, deployNow(t, h, "po"))
	if v := d.sample.Served(t); v != "3.0.0" {
		t.Fatalf("serving %q after deploying 3.0.0", v)
	}
	cd, _ = plan(t, h, "po", events.ActionRollback, "test:alice", nil)
	res, _ = confirm(t, h, "po", events.ActionRollback, "test:alice", cd.Token)
	mustOK(t, res)
	if v := d.sample.Served(t); v != "2.0.0" {
		t.Fatalf("serving %q after the rollback", v)
	}
	if got := ids("web"); len(got) != 1 {
		t.Fatalf("web runs %v after the rollback", got)
	}
	if !slices.Equal(ids("proxy"), proxy) {
		t.Fatal("the proxy was recreated")
	}

	// A restart asked to roll out start-first replaces web's container.
	before := ids("web")
	cd, _ = plan(t, h, "po", events.ActionRestart, "test:alice", map[string]any{"services": []string{"web"}, "start_first": true})
	raw, _ = json.Marshal(cd.Plan)
	var rp handlers.RestartPlan
	if err := json.Unmarshal(raw, &rp); err != nil || !slices.Equal(rp.StartFirst, []string{"web"}) {
		t.Fatalf("the restart plan: %s, %v", raw, err)
	}
	res, _ = confirm(t, h, "po", events.ActionRestart, "test:alice", cd.Token)
	mustOK(t, res)
	if rr := decodeData[handlers.RestartResult](t, res); len(rr.Rollouts) != 1 || rr.DowntimeS != 0 {
		t.Fatalf("the restart result: %+v", rr)
	}
	if got := ids("web"); len(got) != 1 || slices.Equal(got, before) {
		t.Fatalf("web runs %v after a start-first restart, %v before", got, before)
	}
	// A service that cannot roll out is refused, with why.
	res, _ = h.send("po", events.ActionRestart, events.Command{User: "test:alice", Args: args(t, map[string]any{"services": []string{"proxy"}, "start_first": true})})
	if errCode(res) != "bad_request" {
		t.Fatalf("a start-first restart of proxy: %+v", res.Error)
	}

	r := probe.Stop()
	t.Logf("probe: %d requests, %d failed, served %v", r.Sent, r.Failed, r.Bodies)
	if r.Failed > 0 {
		t.Fatalf("%d of %d requests failed during start-first rollouts: %v", r.Failed, r.Sent, r.Failures)
	}
	if r.Sent < 200 {
		t.Fatalf("only %d requests were sent", r.Sent)
	}
}

// TestRolloutKilledWithBothReleasesRunning kills the worker (SIGKILL)
// while a start-first rollout has the new container ready beside the old
// one, and checks that the next worker puts the old release back: one web
// container, the old one, on its network and serving through the proxy,
// the new one gone, and no request of the probe failed.
func TestRolloutKilledWithBothReleasesRunning(t *testing.T) {
	h := newHarness(t, filepath.Clean(tempRoot(t)))
	h.stop()
	p := h.startProcess()
	d := setupFixture(t, h, "po", testenv.ProxyFixture, map[string]any{"stabilize_s": 1, "drain_s": 1})
	webIDs := func() []string { return serviceIDs(t, d, "web") }
	old := webIDs()
	probe, err := testenv.StartProbe(d.sample.Addr(t), 50, 5*time.Minute)
	if err != nil {
		t.Fatal(err)
	}
	defer probe.Stop()

	d.write(t, "version.txt", "2.0.0\n")
	cd, _ := plan(t, h, "po", events.ActionDeploy, "test:alice", nil)
	p.kill(t)
	p = h.startProcess("--test-pause-at", "rollout", "--test-pause-for", "5m")
	evs := h.subscribe("po", "roll-kill")
	h.publish("po", events.ActionDeploy, events.Command{ID: "roll-kill", User: "test:alice", Confirm: cd.Token})
	p.waitFor(t, "pausing (test hook)", 2*time.Minute)
	if both := webIDs(); len(both) != 2 {
		t.Fatalf("paused in the rollout with web containers %v", both)
	}
	p.kill(t)

	p = h.startProcess()
	res, _ := evs.result(t, 3*time.Minute)
	if errCode(res) != "internal" || res.Error.Data["rolled_back"] != true {
		t.Fatalf("the killed deploy's result: %+v", res.Error)
	}
	if got := webIDs(); !slices.Equal(got, old) {
		t.Fatalf("web containers %v after recovery, want the old %v", got, old)
	}
	if v := d.sample.Served(t); v != "1.0.0" {
		t.Fatalf("serving %q after the rollout was undone", v)
	}
	checkSettled(t, h, d, "po")
	r := probe.Stop()
	t.Logf("probe: %d requests, %d failed, served %v", r.Sent, r.Failed, r.Bodies)
	if r.Failed > 0 {
		t.Fatalf("%d of %d requests failed: %v", r.Failed, r.Sent, r.Failures)
	}
}

// serviceIDs are the IDs of a service's containers, whatever their state,
// sorted.
func serviceIDs(t *testing.T, d *deployable, svc string) []string {
	t.Helper()
	out := strings.Fields(d.sample.Compose(t, "ps", "-a", "-q", "--no-trunc", svc))
	slices.Sort(out)
	return out
}
