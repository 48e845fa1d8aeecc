package micro_test

import (
	"context"
	"encoding/json"
	"fmt"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	natsmicro "github.com/nats-io/nats.go/micro"
	"github.com/rs/zerolog"

	"github.com/berth-ops/berth"
	"github.com/berth-ops/berth/auth"
	"github.com/berth-ops/berth/events"
	"github.com/berth-ops/berth/handlers"
	"github.com/berth-ops/berth/internal/testenv"
	"github.com/berth-ops/berth/micro"
	"github.com/berth-ops/berth/store"
)

// fakeEngine answers for one compose project with two running containers.
type fakeEngine struct {
	mu         sync.Mutex
	containers int // calls of Containers
}

func (e *fakeEngine) Ping(context.Context) error { return nil }

func (e *fakeEngine) Containers(_ context.Context, project string) ([]berth.Container, error) {
	e.mu.Lock()
	e.containers++
	e.mu.Unlock()
	start := time.Now().Add(-time.Minute)
	return []berth.Container{
		{ID: "c-web", Name: project + "-web-1", Service: "web", Image: "app:1", State: "running", Health: "healthy", StartedAt: start},
		{ID: "c-worker", Name: project + "-worker-1", Service: "worker", Image: "app:1", State: "running", StartedAt: start},
	}, nil
}

func (e *fakeEngine) Stats(context.Context, string) (*berth.ContainerStats, error) {
	return nil, events.Errorf(events.CodeNotFound, "no stats")
}

func (e *fakeEngine) ComposeModel(context.Context, berth.ComposeSpec) (*berth.ComposeModel, error) {
	return &berth.ComposeModel{Services: map[string]berth.ComposeService{
		"web": {Name: "web", Replicas: 1}, "worker": {Name: "worker", Replicas: 1}}}, nil
}

func (e *fakeEngine) Logs(_ context.Context, _ string, opts berth.LogOptions, fn func(events.LogLine) error) error {
	n := 3
	if opts.Tail > 0 && opts.Tail < n {
		n = opts.Tail
	}
	for i := range n {
		if err := fn(events.LogLine{Stream: "stdout", Line: fmt.Sprintf("line %d", i+1)}); err != nil {
			return err
		}
	}
	return nil
}

func (e *fakeEngine) calls() int {
	e.mu.Lock()
	defer e.mu.Unlock()
	return e.containers
}

// observer records what the query service reports.
type observer struct {
	mu      sync.Mutex
	queries []string // endpoint=outcome
	hits    int
	misses  int
}

func (o *observer) CommandDone(string, events.Code, time.Duration) {}
func (o *observer) QueryDone(ep string, code events.Code, _ time.Duration) {
	o.mu.Lock()
	defer o.mu.Unlock()
	out := "ok"
	if code != "" {
		out = string(code)
	}
	o.queries = append(o.queries, ep+"="+out)
}
func (o *observer) DeployStep(string, time.Duration) {}
func (o *observer) StatusCache(hit bool) {
	o.mu.Lock()
	defer o.mu.Unlock()
	if hit {
		o.hits++
	} else {
		o.misses++
	}
}
func (o *observer) LockConflict()        {}
func (o *observer) Redelivery()          {}
func (o *observer) Inflight(string, int) {}

type env struct {
	t      *testing.T
	nc     *nats.Conn
	st     *store.Store
	engine *fakeEngine
	obs    *observer
	srv    *micro.Server
	secret []byte
}

