package store_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/berth-ops/berth"
	"github.com/berth-ops/berth/events"
	"github.com/berth-ops/berth/internal/testenv"
	"github.com/berth-ops/berth/store"
)

// newStore returns a Store on a fresh Redis database, closed when t ends.
func newStore(t *testing.T, cfg store.Config) *store.Store {
	t.Helper()
	if cfg.URL == "" {
		cfg.URL = testenv.Redis(t)
	}
	s, err := store.New(cfg)
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	t.Cleanup(func() { s.Close() })
	return s
}

// wantCode fails t unless err carries code.
func wantCode(t *testing.T, err error, code events.Code) *events.Error {
	t.Helper()
	if got := events.ErrorCode(err); got != code {
		t.Fatalf("error %v: code %q, want %q", err, got, code)
	}
	var e *events.Error
	errors.As(err, &e)
	return e
}

var t0 = time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)

func sampleProject(name string) *berth.Project {
	return &berth.Project{
		Name:           name,
		Workspace:      "/srv/work/" + name,
		Production:     "/srv/prod/" + name,
		ComposeProject: "berth-" + name,
		ComposeFiles:   []string{"compose.yaml", "compose.prod.yaml"},
		Services:       []string{"app", "db"},
		PrimaryService: "app",
		CreatedAt:      t0,
		UpdatedAt:      t0.Add(time.Hour),
		UpdatedBy:      "alice",
	}
}

func TestPing(t *testing.T) {
	s := newStore(t, store.Config{})
	if err := s.Ping(t.Context()); err != nil {
		t.Fatalf("Ping: %v", err)
	}
}

func TestProjectRoundTrip(t *testing.T) {
	s := newStore(t, store.Config{})
	ctx := t.Context()

	names, err := s.ListProjects(ctx)
	if err != nil || names == nil || len(names) != 0 {
		t.Fatalf("ListProjects on an empty db = %#v, %v; want an empty slice", names, err)
	}

	for _, n := range []string{"web", "api", "zeta", "billing"} {
		if err := s.PutProject(ctx, sampleProject(n)); err != nil {
			t.Fatalf("PutProject(%s): %v", n, err)
		}
	}
	got, err := s.GetProject(ctx, "web")
	if err != nil {
		t.Fatalf("GetProject: %v", err)
	}
	if want := sampleProject("web"); !reflect.DeepEqual(got, want) {
		t.Errorf("GetProject = %+v\nwant %+v", got, want)
	}

	// Replace.
	p := sampleProject("web")
	p.Services = []string{"app"}
	p.UpdatedBy = "bob"
	if err := s.PutProject(ctx, p); err != nil {
		t.Fatalf("PutProject (replace): %v", err)
	}
	got, err = s.GetProject(ctx, "web")
	if err != nil || !reflect.DeepEqual(got, p) {
		t.Errorf("GetProject after replace = %+v, %v; want %+v", got, err, p)
	}

	names, err = s.ListProjects(ctx)
	if err != nil {
		t.Fatalf("ListProjects: %v", err)
	}
	if want := []string{"api", "billing", "web", "zeta"}; !reflect.DeepEqual(names, want) {
		t.Errorf("ListProjects = %v, want %v", names, want)
	}
}

func TestGetProjectNotFound(t *testing.T) {
	s := newStore(t, store.Config{})
	_, err := s.GetProject(t.Context(), "ghost")
	e := wantCode(t, err, events.CodeNotFound)
	if !strings.Contains(e.Hint, "config.set") || !strings.Contains(e.Message, "ghost") {
		t.Errorf("not_found error %q should name the project and hint at config.set", e)
	}
}

func TestPutProjectWithoutName(t *testing.T) {
	s := newStore(t, store.Config{})
	wantCode(t, s.PutProject(t.Context(), &berth.Project{}), events.CodeBadRequest)
}

