package handlers

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/berth-ops/berth"
	"github.com/berth-ops/berth/events"
	"github.com/berth-ops/berth/redact"
)

func sampleProject() *berth.Project {
	return &berth.Project{Name: "po", ComposeProject: "po", Services: []string{"db", "web", "worker"}, PrimaryService: "web"}
}

func TestBuildStatusSummaryAndMissing(t *testing.T) {
	now := time.Date(2026, 1, 1, 12, 0, 0, 0, time.UTC)
	cs := []berth.Container{
		{Service: "web", Name: "po-web-1", State: "running", Health: "healthy", StartedAt: now.Add(-90 * time.Second),
			Ports: []berth.Port{{HostIP: "127.0.0.1", HostPort: 49153, ContainerPort: 8080, Proto: "tcp"}}},
		{Service: "worker", Name: "po-worker-1", State: "exited", ExitCode: 2, RestartCount: 3},
	}
	rep := BuildStatus(sampleProject(), cs, now)
	if len(rep.Services) != 3 || rep.Services[0].Service != "db" || rep.Services[0].State != "missing" {
		t.Fatalf("services %+v", rep.Services)
	}
	web := rep.Services[1]
	if web.UptimeS != 90 || web.Ports[0] != "127.0.0.1:49153->8080/tcp" {
		t.Fatalf("web %+v", web)
	}
	want := StatusSummary{Containers: 2, Running: 1, Healthy: 1, Stopped: 1, Missing: 1}
	if rep.Summary != want {
		t.Fatalf("summary %+v, want %+v", rep.Summary, want)
	}
}

func TestStatusCacheHitAndRefresh(t *testing.T) {
	f := newFixture(t)
	f.store.projects["po"] = sampleProject()
	start := time.Now()
	f.engine.containers = []berth.Container{{Service: "web", Name: "po-web-1", State: "running", StartedAt: start}}
	clock := start
	f.svc.Now = func() time.Time { return clock }
	get := func(args string) *StatusReport {
		t.Helper()
		out, err := f.svc.Status(context.Background(), &Request{Project: "po", Args: json.RawMessage(args)}, nil)
		if err != nil {
			t.Fatal(err)
		}
		return out.(*StatusReport)
	}
	first := get(`{}`)
	clock = clock.Add(5 * time.Second)
	second := get(`{}`)
	if first.Cached || !second.Cached || second.CachedAt == nil || !second.CachedAt.Equal(first.TakenAt) {
		t.Fatalf("first cached=%v, second cached=%v at %v", first.Cached, second.Cached, second.CachedAt)
	}
	if second.Services[1].UptimeS != 5 {
		t.Fatalf("cached uptime %d, want it recomputed to 5", second.Services[1].UptimeS)
	}
	third := get(`{"refresh":true}`)
	if third.Cached || f.engine.calls != 2 {
		t.Fatalf("refresh served cached=%v with %d engine calls", third.Cached, f.engine.calls)
	}
}

func TestStatusReplacesAnUnreadableCacheEntry(t *testing.T) {
	f := newFixture(t)
	f.store.projects["po"] = sampleProject()
	f.engine.containers = []berth.Container{{Service: "web", Name: "po-web-1", State: "running"}}
	f.store.status["po"] = &berth.CachedStatus{TakenAt: time.Now(), Report: json.RawMessage(`{"services":`)}
	out, err := f.svc.Status(context.Background(), &Request{Project: "po"}, nil)
	if err != nil {
		t.Fatal(err)
	}
	if rep := out.(*StatusReport); rep.Cached || rep.Summary.Running != 1 {
		t.Fatalf("report %+v, want a fresh one from Docker", rep)
	}
	var rep StatusReport
	if err := json.Unmarshal(f.store.status["po"].Report, &rep); err != nil || rep.Summary.Running != 1 {
		t.Fatalf("cache entry after the refresh: %v %+v", err, rep)
	}
	out, err = f.svc.Status(context.Background(), &Request{Project: "po"}, nil)
	if err != nil || !out.(*StatusReport).Cached {
		t.Fatalf("second status %+v %v, want it from the repaired cache", out, err)
	}
}