// setup runs the query service on a real nats-server and a real Redis,
// with the project po (alice operator, bob nothing) and pub (anonymous
// viewers), and admins as the global admins.
func setup(t *testing.T, signed bool) *env {
	t.Helper()
	ns := testenv.NATS(t)
	st, err := store.New(store.Config{URL: testenv.Redis(t), Prefix: "berth:"})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = st.Close() })
	e := &env{t: t, nc: testenv.Connect(t, ns), st: st, engine: &fakeEngine{}, obs: &observer{}}
	svc, err := handlers.NewService(st, e.engine, handlers.Config{Admins: []string{"cli:admin"}, StatusTTL: time.Minute})
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	for _, p := range []*berth.Project{
		{Name: "po", ComposeProject: "po", Workspace: "/srv/po", Production: "/srv/po", Strategy: "symlink",
			Services: []string{"web", "worker"}, PrimaryService: "web", Roles: map[string]string{"cli:alice": "operator"}},
		{Name: "pub", ComposeProject: "pub", Workspace: "/srv/pub", Production: "/srv/pub", Strategy: "symlink",
			Services: []string{"web"}, PrimaryService: "web", AnonymousViewers: true},
		{Name: "secret", ComposeProject: "secret", Workspace: "/srv/s", Production: "/srv/s", Strategy: "symlink",
			Services: []string{"web"}, PrimaryService: "web"},
	} {
		if err := st.PutProject(ctx, p); err != nil {
			t.Fatal(err)
		}
	}
	mux := handlers.NewMux()
	svc.Register(mux)
	adm := &handlers.Admission{Mux: mux, Subjects: events.NewSubjects("berth"), Authorize: svc.Authorize}
	cfg := micro.Config{Subjects: events.NewSubjects("berth"), Service: svc, Admission: adm, Observer: e.obs, Log: zerolog.New(zerolog.NewTestWriter(t))}
	if signed {
		e.secret = []byte("a-test-secret-of-32-bytes-......")
		adm.Verifier = &auth.Verifier{Secrets: [][]byte{e.secret}}
		adm.ClaimSignature, adm.SignatureWindow = st.ClaimSignature, auth.DefaultWindow
	}
	if e.srv, err = micro.Start(e.nc, cfg); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = e.srv.Stop() })
	return e
}

// ask sends a query and returns the reply.
func (e *env) ask(subject, body string) *nats.Msg {
	e.t.Helper()
	msg := nats.NewMsg(subject)
	msg.Data = []byte(body)
	if e.secret != nil {
		ts, sig := auth.Sign(e.secret, time.Now(), subject, msg.Data)
		msg.Header.Set(auth.HeaderTimestamp, ts)
		msg.Header.Set(auth.HeaderSignature, sig)
	}
	m, err := e.nc.RequestMsg(msg, 5*time.Second)
	if err != nil {
		e.t.Fatalf("request %s: %v", subject, err)
	}
	return m
}

// queryError returns the micro error code of a reply and its body's error.
func queryError(t *testing.T, m *nats.Msg) (string, *events.Error) {
	t.Helper()
	code := m.Header.Get(natsmicro.ErrorCodeHeader)
	if code == "" {
		return "", nil
	}
	var e events.Error
	if err := json.Unmarshal(m.Data, &e); err != nil {
		t.Fatalf("error reply body %q: %v", m.Data, err)
	}
	if string(e.Code) != code || m.Header.Get(natsmicro.ErrorHeader) != e.Message || e.Hint == "" {
		t.Fatalf("error reply: headers %v, body %s", m.Header, m.Data)
	}
	return code, &e
}

func wantError(t *testing.T, m *nats.Msg, code string) *events.Error {
	t.Helper()
	got, e := queryError(t, m)
	if got != code {
		t.Fatalf("want error %s, got %q: %s", code, got, m.Data)
	}
	return e
}

