package handlers

import (
	"context"
	"encoding/json"
	"errors"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/alicebob/miniredis/v2"

	"github.com/berth-ops/berth"
	"github.com/berth-ops/berth/events"
	"github.com/berth-ops/berth/state"
	"github.com/berth-ops/berth/store"
)

// fakeComposer is a berth.Composer that records what it is asked and
// keeps image tags in a map; hook, when set, answers a compose run.
type fakeComposer struct {
	mu     sync.Mutex
	calls  []string
	images map[string]string // reference → image ID
	// hook answers a compose run (its arguments joined by spaces); nil
	// error and ok false fall through to success.
	hook func(args string) (err error, handled bool)
	// tagErr fails TagImage.
	tagErr  error
	onTag   func()
	stopped []string
	// watchers are the WatchImageTags callbacks running.
	watchers []func(string)
	// lateBuild, when set, is the image a build cut short by a stop
	// tags as po-web that long after StopOperation (as the engine
	// finishes the step it is in once its client is gone).
	lateBuild time.Duration
	lateDone  chan struct{}
}

// engineTags tags img as ref the way the engine's build does, telling
// the watchers.
func (f *fakeComposer) engineTags(img, ref string) {
	f.mu.Lock()
	f.images[ref] = img
	ws := slices.Clone(f.watchers)
	f.mu.Unlock()
	for _, w := range ws {
		w(ref + ":latest")
	}
}

var _ berth.Composer = (*fakeComposer)(nil)

func (f *fakeComposer) Compose(_ context.Context, _ berth.ComposeSpec, _ events.Code, _ func(string), args ...string) error {
	a := strings.Join(args, " ")
	f.mu.Lock()
	f.calls = append(f.calls, a)
	hook := f.hook
	f.mu.Unlock()
	if hook != nil {
		if err, ok := hook(a); ok {
			return err
		}
	}
	if args[0] == "build" {
		f.mu.Lock()
		f.images["po-web"] = "sha256:new"
		f.mu.Unlock()
	}
	return nil
}

func (f *fakeComposer) TagImage(_ context.Context, img, ref string) error {
	if f.onTag != nil {
		f.onTag()
	}
	if f.tagErr != nil {
		return f.tagErr
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	if id, ok := f.images[img]; ok {
		img = id
	}
	f.images[ref] = img
	f.calls = append(f.calls, "tag "+ref)
	return nil
}

func (f *fakeComposer) RemoveImage(_ context.Context, ref string) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	delete(f.images, ref)
	return nil
}

func (f *fakeComposer) ImageID(_ context.Context, ref string) (string, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if id, ok := f.images[ref]; ok {
		return id, nil
	}
	return "", events.Errorf(events.CodeNotFound, "no image %s", ref)
}

func (f *fakeComposer) StopOperation(_ context.Context, tag string) (int, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.stopped = append(f.stopped, tag)
	if f.lateBuild > 0 {
		f.lateDone = make(chan struct{})
		time.AfterFunc(f.lateBuild, func() { f.engineTags("sha256:late", "po-web"); close(f.lateDone) })
	}
	return 0, nil
}

func (f *fakeComposer) WatchImageTags(ctx context.Context, _ time.Time, fn func(string)) error {
	f.mu.Lock()
	f.watchers = append(f.watchers, fn)
	f.mu.Unlock()
	<-ctx.Done()
	return nil
}

func (f *fakeComposer) ContainerNetworks(context.Context, string) ([]berth.NetworkAttachment, error) {
	return []berth.NetworkAttachment{{Network: "po_default"}}, nil
}

func (f *fakeComposer) DisconnectContainer(_ context.Context, id string, _ []berth.NetworkAttachment) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.calls = append(f.calls, "disconnect "+id)
	return nil
}

func (f *fakeComposer) ReconnectContainer(_ context.Context, id string, _ []berth.NetworkAttachment) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.calls = append(f.calls, "reconnect "+id)
	return nil
}

func (f *fakeComposer) StartContainer(_ context.Context, id string) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.calls = append(f.calls, "start "+id)
	return nil
}

func (f *fakeComposer) RemoveContainer(_ context.Context, id string, _ time.Duration) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.calls = append(f.calls, "remove "+id)
	return nil
}