// A container event that comes while a status is read from Docker must
// not leave that (possibly older) report in the cache.
func TestStatusNotCachedAcrossAContainerEvent(t *testing.T) {
	t.Run("event during the Docker read", func(t *testing.T) {
		f := newFixture(t)
		f.store.projects["po"] = sampleProject()
		f.engine.containers = []berth.Container{{Service: "web", Name: "po-web-1", State: "running"}}
		f.engine.onContainers = func() {
			f.svc.gens.bump("po")
			_ = f.store.InvalidateStatus(t.Context(), "po")
		}
		if _, err := f.svc.Status(t.Context(), &Request{Project: "po"}, nil); err != nil {
			t.Fatal(err)
		}
		if _, ok := f.store.status["po"]; ok {
			t.Fatal("a report read before the event was cached")
		}
		// Without an event the report is cached.
		f.engine.onContainers = nil
		if _, err := f.svc.Status(t.Context(), &Request{Project: "po"}, nil); err != nil {
			t.Fatal(err)
		}
		if _, ok := f.store.status["po"]; !ok {
			t.Fatal("no event, and still no cached report")
		}
	})
	t.Run("event while the report is stored", func(t *testing.T) {
		f := newFixture(t)
		f.store.projects["po"] = sampleProject()
		f.engine.containers = []berth.Container{{Service: "web", Name: "po-web-1", State: "running"}}
		st := &putHookStore{memStore: f.store}
		st.afterPut = func() {
			// The watch drops the entry before the put lands, then the put
			// lands: only the status handler can drop it again.
			f.svc.gens.bump("")
		}
		f.svc.Store = st
		if _, err := f.svc.Status(t.Context(), &Request{Project: "po"}, nil); err != nil {
			t.Fatal(err)
		}
		if st.puts != 1 {
			t.Fatalf("%d puts, want 1", st.puts)
		}
		if _, ok := f.store.status["po"]; ok {
			t.Fatal("a report stored as an event came stayed in the cache")
		}
	})
}

type putHookStore struct {
	*memStore
	puts     int
	afterPut func()
}

func (s *putHookStore) PutStatus(ctx context.Context, p string, cs *berth.CachedStatus, ttl time.Duration) error {
	err := s.memStore.PutStatus(ctx, p, cs, ttl)
	s.puts++
	if s.afterPut != nil {
		s.afterPut()
	}
	return err
}

func TestStatusUnknownProject(t *testing.T) {
	f := newFixture(t)
	_, err := f.svc.Status(context.Background(), &Request{Project: "nope"}, nil)
	if events.ErrorCode(err) != events.CodeNotFound || !strings.Contains(events.AsError(err).Hint, "config.set") {
		t.Fatalf("err %v", err)
	}
}