func TestDeleteProjectKeepsHistory(t *testing.T) {
	s := newStore(t, store.Config{})
	ctx := t.Context()
	if err := s.PutProject(ctx, sampleProject("web")); err != nil {
		t.Fatal(err)
	}
	if err := s.PutProject(ctx, sampleProject("api")); err != nil {
		t.Fatal(err)
	}
	if err := s.PutStatus(ctx, "web", &berth.CachedStatus{TakenAt: t0, Report: json.RawMessage(`{}`)}, time.Hour); err != nil {
		t.Fatal(err)
	}
	if err := s.AppendHistory(ctx, "web", &berth.HistoryEntry{RequestID: "r1", Action: "up", OK: true}); err != nil {
		t.Fatal(err)
	}

	if err := s.DeleteProject(ctx, "web"); err != nil {
		t.Fatalf("DeleteProject: %v", err)
	}
	_, err := s.GetProject(ctx, "web")
	wantCode(t, err, events.CodeNotFound)
	_, err = s.GetStatus(ctx, "web")
	wantCode(t, err, events.CodeNotFound)
	names, err := s.ListProjects(ctx)
	if err != nil || !reflect.DeepEqual(names, []string{"api"}) {
		t.Errorf("ListProjects after delete = %v, %v; want [api]", names, err)
	}
	h, err := s.History(ctx, "web", 10)
	if err != nil || len(h) != 1 || h[0].RequestID != "r1" {
		t.Errorf("History after delete = %+v, %v; want the one entry", h, err)
	}

	wantCode(t, s.DeleteProject(ctx, "web"), events.CodeNotFound)
}

func TestStatusRoundTrip(t *testing.T) {
	s := newStore(t, store.Config{})
	ctx := t.Context()

	_, err := s.GetStatus(ctx, "web")
	wantCode(t, err, events.CodeNotFound)

	st := &berth.CachedStatus{TakenAt: t0, Report: json.RawMessage(`{"project":"web","containers":[1,2]}`)}
	if err := s.PutStatus(ctx, "web", st, time.Minute); err != nil {
		t.Fatalf("PutStatus: %v", err)
	}
	got, err := s.GetStatus(ctx, "web")
	if err != nil {
		t.Fatalf("GetStatus: %v", err)
	}
	if !got.TakenAt.Equal(st.TakenAt) || string(got.Report) != string(st.Report) {
		t.Errorf("GetStatus = %+v (report %s), want %+v", got, got.Report, st)
	}
	pttl := s.Client().PTTL(ctx, s.Keys().Status("web")).Val()
	if pttl <= 0 || pttl > time.Minute {
		t.Errorf("status PTTL = %v, want in (0, 1m]", pttl)
	}

	if err := s.InvalidateStatus(ctx, "web"); err != nil {
		t.Fatalf("InvalidateStatus: %v", err)
	}
	_, err = s.GetStatus(ctx, "web")
	wantCode(t, err, events.CodeNotFound)
	if err := s.InvalidateStatus(ctx, "web"); err != nil {
		t.Errorf("InvalidateStatus of a missing status: %v", err)
	}

	wantCode(t, s.PutStatus(ctx, "web", st, 0), events.CodeInternal)
}

