package main

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/google/uuid"

	"github.com/berth-ops/berth"
	"github.com/berth-ops/berth/events"
	"github.com/berth-ops/berth/handlers"
	"github.com/berth-ops/berth/internal/testenv"
	"github.com/berth-ops/berth/micro"
	"github.com/berth-ops/berth/store"
)

// fleetHost is one host of a fleet test: a race-built worker process with
// its own --host and state directory.
type fleetHost struct {
	name  string
	state string
	p     *proc
}

func startFleetHost(h *harness, fh *fleetHost, extra ...string) {
	h.t.Helper()
	fh.p = h.startProcess(append([]string{"--host", fh.name, "--state-dir", fh.state, "--heartbeat", "1s", "--http-addr", "off"}, extra...)...)
}

// ran reports how many times the worker logged a request as done.
func (fh *fleetHost) ran(id string) int {
	n := 0
	for _, l := range procLogLines(fh.p) {
		if l.Message == "command done" && l.RequestID == id {
			n++
		}
	}
	return n
}

// configureOn configures project, a bare directory, on host ("" leaves
// the host out) and returns the result.
func configureOn(h *harness, project, host string) events.Event {
	h.t.Helper()
	dir := filepath.Join(h.cfg.Roots[0], "fleet-"+project)
	if err := os.MkdirAll(dir, 0o755); err != nil {
		h.t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "compose.yml"), []byte("services:\n  app:\n    image: "+project+"-bare:latest\n"), 0o644); err != nil {
		h.t.Fatal(err)
	}
	a := map[string]any{"workspace": dir, "production": dir, "compose_project": project + "-bare", "strategy": "symlink",
		"roles": map[string]string{"test:alice": "operator"}}
	if host != "" {
		a["host"] = host
	}
	res, _ := h.send(project, events.ActionConfigSet, events.Command{User: "test:admin", Args: args(h.t, a)})
	return res
}

// qbody is a query body of user, unique so that its signature is (the
// same signed message twice is a replay).
func qbody(user string) string { return `{"id":"` + newID() + `","user":"` + user + `"}` }

func newID() string { return strings.ReplaceAll(uuid.NewString(), "-", "") }