func TestLogsArguments(t *testing.T) {
	f := newFixture(t)
	f.store.projects["po"] = sampleProject()
	f.engine.containers = []berth.Container{{ID: "c1", Service: "web", Name: "po-web-1", State: "running"}}
	for i := range 100 {
		stream := "stdout"
		if i%10 == 0 {
			stream = "stderr"
		}
		f.engine.lines = append(f.engine.lines, events.LogLine{Stream: stream, Line: "line " + string(rune('a'+i%26))})
	}
	logs := func(args string) (*LogsResult, error) {
		out, err := f.svc.Logs(context.Background(), &Request{Project: "po", Args: json.RawMessage(args)}, nil)
		if err != nil {
			return nil, err
		}
		return out.(*LogsResult), nil
	}
	r, err := logs(`{}`)
	if err != nil || r.Count != 50 || r.Service != "web" || r.Container != "po-web-1" {
		t.Fatalf("default logs %+v %v", r, err)
	}
	r, _ = logs(`{"tail":3,"grep":"line [ab]$"}`)
	if r.Count != 3 || f.engine.lastLogs.Tail != 10000 {
		t.Fatalf("grep kept %d lines (engine tail %d)", r.Count, f.engine.lastLogs.Tail)
	}
	for _, l := range r.Lines {
		if !strings.HasSuffix(l.Line, "a") && !strings.HasSuffix(l.Line, "b") {
			t.Fatalf("grep let %q through", l.Line)
		}
	}
	before := time.Now()
	if _, err := logs(`{"since":"10m","timestamps":true}`); err != nil {
		t.Fatal(err)
	}
	if s := f.engine.lastLogs.Since; s.After(before.Add(-9*time.Minute)) || s.Before(before.Add(-11*time.Minute)) || !f.engine.lastLogs.Timestamps {
		t.Fatalf("since=10m gave %v", s)
	}
	for args, code := range map[string]events.Code{
		`{"tail":0}`:                  events.CodeBadRequest,
		`{"tail":-5}`:                 events.CodeBadRequest,
		`{"tail":10001}`:              events.CodeBadRequest,
		`{"follow_s":301}`:            events.CodeBadRequest,
		`{"grep":"("}`:                events.CodeBadRequest,
		`{"since":"yesterday"}`:       events.CodeBadRequest,
		`{"since":"1h","until":"2h"}`: events.CodeBadRequest,
		`{"until":"1m","follow_s":5}`: events.CodeBadRequest,
		`{"service":"nope"}`:          events.CodeNotFound,
		`{"service":"db"}`:            events.CodeNotFound,
		`{"tail":5,"extra":1}`:        events.CodeBadRequest,
	} {
		if _, err := logs(args); events.ErrorCode(err) != code {
			t.Errorf("%s: got %v, want %s", args, err, code)
		}
	}
}

// A tail larger than the result's budget goes out as log events, in
// order, none of them over the chunk size, with or without grep.
func TestLogsLargeTailAsEvents(t *testing.T) {
	for _, c := range []struct {
		name, args string
		want       func(i int) bool // which of the engine's lines are expected
		count      int
	}{
		{"tail", `{"tail":10000}`, func(i int) bool { return i >= 2000 }, 10000},
		// The engine is asked for the last MaxTail lines, and the last
		// 5000 matches of those are kept.
		{"grep", `{"tail":5000,"grep":"keep"}`, func(i int) bool { return i%4 != 0 && i >= 2000 }, 5000},
	} {
		t.Run(c.name, func(t *testing.T) {
			f := newFixture(t)
			var err error
			if f.svc.Redactor, err = redact.New(nil, false); err != nil {
				t.Fatal(err)
			}
			f.store.projects["po"] = sampleProject()
			f.engine.containers = []berth.Container{{ID: "c1", Service: "web", Name: "po-web-1", State: "running"}}
			for i := range 12000 {
				word := "keep"
				if i%4 == 0 {
					word = "drop"
				}
				stream := "stdout"
				if i%50 == 0 {
					stream = "stderr"
				}
				secret := ""
				if i%1000 == 999 {
					secret = " password=hunter2"
				}
				f.engine.lines = append(f.engine.lines, events.LogLine{Stream: stream,
					Line: fmt.Sprintf("%06d %s <%s> %s%s", i, word, strings.Repeat("x", 90), "\\u00e9 é", secret)})
			}
			_, res := f.deliver(t, "berth.cmd.po.logs", `{"id":"l-`+c.name+`","user":"t:1","args":`+c.args+`}`)
			if !*res.OK {
				t.Fatalf("result %+v", res.Error)
			}
			var out LogsResult
			if err := json.Unmarshal(res.Data, &out); err != nil {
				t.Fatal(err)
			}
			var got []events.LogLine
			lastSeq := uint64(0)
			for _, e := range f.em.events {
				if e.ev.Kind != events.KindLog {
					continue
				}
				if e.size > events.MaxLogChunk {
					t.Fatalf("log event of %d bytes", e.size)
				}
				if e.ev.Seq <= lastSeq || e.ev.Seq >= res.Seq {
					t.Fatalf("log event seq %d after %d, result %d", e.ev.Seq, lastSeq, res.Seq)
				}
				lastSeq = e.ev.Seq
				got = append(got, e.ev.Lines...)
			}
			var want []events.LogLine
			for i, l := range f.engine.lines {
				if c.want(i) {
					want = append(want, l)
				}
			}
			want = want[len(want)-c.count:]
			if !out.InEvents || out.Count != c.count || len(out.Lines) != 0 || len(got) != c.count {
				t.Fatalf("in_events %v, count %d, inline %d, in events %d; want %d in events", out.InEvents, out.Count, len(out.Lines), len(got), c.count)
			}
			redacted := 0
			for i := range want {
				switch {
				case strings.Contains(got[i].Line, "hunter2"):
					t.Fatalf("line %d not redacted: %q", i, got[i].Line)
				case strings.Contains(want[i].Line, "hunter2"):
					redacted++
					if prefix := want[i].Line[:strings.Index(want[i].Line, "hunter2")]; !strings.HasPrefix(got[i].Line, prefix) {
						t.Fatalf("line %d: %q, want %q redacted", i, got[i].Line, want[i].Line)
					}
				case got[i] != want[i]:
					t.Fatalf("line %d: %+v, want %+v", i, got[i], want[i])
				}
			}
			if redacted == 0 {
				t.Fatal("no line with a secret among those expected")
			}
		})
	}
}