func TestQueryStatusFromDockerThenCache(t *testing.T) {
	e := setup(t, false)
	m := e.ask("berth.q.po.status", `{"user":"cli:alice"}`)
	if code, _ := queryError(t, m); code != "" {
		t.Fatalf("status: %s %s", code, m.Data)
	}
	var rep handlers.StatusReport
	if err := json.Unmarshal(m.Data, &rep); err != nil {
		t.Fatal(err)
	}
	if rep.Project != "po" || rep.Cached || len(rep.Services) != 2 || rep.Summary.Running != 2 || rep.Summary.Healthy != 1 {
		t.Fatalf("status %s", m.Data)
	}
	// The second answer comes from the cache the first one filled, and
	// an id in the body is accepted and ignored.
	m = e.ask("berth.q.po.status", `{"id":"ignored-1","user":"cli:alice"}`)
	if err := json.Unmarshal(m.Data, &rep); err != nil || !rep.Cached {
		t.Fatalf("second status not cached: %s", m.Data)
	}
	m = e.ask("berth.q.po.status", `{"user":"cli:alice","args":{"refresh":true}}`)
	if err := json.Unmarshal(m.Data, &rep); err != nil || rep.Cached {
		t.Fatalf("refresh served from the cache: %s", m.Data)
	}
	if e.engine.calls() != 2 {
		t.Fatalf("Docker asked %d times, want 2", e.engine.calls())
	}
	// The observer hears of a query after its answer was sent.
	deadline := time.Now().Add(5 * time.Second)
	for {
		e.obs.mu.Lock()
		hits, misses, queries := e.obs.hits, e.obs.misses, strings.Join(e.obs.queries, ",")
		e.obs.mu.Unlock()
		if hits == 1 && misses == 2 && queries == "status=ok,status=ok,status=ok" {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("observed hits %d misses %d queries %v", hits, misses, queries)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func TestQueryErrors(t *testing.T) {
	e := setup(t, false)
	// Roles: bob has none on po; pub lets anyone view; an unknown project
	// is forbidden to non-admins (nothing said about its existence) and
	// not_found to an admin.
	err := wantError(t, e.ask("berth.q.po.status", `{"user":"cli:bob"}`), "forbidden")
	if !strings.Contains(err.Message, "cli:bob may not status on po") {
		t.Fatalf("forbidden message %q", err.Message)
	}
	if code, _ := queryError(t, e.ask("berth.q.pub.config", `{"user":"cli:bob"}`)); code != "" {
		t.Fatal("anonymous viewer refused config")
	}
	wantError(t, e.ask("berth.q.nope.status", `{"user":"cli:bob"}`), "forbidden")
	err = wantError(t, e.ask("berth.q.nope.status", `{"user":"cli:admin"}`), "not_found")
	if !strings.Contains(err.Hint, "config.set") {
		t.Fatalf("not_found hint %q", err.Hint)
	}
	// Strict bodies, as for commands.
	for _, body := range []string{``, `{}`, `{"user":"cli:a","extra":1}`, `{"user":"cli:a","USER":"cli:b"}`, `{"user":"cli:a"} {}`,
		`{"user":"cli:alice","args":{"tail":"x"}}`, "{\"user\":\"cli:\xff\"}"} {
		wantError(t, e.ask("berth.q.po.logs", body), "bad_request")
	}
	wantError(t, e.ask("berth.q.Bad_Name.status", `{"user":"cli:admin"}`), "bad_request")
	// Follow is for the command subject.
	err = wantError(t, e.ask("berth.q.po.logs", `{"user":"cli:alice","args":{"follow_s":5}}`), "bad_request")
	if err.Message != "follow is only available on the command subject" || !strings.Contains(err.Hint, "berth.cmd.po.logs") {
		t.Fatalf("follow refusal %+v", err)
	}
	wantError(t, e.ask("berth.q.po.logs", `{"user":"cli:alice","args":{"service":"db"}}`), "not_found")
}

func TestQueryLogsConfigHistory(t *testing.T) {
	e := setup(t, false)
	m := e.ask("berth.q.po.logs", `{"user":"cli:alice","args":{"tail":2,"service":"worker"}}`)
	var lr handlers.LogsResult
	if err := json.Unmarshal(m.Data, &lr); err != nil || lr.Service != "worker" || lr.Count != 2 || len(lr.Lines) != 2 || lr.InEvents {
		t.Fatalf("logs %s", m.Data)
	}
	m = e.ask("berth.q.po.config", `{"user":"cli:alice"}`)
	var p berth.Project
	if err := json.Unmarshal(m.Data, &p); err != nil || p.Name != "po" || p.PrimaryService != "web" {
		t.Fatalf("config %s", m.Data)
	}
	if err := e.st.AppendHistory(context.Background(), "po", &berth.HistoryEntry{RequestID: "r1", Action: "deploy", User: "cli:alice", OK: true}); err != nil {
		t.Fatal(err)
	}
	m = e.ask("berth.q.po.history", `{"user":"cli:alice","args":{"limit":5}}`)
	var h struct {
		Entries []berth.HistoryEntry `json:"entries"`
		Count   int                  `json:"count"`
	}
	if err := json.Unmarshal(m.Data, &h); err != nil || h.Count != 1 || h.Entries[0].RequestID != "r1" {
		t.Fatalf("history %s", m.Data)
	}
}

func TestQueryProjects(t *testing.T) {
	e := setup(t, false)
	for user, want := range map[string]string{
		"cli:admin": "po,pub,secret", // a global admin sees every project
		"cli:alice": "po,pub",        // a role on po, and pub is open to viewers
		"cli:bob":   "pub",
	} {
		m := e.ask("berth.q.projects", fmt.Sprintf(`{"user":%q}`, user))
		var res micro.ProjectsResult
		if err := json.Unmarshal(m.Data, &res); err != nil || strings.Join(res.Projects, ",") != want || res.Count != len(res.Projects) {
			t.Fatalf("projects of %s: %s, want %s", user, m.Data, want)
		}
	}
	wantError(t, e.ask("berth.q.projects", `{"user":"cli:bob","args":{"all":true}}`), "bad_request")
	// berth.q.fleet shows the same projects to each user (here, with no
	// fleet, all of them unplaced).
	for user, want := range map[string]string{"cli:admin": "po,pub,secret", "cli:alice": "po,pub", "cli:bob": "pub"} {
		m := e.ask("berth.q.fleet", fmt.Sprintf(`{"user":%q}`, user))
		var res micro.FleetResult
		if err := json.Unmarshal(m.Data, &res); err != nil || strings.Join(res.Unplaced, ",") != want {
			t.Fatalf("fleet of %s: %s, want unplaced %s", user, m.Data, want)
		}
	}
}

func TestQueryMicroInfoAndStats(t *testing.T) {
	e := setup(t, false)
	e.ask("berth.q.po.status", `{"user":"cli:alice"}`)
	e.ask("berth.q.po.status", `{"user":"cli:bob"}`) // forbidden: an error in the stats

	m, err := e.nc.Request("$SRV.INFO.berth", nil, 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	var info natsmicro.Info
	if err := json.Unmarshal(m.Data, &info); err != nil {
		t.Fatal(err)
	}
	subjects := map[string]string{}
	for _, ep := range info.Endpoints {
		subjects[ep.Name] = ep.Subject + " " + ep.QueueGroup
	}
	want := map[string]string{
		"status": "berth.q.*.status berth-queries", "logs": "berth.q.*.logs berth-queries", "config": "berth.q.*.config berth-queries",
		"history": "berth.q.*.history berth-queries", "releases": "berth.q.*.releases berth-queries",
		"projects": "berth.q.projects berth-queries", "fleet": "berth.q.fleet berth-queries",
	}
	if info.Name != "berth" || info.Version != micro.Version || fmt.Sprint(subjects) != fmt.Sprint(want) {
		t.Fatalf("info %s", m.Data)
	}

	// The service counts a request once its handler has returned, which
	// is after the reply went out: the last query may not be counted yet.
	var stats natsmicro.Stats
	for deadline := time.Now().Add(5 * time.Second); ; time.Sleep(20 * time.Millisecond) {
		m, err = e.nc.Request("$SRV.STATS.berth", nil, 5*time.Second)
		if err != nil {
			t.Fatal(err)
		}
		if err := json.Unmarshal(m.Data, &stats); err != nil {
			t.Fatal(err)
		}
		i := slices.IndexFunc(stats.Endpoints, func(ep *natsmicro.EndpointStats) bool { return ep.Name == "status" })
		if i < 0 {
			t.Fatalf("stats %s", m.Data)
		}
		ep := stats.Endpoints[i]
		if ep.NumRequests == 2 && ep.NumErrors == 1 && strings.HasPrefix(ep.LastError, "forbidden:") {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("status stats %+v", ep)
		}
	}
	if len(stats.Endpoints) != 7 {
		t.Fatalf("stats %s", m.Data)
	}
}

func TestQuerySigned(t *testing.T) {
	e := setup(t, true)
	if code, _ := queryError(t, e.ask("berth.q.po.status", `{"user":"cli:alice"}`)); code != "" {
		t.Fatal("a signed query was refused")
	}
	// Unsigned.
	m, err := e.nc.Request("berth.q.po.status", []byte(`{"user":"cli:alice"}`), 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	wantError(t, m, "unauthorized")
	// Signed for another subject: the signature covers the subject.
	msg := nats.NewMsg("berth.q.secret.status")
	msg.Data = []byte(`{"user":"cli:admin"}`)
	ts, sig := auth.Sign(e.secret, time.Now(), "berth.q.po.status", msg.Data)
	msg.Header.Set(auth.HeaderTimestamp, ts)
	msg.Header.Set(auth.HeaderSignature, sig)
	if m, err = e.nc.RequestMsg(msg, 5*time.Second); err != nil {
		t.Fatal(err)
	}
	wantError(t, m, "unauthorized")
	// A replay of a signed query.
	msg = nats.NewMsg("berth.q.projects")
	msg.Data = []byte(`{"user":"cli:admin"}`)
	ts, sig = auth.Sign(e.secret, time.Now(), msg.Subject, msg.Data)
	msg.Header.Set(auth.HeaderTimestamp, ts)
	msg.Header.Set(auth.HeaderSignature, sig)
	if m, err = e.nc.RequestMsg(msg, 5*time.Second); err != nil || m.Header.Get(natsmicro.ErrorCodeHeader) != "" {
		t.Fatalf("first use: %v %v", err, m.Header)
	}
	if m, err = e.nc.RequestMsg(msg, 5*time.Second); err != nil {
		t.Fatal(err)
	}
	if e := wantError(t, m, "unauthorized"); !strings.Contains(e.Message, "already used") {
		t.Fatalf("replay: %+v", e)
	}
}

func TestQueryStopDrains(t *testing.T) {
	e := setup(t, false)
	if err := e.srv.Stop(); err != nil {
		t.Fatal(err)
	}
	if _, err := e.nc.Request("berth.q.po.status", []byte(`{"user":"cli:alice"}`), 500*time.Millisecond); err == nil {
		t.Fatal("a stopped service answered")
	}
	if err := e.srv.Stop(); err != nil { // idempotent
		t.Fatal(err)
	}
}

func TestDecodeQuery(t *testing.T) {
	q, err := events.DecodeQuery([]byte(`{"user":"cli:me","args":{"tail":3}}`))
	if err != nil || q.User != "cli:me" || string(q.Args) != `{"tail":3}` {
		t.Fatalf("%+v %v", q, err)
	}
	for _, b := range []string{`null`, `[]`, `{"user":" x"}`, `{"user":"a","confirm":"yes"}`, `{"user":"a","reply_to":"x"}`} {
		if _, err := events.DecodeQuery([]byte(b)); events.ErrorCode(err) != events.CodeBadRequest {
			t.Fatalf("%s: %v", b, err)
		}
	}
}