// TestFleetEndToEnd runs two hosts, each a worker process, on one NATS
// and one Redis. Clients publish and query without naming a host: each
// project's commands run on its host only, whichever worker takes them
// from the shared stream; queries are answered by the owning host. When a
// host's worker dies, queries of its projects say unavailable with when
// it was last seen, and its commands wait and run once it is back, on it.
// A global admin moves a project with a confirmation, not while a
// mutation holds it, and config.set cannot move it behind the admin's
// back.
func TestFleetEndToEnd(t *testing.T) {
	h := newHarnessWith(t, harnessOptions{Host: "h1", Admins: []string{"test:admin"}})
	h.stop() // the fleet is made of processes, killed and restarted below
	// Signed: a query forwarded to its owner is checked there against the
	// subject the client signed.
	const secret = "fleet-test-secret-0123456789abcdef"
	h.cfg.SignSecrets = [][]byte{[]byte(secret)}
	h1 := &fleetHost{name: "h1", state: t.TempDir()}
	h2 := &fleetHost{name: "h2", state: t.TempDir()}
	start := func(fh *fleetHost) { startFleetHost(h, fh, "--sign-secrets", secret) }
	start(h1)
	start(h2)

	// With two workers alive, a new project must name its host.
	if res := configureOn(h, "fa", ""); errCode(res) != string(events.CodeBadRequest) || !strings.Contains(res.Error.Message, "host") {
		t.Fatalf("config.set without host in a fleet of two: %+v", res.Error)
	}
	if res := configureOn(h, "fa", "h9"); errCode(res) == "" {
		t.Fatalf("config.set on a host no worker ever ran: %s", res.Data)
	}
	mustOK(t, configureOn(h, "fa", "h2"))
	mustOK(t, configureOn(h, "fb", "h1"))
	// Re-configuring keeps the host; naming another one is a move.
	mustOK(t, configureOn(h, "fa", ""))
	if res := configureOn(h, "fa", "h1"); errCode(res) != string(events.CodeConflict) || !strings.Contains(res.Error.Hint, "move") {
		t.Fatalf("config.set to another host: %+v", res.Error)
	}

	// Commands of each project run on its host only, whichever worker
	// pulled them from the shared stream.
	check := func(project string, owner, other *fleetHost, ids []string) {
		t.Helper()
		for _, id := range ids {
			waitUntil(t, 10*time.Second, "request "+id+" logged", func() bool { return owner.ran(id)+other.ran(id) > 0 })
			if owner.ran(id) != 1 || other.ran(id) != 0 {
				t.Errorf("%s request %s: ran %d times on %s (its host), %d on %s", project, id, owner.ran(id), owner.name, other.ran(id), other.name)
			}
		}
	}
	var faIDs, fbIDs []string
	for i := range 8 {
		for _, c := range []struct {
			project string
			ids     *[]string
		}{{"fa", &faIDs}, {"fb", &fbIDs}} {
			action := events.ActionHistory
			if i%4 == 0 {
				action = events.ActionConfigGet
			}
			id := newID()
			res, _ := h.send(c.project, action, events.Command{ID: id, User: "test:alice"})
			mustOK(t, res)
			*c.ids = append(*c.ids, id)
		}
	}
	check("fa", h2, h1, faIDs)
	check("fb", h1, h2, fbIDs)

	// Queries, answered by the owning host wherever they land.
	for range 6 {
		for _, pr := range []string{"fa", "fb"} {
			m := h.query("berth.q."+pr+".config", qbody("test:alice"))
			if code := queryErr(t, m); code != "" {
				t.Fatalf("config query of %s: %s %s", pr, code, m.Data)
			}
			var p berth.Project
			if err := json.Unmarshal(m.Data, &p); err != nil || p.Name != pr {
				t.Fatalf("config query of %s: %s", pr, m.Data)
			}
		}
	}
	fleet := func() micro.FleetResult {
		t.Helper()
		m := h.query("berth.q.fleet", qbody("test:admin"))
		if code := queryErr(t, m); code != "" {
			t.Fatalf("fleet: %s %s", code, m.Data)
		}
		var f micro.FleetResult
		if err := json.Unmarshal(m.Data, &f); err != nil {
			t.Fatal(err)
		}
		return f
	}
	hostOf := func(f micro.FleetResult, host string) micro.FleetWorker {
		t.Helper()
		for _, w := range f.Workers {
			if w.Host == host {
				return w
			}
		}
		t.Fatalf("fleet without host %s: %+v", host, f)
		return micro.FleetWorker{}
	}
	f := fleet()
	for _, c := range []struct {
		host    string
		project string
	}{{"h1", "fb"}, {"h2", "fa"}} {
		w := hostOf(f, c.host)
		if w.State != "up" || w.Version == "" || w.Worker == "" || w.LastSeen.IsZero() || w.HeartbeatS != 1 || !slices.Equal(w.Projects, []string{c.project}) {
			t.Fatalf("fleet entry of %s: %+v", c.host, w)
		}
	}
	m := h.query("berth.q.projects", qbody("test:admin"))
	if !strings.Contains(string(m.Data), `"fa"`) || !strings.Contains(string(m.Data), `"fb"`) {
		t.Fatalf("projects across the fleet: %s", m.Data)
	}

	// h2 dies: its project's queries are unavailable once it has been
	// silent for three heartbeats, with the host and when it was last
	// seen; its commands wait.
	h2.p.kill(t)
	killed := time.Now()
	waitUntil(t, 15*time.Second, "h2 reported down", func() bool { return hostOf(fleet(), "h2").State == "down" })
	t.Logf("h2 reported down %v after it was killed", time.Since(killed).Round(time.Millisecond))
	m = h.query("berth.q.fa.config", qbody("test:alice"))
	if code := queryErr(t, m); code != string(events.CodeUnavailable) {
		t.Fatalf("config query of a project on a dead host: %s %s", code, m.Data)
	}
	var qe events.Error
	if err := json.Unmarshal(m.Data, &qe); err != nil || qe.Data["host"] != "h2" || qe.Data["last_seen"] == nil || !strings.Contains(qe.Message, "last seen") {
		t.Fatalf("unavailable without host and last seen: %s", m.Data)
	}
	if m = h.query("berth.q.fb.config", qbody("test:alice")); queryErr(t, m) != "" {
		t.Fatalf("h1's project while h2 is down: %s", m.Data)
	}
	var waiting []string
	var subs []*eventSub
	for i := range 4 {
		id := fmt.Sprintf("wait-%d-%s", i, newID()[:8])
		action := events.ActionHistory
		if i%2 == 0 {
			action = events.ActionConfigGet
		}
		subs = append(subs, h.subscribeEither("fa", id))
		h.publish("fa", action, events.Command{ID: id, User: "test:alice"})
		waiting = append(waiting, id)
	}
	time.Sleep(3 * time.Second)
	for i, es := range subs {
		es.mu.Lock()
		n := len(es.evs)
		es.mu.Unlock()
		if n != 0 || h1.ran(waiting[i]) != 0 {
			t.Fatalf("request %s for a project on a dead host: %d events, ran %d times on h1", waiting[i], n, h1.ran(waiting[i]))
		}
	}
	start(h2)
	for i, es := range subs {
		res, _ := es.result(t, time.Minute)
		mustOK(t, res)
		// The worker logs "command done" after it published the result.
		waitUntil(t, 10*time.Second, "request "+waiting[i]+" logged", func() bool { return h2.ran(waiting[i])+h1.ran(waiting[i]) > 0 })
		if h2.ran(waiting[i]) != 1 || h1.ran(waiting[i]) != 0 {
			t.Errorf("request %s waited for h2: ran %d times on h2, %d on h1", waiting[i], h2.ran(waiting[i]), h1.ran(waiting[i]))
		}
	}
	if w := hostOf(fleet(), "h2"); w.State != "up" {
		t.Fatalf("h2 after its restart: %+v", w)
	}

	// Moving fb to h2: global admins only, confirmed, not while a
	// mutation holds the project.
	if res, _ := h.send("fb", events.ActionMove, events.Command{User: "test:alice", Args: args(t, handlers.MoveArgs{To: "h2"})}); errCode(res) != string(events.CodeForbidden) {
		t.Fatalf("move by a project operator: %+v", res.Error)
	}
	cd, _ := plan(t, h, "fb", events.ActionMove, "test:admin", handlers.MoveArgs{To: "h2"})
	var mp handlers.MovePlan
	raw, _ := json.Marshal(cd.Plan)
	if err := json.Unmarshal(raw, &mp); err != nil || mp.From != "h1" || mp.To != "h2" || !mp.ToAlive || mp.LeftBehind == "" {
		t.Fatalf("move plan %s: %v", raw, err)
	}
	st, err := store.New(store.Config{URL: h.cfg.RedisURL})
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if _, ok, err := st.AcquireLock(ctx, "fb", &berth.LockInfo{Owner: "test-deploy", Action: events.ActionDeploy, User: "test:admin"}, time.Minute); err != nil || !ok {
		t.Fatalf("lock fb: %v %v", ok, err)
	}
	res, _ := confirm(t, h, "fb", events.ActionMove, "test:admin", cd.Token)
	if errCode(res) != string(events.CodeConflict) {
		t.Fatalf("move while a mutation holds the project: %+v %s", res.Error, res.Data)
	}
	if err := st.ReleaseLock(ctx, "fb", "test-deploy"); err != nil {
		t.Fatal(err)
	}
	cd, _ = plan(t, h, "fb", events.ActionMove, "test:admin", handlers.MoveArgs{To: "h2"})
	res, _ = confirm(t, h, "fb", events.ActionMove, "test:admin", cd.Token)
	mustOK(t, res)
	if mr := decodeData[handlers.MoveResult](t, res); mr.From != "h1" || mr.To != "h2" {
		t.Fatalf("move result %s", res.Data)
	}
	if w := hostOf(fleet(), "h2"); !slices.Equal(w.Projects, []string{"fa", "fb"}) {
		t.Fatalf("h2 after the move: %+v", w)
	}
	// The move is in fb's history, and fb's commands now run on h2.
	id := newID()
	res, _ = h.send("fb", events.ActionHistory, events.Command{ID: id, User: "test:alice"})
	mustOK(t, res)
	var hist struct{ Entries []berth.HistoryEntry }
	if err := json.Unmarshal(res.Data, &hist); err != nil {
		t.Fatal(err)
	}
	moved := false
	for _, e := range hist.Entries {
		moved = moved || (e.Action == events.ActionMove && e.OK && e.User == "test:admin")
	}
	if !moved {
		t.Fatalf("fb's history has no move: %s", res.Data)
	}
	waitUntil(t, 10*time.Second, "fb's history request logged", func() bool { return h2.ran(id)+h1.ran(id) > 0 })
	if h2.ran(id) != 1 || h1.ran(id) != 0 {
		t.Fatalf("fb after its move to h2: ran %d times on h2, %d on h1", h2.ran(id), h1.ran(id))
	}
}