func TestConfigSetValidatesPaths(t *testing.T) {
	f := newFixture(t)
	root := f.svc.Config.Roots[0]
	ws, prod := filepath.Join(root, "ws"), filepath.Join(root, "prod")
	for _, d := range []string{ws, prod} {
		if err := os.Mkdir(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	outside := t.TempDir()
	if err := os.Symlink(outside, filepath.Join(root, "escape")); err != nil {
		t.Fatal(err)
	}
	f.engine.services = []string{"web", "worker"}
	delete(f.st().projects, "po") // a new project
	set := func(args map[string]any) (any, error) {
		b, _ := json.Marshal(args)
		return f.svc.ConfigSet(context.Background(), &Request{Project: "po", User: "t:1", Args: b}, nil)
	}
	if _, err := set(map[string]any{"workspace": ws, "production": prod}); events.ErrorCode(err) != events.CodeBadRequest ||
		!strings.Contains(err.Error(), "no compose file") {
		t.Fatalf("no compose file: %v", err)
	}
	if err := os.WriteFile(filepath.Join(prod, "compose.yaml"), []byte("services: {}\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	for name, args := range map[string]map[string]any{
		"relative":        {"workspace": "ws", "production": prod},
		"unclean":         {"workspace": ws + "/../ws", "production": prod},
		"outside roots":   {"workspace": outside, "production": prod},
		"symlink escape":  {"workspace": filepath.Join(root, "escape"), "production": prod},
		"missing":         {"workspace": filepath.Join(root, "nope"), "production": prod},
		"compose escape":  {"workspace": ws, "production": prod, "compose_files": []string{"../x.yml"}},
		"compose flag":    {"workspace": ws, "production": prod, "compose_files": []string{"-f"}},
		"bad primary":     {"workspace": ws, "production": prod, "primary_service": "db"},
		"bad compose prj": {"workspace": ws, "production": prod, "compose_project": "Po;rm"},
		"negative window": {"workspace": ws, "production": prod, "stabilize_s": -1},
		"window too long": {"workspace": ws, "production": prod, "stabilize_s": MaxStabilizeS + 1},
		"window not int":  {"workspace": ws, "production": prod, "stabilize_s": 1.5},
	} {
		if _, err := set(args); events.ErrorCode(err) != events.CodeBadRequest {
			t.Errorf("%s: got %v, want bad_request", name, err)
		}
	}
	out, err := set(map[string]any{"workspace": ws, "production": prod})
	if err != nil {
		t.Fatal(err)
	}
	p := out.(*berth.Project)
	if p.PrimaryService != "web" || strings.Join(p.Services, ",") != "web,worker" || p.ComposeFiles[0] != "compose.yaml" || p.UpdatedBy != "t:1" || p.StabilizeS != nil {
		t.Fatalf("project %+v", p)
	}
	// A window of 0 is kept as 0, not as "the worker's default".
	if out, err = set(map[string]any{"workspace": ws, "production": prod, "stabilize_s": 0}); err != nil {
		t.Fatal(err)
	}
	if p := out.(*berth.Project); p.StabilizeS == nil || *p.StabilizeS != 0 || f.svc.stabilize(p) != 0 {
		t.Fatalf("stabilize_s 0: %+v", p.StabilizeS)
	}
	if stored, err := f.store.GetProject(t.Context(), "po"); err != nil || stored.StabilizeS == nil || *stored.StabilizeS != 0 {
		t.Fatalf("stored project %+v, %v", stored, err)
	}
}

// TestStatusShowsResourceUse: a status shows the last resource sample of
// each running container, taken in the background, and the CPU share
// between two samples.
func TestStatusShowsResourceUse(t *testing.T) {
	f := newFixture(t)
	f.st().projects["po"] = &berth.Project{Name: "po", ComposeProject: "po", Services: []string{"web"}}
	f.engine.containers = []berth.Container{{ID: "c1", Service: "web", Name: "po-web-1", State: "running", StartedAt: time.Now()}}
	f.svc.stats.interval = time.Nanosecond
	var calls atomic.Int32
	proceed := make(chan struct{})
	f.engine.stats = func(id string) (*berth.ContainerStats, error) {
		<-proceed
		n := uint64(calls.Add(1))
		// Each sample: the container used a quarter of the host's CPU time
		// since the last one, on 2 CPUs: 50 % of one CPU.
		return &berth.ContainerStats{CPUTotal: n * 250, SystemCPU: n * 1000, OnlineCPUs: 2, MemUsage: 64 << 20, MemLimit: 1 << 30, Read: time.Now()}, nil
	}
	status := func() *StatusReport {
		t.Helper()
		data, err := f.svc.Status(t.Context(), &Request{Project: "po", Args: []byte(`{"refresh":true}`)}, nopReporter{})
		if err != nil {
			t.Fatal(err)
		}
		return data.(*StatusReport)
	}
	waitCalls := func(n int32) {
		t.Helper()
		proceed <- struct{}{}
		for deadline := time.Now().Add(5 * time.Second); ; time.Sleep(5 * time.Millisecond) {
			if _, ok := f.svc.stats.current("c1"); ok && calls.Load() >= n {
				f.svc.stats.mu.Lock()
				busy := f.svc.stats.inFlight["c1"]
				f.svc.stats.mu.Unlock()
				if !busy {
					return
				}
			}
			if time.Now().After(deadline) {
				t.Fatalf("%d stats calls, want %d", calls.Load(), n)
			}
		}
	}
	if st := status(); st.Services[0].StatsAt != nil {
		t.Fatalf("a first status waited for stats: %+v", st.Services[0])
	}
	waitCalls(1)
	st := status().Services[0]
	if st.MemBytes != 64<<20 || st.MemLimitBytes != 1<<30 || st.CPUPercent != nil || st.StatsAt == nil {
		t.Fatalf("after one sample: %+v", st)
	}
	waitCalls(2)
	st = status().Services[0]
	if st.CPUPercent == nil || *st.CPUPercent != 50 {
		t.Fatalf("after two samples: cpu %v", st.CPUPercent)
	}
	close(proceed)
}

// TestStatusSamplesStatsAtMostOncePerInterval: a burst of statuses asks
// the engine for one sample per container, not one per status.
func TestStatusSamplesStatsAtMostOncePerInterval(t *testing.T) {
	f := newFixture(t)
	f.st().projects["po"] = &berth.Project{Name: "po", ComposeProject: "po", Services: []string{"web", "db"}}
	f.engine.containers = []berth.Container{
		{ID: "c1", Service: "web", Name: "po-web-1", State: "running", StartedAt: time.Now()},
		{ID: "c2", Service: "db", Name: "po-db-1", State: "running", StartedAt: time.Now()},
	}
	var calls atomic.Int32
	f.engine.stats = func(id string) (*berth.ContainerStats, error) {
		calls.Add(1)
		return &berth.ContainerStats{MemUsage: 1 << 20, Read: time.Now()}, nil
	}
	for range 50 {
		if _, err := f.svc.Status(t.Context(), &Request{Project: "po", Args: []byte(`{"refresh":true}`)}, nopReporter{}); err != nil {
			t.Fatal(err)
		}
	}
	for deadline := time.Now().Add(5 * time.Second); ; time.Sleep(5 * time.Millisecond) {
		_, ok1 := f.svc.stats.current("c1")
		_, ok2 := f.svc.stats.current("c2")
		if ok1 && ok2 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("no samples taken")
		}
	}
	if n := calls.Load(); n != 2 {
		t.Fatalf("%d stats calls for 50 statuses of 2 containers, want 2", n)
	}
}

func TestDecodedReportsAreCopies(t *testing.T) {
	var d decodedReports
	raw := []byte(`{"project":"app","services":[{"service":"web","state":"running","uptime_s":5}]}`)
	a, ok := d.decode("app", raw)
	if !ok {
		t.Fatal("a valid report did not decode")
	}
	a.Services[0].UptimeS = 99
	b, _ := d.decode("app", raw)
	if b.Services[0].UptimeS != 5 {
		t.Errorf("second decoding has uptime %d, want 5: the first caller's change leaked", b.Services[0].UptimeS)
	}
	c, _ := d.decode("app", []byte(`{"project":"app","services":[{"service":"web","state":"exited"}]}`))
	if c.Services[0].State != "exited" {
		t.Errorf("a new cache entry answered with the old one: %+v", c.Services[0])
	}
	if _, ok := d.decode("app", []byte(`{not json`)); ok {
		t.Error("an unreadable entry decoded")
	}
}

type composeRecorder struct {
	*fakeEngine
	mu    sync.Mutex
	asked []string
}

func (r *composeRecorder) Containers(ctx context.Context, compose string) ([]berth.Container, error) {
	r.mu.Lock()
	r.asked = append(r.asked, compose)
	r.mu.Unlock()
	return r.fakeEngine.Containers(ctx, compose)
}

// A refresh lists the containers of the compose project last read while
// it reads the configuration, and lists again when that changed.
func TestStatusRefreshReadsDockerWhileItReadsTheConfig(t *testing.T) {
	f := newFixture(t)
	f.store.projects["po"] = sampleProject()
	f.engine.containers = []berth.Container{{Service: "web", Name: "po-web-1", State: "running"}}
	rec := &composeRecorder{fakeEngine: f.engine}
	f.svc.Engine = rec
	status := func(args string) *StatusReport {
		t.Helper()
		out, err := f.svc.Status(t.Context(), &Request{Project: "po", Args: json.RawMessage(args)}, nil)
		if err != nil {
			t.Fatal(err)
		}
		return out.(*StatusReport)
	}
	status(`{}`)
	status(`{"refresh":true}`)
	moved := sampleProject()
	moved.ComposeProject = "po2"
	f.store.projects["po"] = moved
	if rep := status(`{"refresh":true}`); rep.ComposeProject != "po2" {
		t.Errorf("compose project %q, want po2", rep.ComposeProject)
	}
	status(`{"refresh":true}`)
	if want := []string{"po", "po", "po", "po2", "po2"}; !slices.Equal(rec.asked, want) {
		t.Errorf("Docker asked for %v, want %v", rec.asked, want)
	}
}