func (f *fakeComposer) RemoveStrayContainers(context.Context, string) ([]string, error) {
	return nil, nil
}

func (f *fakeComposer) ran(prefix string) bool {
	f.mu.Lock()
	defer f.mu.Unlock()
	return slices.ContainsFunc(f.calls, func(c string) bool { return strings.HasPrefix(c, prefix) })
}

// progressLog is a Reporter that keeps the progress it is told.
type progressLog struct {
	mu    sync.Mutex
	steps []string
}

func (r *progressLog) Progress(step, msg string, _, _ int) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.steps = append(r.steps, step+": "+msg)
}
func (r *progressLog) Log([]events.LogLine) error           { return nil }
func (r *progressLog) Confirm(string, time.Time, any) error { return nil }

// opFixture is a Service with a real store (on miniredis), a real state
// directory, a copy project with a workspace and a production directory,
// and a fake engine and composer.
type opFixture struct {
	t        *testing.T
	svc      *Service
	store    *store.Store
	engine   *fakeEngine
	composer *fakeComposer
	state    *state.Dir
	ws, prod string
	p        *berth.Project
	now      time.Time
}

func newOpFixture(t *testing.T) *opFixture {
	t.Helper()
	mr := miniredis.RunT(t)
	st, err := store.New(store.Config{URL: "redis://" + mr.Addr()})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	root := filepath.Clean(t.TempDir())
	f := &opFixture{t: t, store: st, ws: filepath.Join(root, "ws"), prod: filepath.Join(root, "prod"), now: time.Now()}
	for _, d := range []string{f.ws, f.prod} {
		if err := os.MkdirAll(d, 0o755); err != nil {
			t.Fatal(err)
		}
		f.write(d, "compose.yml", "services: {}\n")
		f.write(d, "app.txt", "v1\n")
	}
	f.write(f.prod, ".env", "SECRET=1\n")
	f.engine = &fakeEngine{containers: healthyContainers(), model: &berth.ComposeModel{Name: "po", Services: map[string]berth.ComposeService{
		"web":    {Name: "web", Image: "po-web", Build: true, Healthcheck: true, Replicas: 1},
		"worker": {Name: "worker", Image: "po-web", Restart: "unless-stopped", Replicas: 1},
	}}}
	f.composer = &fakeComposer{images: map[string]string{"po-web": "sha256:old"}}
	if f.state, err = state.New(filepath.Join(root, "state")); err != nil {
		t.Fatal(err)
	}
	svc, err := NewService(st, f.engine, Config{Roots: []string{root}, VerifyTimeout: 2 * time.Second, LockLease: 3 * time.Second, UndoWait: time.Millisecond,
		ImageSettle: 300 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	svc.Confirms, svc.Locks, svc.Composer, svc.State = st, st, f.composer, f.state
	svc.Now = func() time.Time { return f.now }
	f.svc = svc
	zero := 0
	f.p = &berth.Project{Name: "po", Workspace: f.ws, Production: f.prod, ComposeProject: "po", ComposeFiles: []string{"compose.yml"},
		Services: []string{"web", "worker"}, PrimaryService: "web", Strategy: "copy", StabilizeS: &zero}
	if err := st.PutProject(t.Context(), f.p); err != nil {
		t.Fatal(err)
	}
	return f
}

func healthyContainers() []berth.Container {
	return []berth.Container{
		{ID: "w1", Name: "po-web-1", Service: "web", State: "running", Health: "healthy", ImageID: "sha256:old"},
		{ID: "k1", Name: "po-worker-1", Service: "worker", State: "running", ImageID: "sha256:old", StartedAt: time.Now().Add(-time.Hour)},
	}
}

func (f *opFixture) write(dir, rel, content string) {
	f.t.Helper()
	if err := os.WriteFile(filepath.Join(dir, rel), []byte(content), 0o644); err != nil {
		f.t.Fatal(err)
	}
}

func (f *opFixture) read(rel string) string {
	f.t.Helper()
	b, err := os.ReadFile(filepath.Join(f.prod, rel))
	if err != nil {
		return "<missing>"
	}
	return string(b)
}

// send runs action as user with confirm, as the dispatcher would.
func (f *opFixture) send(action, user, confirm string, args any) (any, *events.Error) {
	f.t.Helper()
	req := &Request{ID: "r" + randomHex(6), Project: "po", Action: action, User: user, Confirm: confirm}
	if args != nil {
		req.Args, _ = json.Marshal(args)
	}
	h := map[string]func(context.Context, *Request, Reporter) (any, error){
		events.ActionDeploy: f.svc.Deploy, events.ActionRollback: f.svc.Rollback, events.ActionRestart: f.svc.Restart,
		events.ActionStart: f.svc.Start, events.ActionStop: f.svc.Stop,
	}[action]
	data, err := h(f.t.Context(), req, &progressLog{})
	if err != nil {
		return data, events.AsError(err)
	}
	return data, nil
}

// plan asks for a plan and returns its token.
func (f *opFixture) plan(action, user string, args any) string {
	f.t.Helper()
	data, e := f.send(action, user, "", args)
	if e == nil || e.Code != events.CodeConfirmationRequired {
		f.t.Fatalf("%s without confirm: %v, %+v", action, e, data)
	}
	return data.(*ConfirmationData).Token
}

// settled checks what every finished mutation leaves: no journal, a free
// lock.
func (f *opFixture) settled() {
	f.t.Helper()
	if j, err := f.state.Journal(f.prod); err != nil || j != nil {
		f.t.Fatalf("journal left: %+v, %v", j, err)
	}
	if h, err := f.store.LockHolder(f.t.Context(), "po"); err == nil {
		f.t.Fatalf("lock still held by %+v", h)
	}
}

func TestConfirmationPaths(t *testing.T) {
	t.Run("confirmed by token runs once", func(t *testing.T) {
		f := newOpFixture(t)
		tok := f.plan(events.ActionRestart, "t:alice", nil)
		if _, e := f.send(events.ActionRestart, "t:alice", tok, nil); e != nil {
			t.Fatalf("confirm: %v", e)
		}
		if !f.composer.ran("restart web worker") {
			t.Fatalf("compose calls %v", f.composer.calls)
		}
		f.settled()
		if _, e := f.send(events.ActionRestart, "t:alice", tok, nil); e == nil || e.Code != events.CodeConfirmationInvalid {
			t.Fatalf("second use of a token: %v", e)
		}
	})
	t.Run("plan_changed", func(t *testing.T) {
		f := newOpFixture(t)
		tok := f.plan(events.ActionRestart, "t:alice", nil)
		f.engine.containers[0].ID = "w2" // web was recreated meanwhile
		data, e := f.send(events.ActionRestart, "t:alice", tok, nil)
		if e == nil || e.Code != events.CodePlanChanged {
			t.Fatalf("want plan_changed, got %v", e)
		}
		if cd, ok := data.(*ConfirmationData); !ok || cd.Token == "" || cd.Token == tok {
			t.Fatalf("plan_changed must carry a new token: %+v", data)
		}
		if f.composer.ran("restart") {
			t.Fatal("a changed plan ran")
		}
		f.settled()
	})
	t.Run("expired", func(t *testing.T) {
		f := newOpFixture(t)
		tok := f.plan(events.ActionRestart, "t:alice", nil)
		f.now = f.now.Add(f.svc.Config.ConfirmTTL + time.Second)
		if _, e := f.send(events.ActionRestart, "t:alice", tok, nil); e == nil || e.Code != events.CodeConfirmationExpired {
			t.Fatalf("want confirmation_expired, got %v", e)
		}
	})
	t.Run("invalid", func(t *testing.T) {
		f := newOpFixture(t)
		tok := f.plan(events.ActionRestart, "t:alice", nil)
		for name, c := range map[string]struct{ user, confirm string }{
			"unknown token":         {"t:alice", "deadbeef"},
			"another user's token":  {"t:bob", tok},
			"yes without a plan":    {"t:bob", "yes"},
			"token of other action": {"t:alice", f.plan(events.ActionStop, "t:alice", nil)},
		} {
			if _, e := f.send(events.ActionRestart, c.user, c.confirm, nil); e == nil || e.Code != events.CodeConfirmationInvalid {
				t.Errorf("%s: want confirmation_invalid, got %v", name, e)
			}
		}
		if f.composer.ran("restart") {
			t.Fatal("an invalid confirmation ran")
		}
	})
	t.Run("conflict keeps the confirmation", func(t *testing.T) {
		f := newOpFixture(t)
		f.plan(events.ActionRestart, "t:alice", nil)
		holder := &berth.LockInfo{Owner: "other", RequestID: "x", User: "t:bob", Action: "deploy", Since: f.now}
		if _, ok, err := f.store.AcquireLock(t.Context(), "po", holder, time.Minute); err != nil || !ok {
			t.Fatal(err)
		}
		_, e := f.send(events.ActionRestart, "t:alice", "yes", nil)
		if e == nil || e.Code != events.CodeConflict || !strings.Contains(e.Message, "t:bob") {
			t.Fatalf("want a conflict naming the holder, got %v", e)
		}
		if err := f.store.ReleaseLock(t.Context(), "po", "other"); err != nil {
			t.Fatal(err)
		}
		if _, e := f.send(events.ActionRestart, "t:alice", "yes", nil); e != nil {
			t.Fatalf("confirm after the holder finished: %v", e)
		}
		f.settled()
	})
	t.Run("start needs no confirmation", func(t *testing.T) {
		f := newOpFixture(t)
		if _, e := f.send(events.ActionStart, "t:alice", "", nil); e != nil {
			t.Fatalf("start: %v", e)
		}
		if !f.composer.ran("up -d --remove-orphans web worker") {
			t.Fatalf("compose calls %v", f.composer.calls)
		}
		if _, e := f.send(events.ActionStart, "t:alice", "yes", nil); e == nil || e.Code != events.CodeBadRequest {
			t.Fatalf("start with confirm: %v", e)
		}
		f.settled()
	})
}

// TestDeployFailureAtEachStepIsUndone fails a deploy in each of its steps
// and checks that everything it did is undone: production's files, the
// image tags, the containers (up again with the previous release only
// when the failed run reached up), and that it leaves no journal and no
// lock.
func TestDeployFailureAtEachStepIsUndone(t *testing.T) {
	errBuild := events.Errorf(events.CodeBuildFailed, "docker compose build failed")
	for _, c := range []struct {
		step    string
		arrange func(f *opFixture)
		code    events.Code
		settle  bool // the undo must bring the previous release up
		retag   bool // the undo must point the image back
	}{
		{step: events.StepBackup, code: events.CodeInternal, arrange: func(f *opFixture) { f.composer.tagErr = errors.New("engine says no") }},
		{step: events.StepSync, code: events.CodePlanChanged, arrange: func(f *opFixture) {
			// The workspace changes after the plan was confirmed.
			f.composer.onTag = func() { f.write(f.ws, "new.txt", "written during the deploy\n") }
		}},
		{step: events.StepBuild, code: events.CodeBuildFailed, retag: true, arrange: func(f *opFixture) {
			f.composer.hook = func(a string) (error, bool) {
				if a == "build" {
					f.composer.images["po-web"] = "sha256:half-built"
					return errBuild, true
				}
				return nil, false
			}
		}},
		{step: events.StepUp, code: events.CodeHealthFailed, settle: true, retag: true, arrange: func(f *opFixture) {
			f.composer.hook = func(a string) (error, bool) {
				if a == "up -d --remove-orphans" {
					f.engine.containers[0].State, f.engine.containers[0].ExitCode, f.engine.containers[0].Health = "exited", 1, ""
					return events.Errorf(events.CodeHealthFailed, "up failed"), true
				}
				if strings.HasPrefix(a, "up -d --no-build") {
					f.engine.containers = healthyContainers()
				}
				return nil, false
			}
		}},
		{step: events.StepVerify, code: events.CodeHealthFailed, settle: true, retag: true, arrange: func(f *opFixture) {
			f.composer.hook = func(a string) (error, bool) {
				switch {
				case a == "up -d --remove-orphans":
					f.engine.containers[0].Health = "unhealthy"
					f.engine.containers[0].HealthLog = []string{"GET /health: 500"}
				case strings.HasPrefix(a, "up -d --no-build"):
					f.engine.containers = healthyContainers()
				}
				return nil, false
			}
		}},
	} {
		t.Run(c.step, func(t *testing.T) {
			f := newOpFixture(t)
			f.write(f.ws, "app.txt", "v2 (new)\n")
			f.write(f.ws, "new.txt", "added\n")
			tok := f.plan(events.ActionDeploy, "t:alice", nil)
			c.arrange(f)
			data, e := f.send(events.ActionDeploy, "t:alice", tok, nil)
			if e == nil || e.Code != c.code {
				t.Fatalf("want %s, got %v", c.code, e)
			}
			res := data.(*DeployResult)
			if !res.RolledBack || e.Data["rolled_back"] != true {
				t.Fatalf("not rolled back: %+v %v", res, e)
			}
			if got := f.read("app.txt") + f.read("new.txt") + f.read(".env"); got != "v1\n<missing>SECRET=1\n" {
				t.Fatalf("production not restored: %q", got)
			}
			if f.composer.images["po-web"] != "sha256:old" {
				t.Fatalf("po-web points at %s after the undo", f.composer.images["po-web"])
			}
			if got := f.composer.ran("up -d --no-build --remove-orphans"); got != c.settle {
				t.Fatalf("settled with up: %v, want %v (calls %v)", got, c.settle, f.composer.calls)
			}
			f.settled()
			o, err := f.state.Outcome(res.Release)
			_ = o
			if err != nil {
				t.Fatal(err)
			}
			rels, _ := f.state.Releases(f.prod)
			switch {
			case c.step == events.StepBackup && len(rels) != 0:
				t.Fatalf("an incomplete backup was kept: %+v", rels)
			case c.step != events.StepBackup && (len(rels) != 1 || rels[0].Status != state.ReleaseRolledBack):
				t.Fatalf("releases after the undo: %+v", rels)
			}
			// The same deploy can run now.
			f.composer.hook, f.composer.tagErr, f.composer.onTag = nil, nil, nil
			f.engine.containers = healthyContainers()
			if _, e := f.send(events.ActionDeploy, "t:alice", f.plan(events.ActionDeploy, "t:alice", nil), nil); e != nil {
				t.Fatalf("deploy after the failed one: %v", e)
			}
			if b, _ := os.ReadFile(filepath.Join(f.ws, "new.txt")); f.read("new.txt") != string(b) {
				t.Fatal("the second deploy did not copy")
			}
			f.settled()
		})
	}
}

// TestUndoWaitsForTheEngine: a deploy whose undo meets an unreachable
// engine answers docker_unavailable with the rollback pending, keeps the
// project locked, and the recovery loop finishes the rollback once the
// engine answers, recording it in history.
func TestUndoWaitsForTheEngine(t *testing.T) {
	f := newOpFixture(t)
	f.write(f.ws, "app.txt", "v2 (new)\n")
	tok := f.plan(events.ActionDeploy, "t:alice", nil)
	var down sync.Mutex
	engineDown := true
	unreachable := events.Errorf(events.CodeDockerUnavailable, "cannot reach the Docker Engine")
	f.composer.hook = func(a string) (error, bool) {
		down.Lock()
		defer down.Unlock()
		if strings.HasPrefix(a, "up") && engineDown {
			return unreachable, true
		}
		return nil, false
	}
	data, e := f.send(events.ActionDeploy, "t:alice", tok, nil)
	if e == nil || e.Code != events.CodeDockerUnavailable || e.Data["rollback_pending"] != true {
		t.Fatalf("want docker_unavailable with the rollback pending, got %v", e)
	}
	if res := data.(*DeployResult); res.RolledBack || !res.RollbackPending {
		t.Fatalf("result data %+v", res)
	}
	if j, _ := f.state.Journal(f.prod); j == nil || !j.Undoing || !j.Answered {
		t.Fatalf("the journal must stay, undoing and answered: %+v", j)
	}
	// Another mutation waits.
	if _, e := f.send(events.ActionRestart, "t:bob", "", nil); e == nil || e.Code != events.CodeConfirmationRequired {
		t.Fatalf("plan while locked: %v", e)
	}
	if _, e := f.send(events.ActionRestart, "t:bob", "yes", nil); e == nil || e.Code != events.CodeConflict {
		t.Fatalf("a mutation while the rollback is pending: %v", e)
	}

	ctx, cancel := context.WithCancel(t.Context())
	defer cancel()
	loopDone := make(chan struct{})
	f.svc.Now = time.Now
	go func() { defer close(loopDone); f.svc.RecoverLoop(ctx) }()
	time.Sleep(1500 * time.Millisecond) // a few ticks: the lock is kept
	if h, err := f.store.LockHolder(t.Context(), "po"); err != nil || !strings.Contains(h.Owner, "/") {
		t.Fatalf("the lock must stay with the pending rollback: %+v, %v", h, err)
	}
	down.Lock()
	engineDown = false
	down.Unlock()
	deadline := time.Now().Add(10 * time.Second)
	for {
		j, _ := f.state.Journal(f.prod)
		if j == nil {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("the recovery loop did not finish the rollback: %+v", j)
		}
		time.Sleep(50 * time.Millisecond)
	}
	cancel()
	<-loopDone
	f.settled()
	if f.read("app.txt") != "v1\n" {
		t.Fatalf("production not rolled back: %q", f.read("app.txt"))
	}
	h, err := f.store.History(t.Context(), "po", 10)
	if err != nil || len(h) == 0 || h[0].Details["recovered"] != true || h[0].Details["rolled_back"] != true {
		t.Fatalf("history does not record the finished rollback: %+v, %v", h, err)
	}
}

// TestRecoverResumesJournals finishes operations a stopped worker left:
// a deploy stopped mid-sync is undone, a stop is run to its end, a journal
// of the previous format is read, and each request's outcome is kept.
func TestRecoverResumesJournals(t *testing.T) {
	t.Run("deploy stopped in sync", func(t *testing.T) {
		f := newOpFixture(t)
		f.write(f.ws, "app.txt", "v2 (new)\n")
		f.write(f.ws, "new.txt", "added\n")
		// Run the deploy until it syncs, then "kill" it: the state is as a
		// worker stopped during the sync leaves it.
		tok := f.plan(events.ActionDeploy, "t:alice", nil)
		killed := errors.New("killed")
		f.composer.hook = func(a string) (error, bool) {
			if a == "build" {
				panic(killed)
			}
			return nil, false
		}
		func() {
			defer func() {
				if p := recover(); p != killed {
					panic(p)
				}
			}()
			f.send(events.ActionDeploy, "t:alice", tok, nil)
		}()
		j, err := f.state.Journal(f.prod)
		if err != nil || j == nil || j.Current() != events.StepBuild || f.read("new.txt") != "added\n" {
			t.Fatalf("not a deploy stopped after its sync: %+v, %v", j, err)
		}
		// The stopped worker's lock expires; a new worker starts.
		f.composer.hook = nil
		if err := f.store.ReleaseLock(t.Context(), "po", j.LockOwner); err != nil {
			t.Fatal(err)
		}
		if err := f.svc.Recover(t.Context()); err != nil {
			t.Fatal(err)
		}
		f.settled()
		if f.read("app.txt") != "v1\n" || f.read("new.txt") != "<missing>" {
			t.Fatal("production not restored")
		}
		if !slices.Contains(f.composer.stopped, j.LockOwner) {
			t.Fatalf("the stopped worker's compose processes were not stopped: %v", f.composer.stopped)
		}
		if f.composer.ran("up -d --no-build") {
			t.Fatal("settled although the deploy never reached up")
		}
		o, err := f.state.Outcome(j.RequestID)
		if err != nil || o == nil || o.OK || !o.Recovered || o.Error.Data["rolled_back"] != true || o.StartedAt.IsZero() {
			t.Fatalf("outcome %+v, %v", o, err)
		}
	})
	t.Run("deploy stopped in build, whose build the engine finishes later", func(t *testing.T) {
		f := newOpFixture(t)
		f.write(f.ws, "app.txt", "v2 (new)\n")
		tok := f.plan(events.ActionDeploy, "t:alice", nil)
		killed := errors.New("killed")
		f.composer.hook = func(a string) (error, bool) {
			if a == "build" {
				panic(killed)
			}
			return nil, false
		}
		func() {
			defer func() {
				if p := recover(); p != killed {
					panic(p)
				}
			}()
			f.send(events.ActionDeploy, "t:alice", tok, nil)
		}()
		j, err := f.state.Journal(f.prod)
		if err != nil || j == nil || j.Current() != events.StepBuild {
			t.Fatalf("not a deploy stopped in its build: %+v, %v", j, err)
		}
		f.composer.hook = nil
		// The engine tags the stopped build's image after undo re-tagged.
		f.composer.lateBuild = 100 * time.Millisecond
		if err := f.store.ReleaseLock(t.Context(), "po", j.LockOwner); err != nil {
			t.Fatal(err)
		}
		if err := f.svc.Recover(t.Context()); err != nil {
			t.Fatal(err)
		}
		f.settled()
		<-f.composer.lateDone
		if id, _ := f.composer.ImageID(t.Context(), "po-web"); id != "sha256:old" {
			t.Fatalf("after recovery po-web is %s, not the running release's sha256:old", id)
		}
	})
	t.Run("stop is finished", func(t *testing.T) {
		f := newOpFixture(t)
		j := &state.Journal{Op: events.ActionStop, RequestID: "req1", User: "t:alice", Project: *f.p, Steps: []string{events.StepStop},
			Services: []string{"web"}, LockOwner: "req1/abc", StartedAt: f.now}
		if err := f.state.WriteJournal(f.prod, j); err != nil {
			t.Fatal(err)
		}
		if err := f.svc.Recover(t.Context()); err != nil {
			t.Fatal(err)
		}
		f.settled()
		if !f.composer.ran("stop web") {
			t.Fatalf("calls %v", f.composer.calls)
		}
		if o, _ := f.state.Outcome("req1"); o == nil || !o.OK {
			t.Fatalf("outcome %+v", o)
		}
	})
	t.Run("journal of the previous format", func(t *testing.T) {
		f := newOpFixture(t)
		legacy := filepath.Join(f.state.Root(), "projects", "po")
		if err := os.MkdirAll(legacy, 0o700); err != nil {
			t.Fatal(err)
		}
		raw, _ := json.Marshal(map[string]any{"op": "rollback", "request_id": "old1", "project": f.p, "releases": []string{},
			"phase": "up", "lock_owner": "old1/x", "started_at": f.now})
		if err := os.WriteFile(filepath.Join(legacy, "journal.json"), raw, 0o600); err != nil {
			t.Fatal(err)
		}
		if err := f.svc.Recover(t.Context()); err != nil {
			t.Fatal(err)
		}
		f.settled()
		if _, err := os.Stat(legacy); !os.IsNotExist(err) {
			t.Fatalf("the legacy state was not moved: %v", err)
		}
		if !f.composer.ran("up -d --no-build --remove-orphans") {
			t.Fatalf("the rollback was not finished: %v", f.composer.calls)
		}
	})
}

// TestConfigCopyInStateDir: config.set keeps a copy of the configuration
// in the state directory, as the args of the config.set that recreates
// it; config.delete removes it.
func TestConfigCopyInStateDir(t *testing.T) {
	f := newOpFixture(t)
	f.svc.Config.Admins = []string{"t:admin"}
	args, _ := json.Marshal(map[string]any{"workspace": f.ws, "production": f.prod, "compose_project": "po", "stabilize_s": 0,
		"roles": map[string]string{"t:alice": "operator"}})
	if _, err := f.svc.ConfigSet(t.Context(), &Request{Project: "po", User: "t:admin", Args: args}, nil); err != nil {
		t.Fatal(err)
	}
	copyPath := filepath.Join(f.state.Root(), "configs", "po.json")
	b, err := os.ReadFile(copyPath)
	if err != nil {
		t.Fatal(err)
	}
	var back ConfigSetArgs
	if err := events.DecodeArgs(b, &back); err != nil || back.Production != f.prod || back.Roles["t:alice"] != "operator" {
		t.Fatalf("the copy does not decode as config.set args: %+v, %v\n%s", back, err, b)
	}
	tok := ""
	if data, err := f.svc.ConfigDelete(t.Context(), &Request{ID: "d1", Project: "po", Action: events.ActionConfigDelete, User: "t:admin"}, &progressLog{}); events.ErrorCode(err) == events.CodeConfirmationRequired {
		tok = data.(*ConfirmationData).Token
	}
	if _, err := f.svc.ConfigDelete(t.Context(), &Request{ID: "d2", Project: "po", Action: events.ActionConfigDelete, User: "t:admin", Confirm: tok}, &progressLog{}); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(copyPath); !os.IsNotExist(err) {
		t.Fatalf("the copy outlived config.delete: %v", err)
	}
}