// waitUntil polls cond until it holds or timeout passes.
func waitUntil(t *testing.T, timeout time.Duration, what string, cond func() bool) {
	t.Helper()
	for deadline := time.Now().Add(timeout); !cond(); time.Sleep(100 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("%s: not within %v", what, timeout)
		}
	}
}

// While Redis is down a worker of a fleet cannot tell which host runs a
// project: the command waits (it is delivered again a few times), and
// when the deliveries are spent it is answered with store_unavailable
// rather than dropped without a result.
func TestFleetCommandWhileRedisIsDown(t *testing.T) {
	rs := testenv.RedisProcess(t)
	h := newHarnessWith(t, harnessOptions{Host: "h1", RedisURL: rs.URL})
	h2 := &fleetHost{name: "h2", state: t.TempDir()}
	startFleetHost(h, h2)
	mustOK(t, configureOn(h, "rd", "h2"))
	rs.Stop()
	defer rs.Start()
	time.Sleep(2500 * time.Millisecond) // the routes cached before are stale
	began := time.Now()
	res, _ := h.send("rd", events.ActionHistory, events.Command{User: "test:alice"})
	if errCode(res) != string(events.CodeStoreUnavailable) || res.Error.Hint == "" {
		t.Fatalf("command while Redis is down: %+v %s", res.Error, res.Data)
	}
	t.Logf("answered %s after %v: %s", res.Error.Code, time.Since(began).Round(time.Millisecond), res.Error.Message)
}