func TestGetProjectStatus(t *testing.T) {
	s := newStore(t, store.Config{})
	ctx := t.Context()

	_, _, err := s.GetProjectStatus(ctx, "web")
	wantCode(t, err, events.CodeNotFound)
	// A status without its project is still "not configured".
	st := &berth.CachedStatus{TakenAt: t0, Report: json.RawMessage(`{"project":"web"}`)}
	if err := s.PutStatus(ctx, "web", st, time.Minute); err != nil {
		t.Fatal(err)
	}
	_, _, err = s.GetProjectStatus(ctx, "web")
	wantCode(t, err, events.CodeNotFound)

	want := sampleProject("web")
	if err := s.PutProject(ctx, want); err != nil {
		t.Fatal(err)
	}
	p, got, err := s.GetProjectStatus(ctx, "web")
	if err != nil || !reflect.DeepEqual(p, want) || got == nil || !got.TakenAt.Equal(t0) || string(got.Report) != string(st.Report) {
		t.Fatalf("GetProjectStatus = %+v, %+v, %v; want the project and the status", p, got, err)
	}

	if err := s.InvalidateStatus(ctx, "web"); err != nil {
		t.Fatal(err)
	}
	if p, got, err := s.GetProjectStatus(ctx, "web"); err != nil || p == nil || got != nil {
		t.Fatalf("without a status: %+v, %+v, %v; want the project alone", p, got, err)
	}
	// An unreadable status entry is no status: a fresh one replaces it.
	if err := s.Client().Set(ctx, s.Keys().Status("web"), "{broken", time.Minute).Err(); err != nil {
		t.Fatal(err)
	}
	if p, got, err := s.GetProjectStatus(ctx, "web"); err != nil || p == nil || got != nil {
		t.Fatalf("with a broken status: %+v, %+v, %v; want the project alone", p, got, err)
	}
	// An unreadable project is an error, not a missing one.
	if err := s.Client().Set(ctx, s.Keys().Project("web"), "{broken", 0).Err(); err != nil {
		t.Fatal(err)
	}
	if _, _, err := s.GetProjectStatus(ctx, "web"); err == nil || events.ErrorCode(err) == events.CodeNotFound {
		t.Fatalf("with a broken project: %v, want an error other than not_found", err)
	}
}

func TestStatusExpires(t *testing.T) {
	s := newStore(t, store.Config{})
	ctx := t.Context()
	st := &berth.CachedStatus{TakenAt: t0, Report: json.RawMessage(`{}`)}
	if err := s.PutStatus(ctx, "web", st, 50*time.Millisecond); err != nil {
		t.Fatalf("PutStatus: %v", err)
	}
	deadline := time.Now().Add(5 * time.Second)
	for {
		_, err := s.GetStatus(ctx, "web")
		if events.ErrorCode(err) == events.CodeNotFound {
			return
		}
		if err != nil {
			t.Fatalf("GetStatus: %v", err)
		}
		if time.Now().After(deadline) {
			t.Fatal("status with a 50ms TTL still cached after 5s")
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func sampleRequest(id, worker string) *berth.RequestRecord {
	return &berth.RequestRecord{
		ID: id, User: "test:u", Project: "web", Action: "up", State: berth.RequestRunning,
		Worker: worker, StartedAt: t0,
	}
}

func TestBeginRequestOnce(t *testing.T) {
	s := newStore(t, store.Config{})
	ctx := t.Context()

	first := sampleRequest("r1", "worker-a")
	got, created, err := s.BeginRequest(ctx, first, time.Hour)
	if err != nil || !created || !reflect.DeepEqual(got, first) {
		t.Fatalf("first BeginRequest = %+v, %v, %v; want the record, true", got, created, err)
	}
	pttl := s.Client().PTTL(ctx, s.Keys().Request("test:u", "r1")).Val()
	if pttl <= 0 || pttl > time.Hour {
		t.Errorf("request PTTL = %v, want in (0, 1h]", pttl)
	}

	got, created, err = s.BeginRequest(ctx, sampleRequest("r1", "worker-b"), time.Hour)
	if err != nil || created {
		t.Fatalf("second BeginRequest: created %v, err %v; want false, nil", created, err)
	}
	if !reflect.DeepEqual(got, first) {
		t.Errorf("second BeginRequest returned %+v, want the first record %+v", got, first)
	}

	stored, err := s.GetRequest(ctx, "test:u", "r1")
	if err != nil || stored.Worker != "worker-a" {
		t.Errorf("GetRequest = %+v, %v; want worker-a's record", stored, err)
	}
}

func TestTakeOverRequest(t *testing.T) {
	s := newStore(t, store.Config{})
	ctx := t.Context()
	if _, _, err := s.BeginRequest(ctx, sampleRequest("r1", "worker-a"), time.Hour); err != nil {
		t.Fatal(err)
	}
	b := sampleRequest("r1", "worker-b")
	if err := s.TakeOverRequest(ctx, b, time.Minute); err != nil {
		t.Fatalf("TakeOverRequest: %v", err)
	}
	got, err := s.GetRequest(ctx, "test:u", "r1")
	if err != nil || !reflect.DeepEqual(got, b) {
		t.Errorf("GetRequest after take-over = %+v, %v; want %+v", got, err, b)
	}
	if pttl := s.Client().PTTL(ctx, s.Keys().Request("test:u", "r1")).Val(); pttl <= 0 || pttl > time.Minute {
		t.Errorf("PTTL after take-over = %v, want in (0, 1m]", pttl)
	}
}

func TestFinishRequest(t *testing.T) {
	s := newStore(t, store.Config{})
	ctx := t.Context()
	begun := sampleRequest("r1", "worker-a")
	if _, _, err := s.BeginRequest(ctx, begun, time.Hour); err != nil {
		t.Fatal(err)
	}
	result := json.RawMessage(`{"type":"result","ok":true,"big":12345678901234567890,"list":[],"s":"a/b<c>"}`)
	if err := s.FinishRequest(ctx, begun, result, 10*time.Minute); err != nil {
		t.Fatalf("FinishRequest: %v", err)
	}
	got, err := s.GetRequest(ctx, "test:u", "r1")
	if err != nil {
		t.Fatalf("GetRequest: %v", err)
	}
	if got.State != berth.RequestDone {
		t.Errorf("state %q, want done", got.State)
	}
	if string(got.Result) != string(result) {
		t.Errorf("result %s, want the same bytes as %s", got.Result, result)
	}
	want := *begun
	want.State, want.Result = berth.RequestDone, got.Result
	if !reflect.DeepEqual(*got, want) {
		t.Errorf("record %+v, want %+v", *got, want)
	}
	pttl := s.Client().PTTL(ctx, s.Keys().Request("test:u", "r1")).Val()
	if pttl <= 9*time.Minute || pttl > 10*time.Minute {
		t.Errorf("PTTL after finish = %v, want the finish ttl (10m)", pttl)
	}

	// A redelivery sees the finished record.
	again, created, err := s.BeginRequest(ctx, sampleRequest("r1", "worker-b"), time.Hour)
	if err != nil || created || again.State != berth.RequestDone || string(again.Result) != string(result) {
		t.Errorf("BeginRequest after finish = %+v, %v, %v; want the done record", again, created, err)
	}
}

func TestFinishMissingRequest(t *testing.T) {
	s := newStore(t, store.Config{})
	ctx := t.Context()
	if err := s.FinishRequest(ctx, sampleRequest("gone", "worker-a"), json.RawMessage(`{"ok":false}`), time.Minute); err != nil {
		t.Fatalf("FinishRequest: %v", err)
	}
	got, err := s.GetRequest(ctx, "test:u", "gone")
	if err != nil || got.ID != "gone" || got.Worker != "worker-a" || got.State != berth.RequestDone || string(got.Result) != `{"ok":false}` {
		t.Errorf("GetRequest = %+v, %v; want a done record", got, err)
	}
}

func TestFinishRequestInvalidResult(t *testing.T) {
	s := newStore(t, store.Config{})
	err := s.FinishRequest(t.Context(), sampleRequest("r1", "worker-a"), json.RawMessage(`{not json`), time.Minute)
	wantCode(t, err, events.CodeInternal)
}

func TestGetRequestNotFound(t *testing.T) {
	s := newStore(t, store.Config{})
	_, err := s.GetRequest(t.Context(), "test:u", "nope")
	wantCode(t, err, events.CodeNotFound)
}

func TestHistoryCap(t *testing.T) {
	const histCap = 10
	s := newStore(t, store.Config{HistoryCap: histCap})
	ctx := t.Context()
	for i := range histCap + 5 {
		e := &berth.HistoryEntry{
			RequestID: fmt.Sprintf("r%d", i), Action: "restart", User: "alice", OK: i%2 == 0,
			StartedAt: t0.Add(time.Duration(i) * time.Minute), DurationMS: int64(i),
			Details: map[string]any{"i": float64(i)},
		}
		if i%2 == 1 {
			e.ErrorCode = events.CodeHealthFailed
		}
		if err := s.AppendHistory(ctx, "web", e); err != nil {
			t.Fatalf("AppendHistory %d: %v", i, err)
		}
	}
	if n := s.Client().LLen(ctx, s.Keys().History("web")).Val(); n != histCap {
		t.Errorf("LLEN = %d, want %d", n, histCap)
	}
	h, err := s.History(ctx, "web", 100)
	if err != nil {
		t.Fatalf("History: %v", err)
	}
	if len(h) != histCap {
		t.Fatalf("History returned %d entries, want %d", len(h), histCap)
	}
	for j, e := range h {
		i := histCap + 4 - j // newest first
		if e.RequestID != fmt.Sprintf("r%d", i) || e.DurationMS != int64(i) || e.Details["i"] != float64(i) ||
			!e.StartedAt.Equal(t0.Add(time.Duration(i)*time.Minute)) {
			t.Errorf("entry %d = %+v, want r%d", j, e, i)
		}
	}
	if h[0].ErrorCode != "" || h[1].ErrorCode != events.CodeHealthFailed {
		t.Errorf("error codes %q %q, want \"\" and health_failed", h[0].ErrorCode, h[1].ErrorCode)
	}

	h, err = s.History(ctx, "web", 3)
	if err != nil || len(h) != 3 || h[0].RequestID != "r14" || h[2].RequestID != "r12" {
		t.Errorf("History(3) = %+v, %v; want r14, r13, r12", h, err)
	}
	for _, n := range []int{0, -1} {
		h, err = s.History(ctx, "web", n)
		if err != nil || h == nil || len(h) != 0 {
			t.Errorf("History(%d) = %#v, %v; want an empty slice", n, h, err)
		}
	}
	h, err = s.History(ctx, "never-seen", 10)
	if err != nil || h == nil || len(h) != 0 {
		t.Errorf("History of an unknown project = %#v, %v; want an empty slice", h, err)
	}
}

func TestPrefixIsolation(t *testing.T) {
	url := testenv.Redis(t)
	a := newStore(t, store.Config{URL: url, Prefix: "a:"})
	b := newStore(t, store.Config{URL: url, Prefix: "b:"})
	ctx := t.Context()
	if err := a.PutProject(ctx, sampleProject("web")); err != nil {
		t.Fatal(err)
	}
	if _, err := b.GetProject(ctx, "web"); events.ErrorCode(err) != events.CodeNotFound {
		t.Errorf("store b sees store a's project: %v", err)
	}
	if n := a.Client().Exists(ctx, "a:{cfg}:project:web", "a:{cfg}:projects").Val(); n != 2 {
		t.Errorf("keys a:{cfg}:project:web and a:{cfg}:projects: %d exist, want 2", n)
	}
}

func TestCorruptValue(t *testing.T) {
	s := newStore(t, store.Config{})
	ctx := t.Context()
	if err := s.Client().Set(ctx, s.Keys().Project("web"), "{broken", 0).Err(); err != nil {
		t.Fatal(err)
	}
	_, err := s.GetProject(ctx, "web")
	wantCode(t, err, events.CodeInternal)
}

func TestCanceledContext(t *testing.T) {
	s := newStore(t, store.Config{})
	ctx, cancel := context.WithCancel(t.Context())
	cancel()
	_, err := s.GetProject(ctx, "web")
	if !errors.Is(err, context.Canceled) {
		t.Errorf("GetProject with a canceled context: %v, want context.Canceled", err)
	}
}

// closedPort returns a loopback port nothing listens on.
func closedPort(t *testing.T) int {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	port := l.Addr().(*net.TCPAddr).Port
	l.Close()
	return port
}

func TestStoreUnavailable(t *testing.T) {
	const password = "s3cret-pw"
	addr := fmt.Sprintf("127.0.0.1:%d", closedPort(t))
	s := newStore(t, store.Config{
		URL:         "redis://berth:" + password + "@" + addr + "/0",
		DialTimeout: 500 * time.Millisecond,
		ReadTimeout: 500 * time.Millisecond,
	})
	ctx := t.Context()
	rec := sampleRequest("r1", "w")
	conf := sampleConfirmation("tok", "web", "down", "alice")
	calls := map[string]func() error{
		"Ping":             func() error { return s.Ping(ctx) },
		"GetProject":       func() error { _, err := s.GetProject(ctx, "web"); return err },
		"PutProject":       func() error { return s.PutProject(ctx, sampleProject("web")) },
		"DeleteProject":    func() error { return s.DeleteProject(ctx, "web") },
		"ListProjects":     func() error { _, err := s.ListProjects(ctx); return err },
		"GetStatus":        func() error { _, err := s.GetStatus(ctx, "web"); return err },
		"GetProjectStatus": func() error { _, _, err := s.GetProjectStatus(ctx, "web"); return err },
		"PutStatus":        func() error { return s.PutStatus(ctx, "web", &berth.CachedStatus{}, time.Second) },
		"InvalidateStatus": func() error { return s.InvalidateStatus(ctx, "web") },
		"BeginRequest":     func() error { _, _, err := s.BeginRequest(ctx, rec, time.Second); return err },
		"TakeOverRequest":  func() error { return s.TakeOverRequest(ctx, rec, time.Second) },
		"FinishRequest": func() error {
			return s.FinishRequest(ctx, sampleRequest("r1", "w"), json.RawMessage(`{}`), time.Second)
		},
		"GetRequest":       func() error { _, err := s.GetRequest(ctx, "test:u", "r1"); return err },
		"AppendHistory":    func() error { return s.AppendHistory(ctx, "web", &berth.HistoryEntry{}) },
		"History":          func() error { _, err := s.History(ctx, "web", 5); return err },
		"PutConfirmation":  func() error { return s.PutConfirmation(ctx, conf, time.Second) },
		"PeekConfirmation": func() error { _, err := s.PeekConfirmation(ctx, "tok"); return err },
		"LatestConfirmation": func() error {
			_, err := s.LatestConfirmation(ctx, "web", "down", "alice")
			return err
		},
		"TakeConfirmation":     func() error { _, err := s.TakeConfirmation(ctx, conf); return err },
		"PendingConfirmations": func() error { _, err := s.PendingConfirmations(ctx, "alice"); return err },
		"AcquireLock": func() error {
			_, _, err := s.AcquireLock(ctx, "web", sampleLock("a"), time.Second)
			return err
		},
		"ExtendLock":  func() error { _, err := s.ExtendLock(ctx, "web", "a", time.Second); return err },
		"ReleaseLock": func() error { return s.ReleaseLock(ctx, "web", "a") },
		"LockHolder":  func() error { _, err := s.LockHolder(ctx, "web"); return err },
	}
	for name, call := range calls {
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			err := call()
			if got := events.ErrorCode(err); got != events.CodeStoreUnavailable {
				t.Fatalf("error %v: code %q, want store_unavailable", err, got)
			}
			e := events.AsError(err)
			if !strings.Contains(e.Hint, addr) || !strings.Contains(e.Hint, "retried") {
				t.Errorf("hint %q should name %s and say the command can be retried", e.Hint, addr)
			}
			if strings.Contains(err.Error(), password) {
				t.Errorf("error leaks the password: %v", err)
			}
		})
	}
}

func TestStoreUnavailableDuringOutage(t *testing.T) {
	srv := testenv.RedisProcess(t)
	s := newStore(t, store.Config{URL: srv.URL, DialTimeout: 500 * time.Millisecond, ReadTimeout: 500 * time.Millisecond})
	ctx := t.Context()
	if err := s.PutProject(ctx, sampleProject("web")); err != nil {
		t.Fatalf("PutProject: %v", err)
	}

	srv.Stop()
	_, err := s.GetProject(ctx, "web")
	wantCode(t, err, events.CodeStoreUnavailable)

	srv.Start()
	// The server has no persistence: the project is gone, and the store
	// reconnects on its own.
	_, err = s.GetProject(ctx, "web")
	wantCode(t, err, events.CodeNotFound)
	if err := s.Ping(ctx); err != nil {
		t.Errorf("Ping after restart: %v", err)
	}
}

func TestConfigValidate(t *testing.T) {
	const password = "s3cret-pw"
	for _, c := range []struct {
		name string
		cfg  store.Config
	}{
		{"empty URL", store.Config{}},
		{"bad scheme", store.Config{URL: "http://127.0.0.1:6379"}},
		{"bad port with password", store.Config{URL: "redis://u:" + password + "@127.0.0.1:notaport/0"}},
		{"bad db with password", store.Config{URL: "redis://u:" + password + "@127.0.0.1:6379/x"}},
		{"unknown option", store.Config{URL: "redis://127.0.0.1:6379/0?bogus=1"}},
		{"negative cap", store.Config{URL: "redis://127.0.0.1:6379/0", HistoryCap: -1}},
		{"negative timeout", store.Config{URL: "redis://127.0.0.1:6379/0", DialTimeout: -time.Second}},
	} {
		t.Run(c.name, func(t *testing.T) {
			err := c.cfg.Validate()
			if err == nil {
				t.Fatal("Validate accepted the config")
			}
			if strings.Contains(err.Error(), password) {
				t.Errorf("error leaks the password: %v", err)
			}
			if _, err := store.New(c.cfg); err == nil {
				t.Error("New accepted the config")
			}
		})
	}
	for _, u := range []string{
		"redis://127.0.0.1:6379/0",
		"rediss://user:pw@redis.example:6380/2",
		"unix:///run/redis/redis.sock?db=3",
	} {
		s, err := store.New(store.Config{URL: u})
		if err != nil {
			t.Errorf("New(%s): %v", u, err)
			continue
		}
		if strings.Contains(s.Addr(), "pw") {
			t.Errorf("Addr %q holds credentials", s.Addr())
		}
		s.Close()
	}
}

// GetProjects reads many configs at once, in order, with nil for a
// project that is not configured or whose config is broken; a store that
// does not answer is store_unavailable.
func TestGetProjects(t *testing.T) {
	s := newStore(t, store.Config{})
	ctx := t.Context()
	for _, n := range []string{"gp-a", "gp-b"} {
		if err := s.PutProject(ctx, sampleProject(n)); err != nil {
			t.Fatal(err)
		}
	}
	if err := s.Client().Set(ctx, s.Keys().Project("gp-broken"), "{broken", 0).Err(); err != nil {
		t.Fatal(err)
	}
	got, err := s.GetProjects(ctx, []string{"gp-b", "gp-missing", "gp-broken", "gp-a"})
	if err != nil {
		t.Fatal(err)
	}
	if len(got) != 4 || got[0] == nil || got[0].Name != "gp-b" || got[1] != nil || got[2] != nil || got[3] == nil || got[3].Name != "gp-a" {
		t.Fatalf("GetProjects: %+v", got)
	}
	if got, err := s.GetProjects(ctx, nil); err != nil || len(got) != 0 {
		t.Fatalf("GetProjects of none: %v, %v", got, err)
	}
	down := newStore(t, store.Config{URL: fmt.Sprintf("redis://127.0.0.1:%d/0", closedPort(t))})
	_, err = down.GetProjects(ctx, []string{"gp-a"})
	wantCode(t, err, events.CodeStoreUnavailable)
}
