package handlers

import (
	"context"
	"encoding/json"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/berth-ops/berth"
	"github.com/berth-ops/berth/events"
)

// memStore is an in-memory berth.Store for unit tests.
type memStore struct {
	mu       sync.Mutex
	projects map[string]*berth.Project
	status   map[string]*berth.CachedStatus
	reqs     map[string]*berth.RequestRecord
	history  map[string][]berth.HistoryEntry
	down     bool
}

var _ berth.Store = (*memStore)(nil)

func newMemStore() *memStore {
	return &memStore{projects: map[string]*berth.Project{}, status: map[string]*berth.CachedStatus{},
		reqs: map[string]*berth.RequestRecord{}, history: map[string][]berth.HistoryEntry{}}
}

func (m *memStore) err() error {
	if m.down {
		return events.Errorf(events.CodeStoreUnavailable, "store down")
	}
	return nil
}

func (m *memStore) Ping(context.Context) error { return m.err() }
func (m *memStore) GetProject(_ context.Context, n string) (*berth.Project, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if err := m.err(); err != nil {
		return nil, err
	}
	p, ok := m.projects[n]
	if !ok {
		return nil, events.Errorf(events.CodeNotFound, "no project")
	}
	cp := *p
	return &cp, nil
}
func (m *memStore) PutProject(_ context.Context, p *berth.Project) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	if err := m.err(); err != nil {
		return err
	}
	cp := *p
	m.projects[p.Name] = &cp
	return nil
}
func (m *memStore) DeleteProject(_ context.Context, n string) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	if _, ok := m.projects[n]; !ok {
		return events.Errorf(events.CodeNotFound, "no project")
	}
	delete(m.projects, n)
	delete(m.status, n)
	return nil
}
func (m *memStore) ListProjects(context.Context) ([]string, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	var out []string
	for n := range m.projects {
		out = append(out, n)
	}
	sort.Strings(out)
	return out, nil
}
func (m *memStore) GetStatus(_ context.Context, p string) (*berth.CachedStatus, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if err := m.err(); err != nil {
		return nil, err
	}
	s, ok := m.status[p]
	if !ok {
		return nil, events.Errorf(events.CodeNotFound, "no status")
	}
	return s, nil
}
func (m *memStore) GetProjects(ctx context.Context, names []string) ([]*berth.Project, error) {
	out := make([]*berth.Project, len(names))
	for i, n := range names {
		p, err := m.GetProject(ctx, n)
		switch {
		case err == nil:
			out[i] = p
		case events.ErrorCode(err) != events.CodeNotFound:
			return nil, err
		}
	}
	return out, nil
}
func (m *memStore) GetProjectStatus(ctx context.Context, name string) (*berth.Project, *berth.CachedStatus, error) {
	p, err := m.GetProject(ctx, name)
	if err != nil {
		return nil, nil, err
	}
	st, _ := m.GetStatus(ctx, name)
	return p, st, nil
}
func (m *memStore) PutStatus(_ context.Context, p string, s *berth.CachedStatus, _ time.Duration) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	if err := m.err(); err != nil {
		return err
	}
	m.status[p] = s
	return nil
}
func (m *memStore) InvalidateStatus(_ context.Context, p string) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	delete(m.status, p)
	return nil
}
func (m *memStore) BeginRequest(_ context.Context, rec *berth.RequestRecord, _ time.Duration) (*berth.RequestRecord, bool, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if err := m.err(); err != nil {
		return nil, false, err
	}
	if r, ok := m.reqs[reqKey(rec.User, rec.ID)]; ok {
		cp := *r
		return &cp, false, nil
	}
	cp := *rec
	m.reqs[reqKey(rec.User, rec.ID)] = &cp
	return rec, true, nil
}
func (m *memStore) TakeOverRequest(_ context.Context, rec *berth.RequestRecord, _ time.Duration) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	cp := *rec
	m.reqs[reqKey(rec.User, rec.ID)] = &cp
	return nil
}
func (m *memStore) FinishRequest(_ context.Context, rec *berth.RequestRecord, res json.RawMessage, _ time.Duration) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	if err := m.err(); err != nil {
		return err
	}
	r := *rec
	r.State, r.Result = berth.RequestDone, res
	m.reqs[reqKey(rec.User, rec.ID)] = &r
	return nil
}
func (m *memStore) GetRequest(_ context.Context, user, id string) (*berth.RequestRecord, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	r, ok := m.reqs[reqKey(user, id)]
	if !ok {
		return nil, events.Errorf(events.CodeNotFound, "no request")
	}
	return r, nil
}
func (m *memStore) AppendHistory(_ context.Context, p string, e *berth.HistoryEntry) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.history[p] = append([]berth.HistoryEntry{*e}, m.history[p]...)
	return nil
}
func (m *memStore) History(_ context.Context, p string, n int) ([]berth.HistoryEntry, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	h := m.history[p]
	if len(h) > n {
		h = h[:n]
	}
	return h, nil
}

// reqKey keys a request record: a request is its user's.
func reqKey(user, id string) string { return user + "\x00" + id }

// fakeEngine is a berth.Engine whose answers are fields.
type fakeEngine struct {
	containers []berth.Container
	services   []string
	// model, when set, is what ComposeModel answers; else a model of
	// services.
	model    *berth.ComposeModel
	lines    []events.LogLine
	err      error
	calls    int
	lastLogs berth.LogOptions
	// onContainers, when set, runs during each Containers call.
	onContainers func()
	// stats, when set, answers Stats.
	stats func(id string) (*berth.ContainerStats, error)
}

var _ berth.Engine = (*fakeEngine)(nil)

func (f *fakeEngine) Ping(context.Context) error { return f.err }
func (f *fakeEngine) Containers(context.Context, string) ([]berth.Container, error) {
	f.calls++
	if f.onContainers != nil {
		f.onContainers()
	}
	return f.containers, f.err
}
func (f *fakeEngine) ComposeModel(context.Context, berth.ComposeSpec) (*berth.ComposeModel, error) {
	if f.err != nil {
		return nil, f.err
	}
	if f.model != nil {
		return f.model, nil
	}
	m := &berth.ComposeModel{Services: map[string]berth.ComposeService{}}
	for _, svc := range f.services {
		m.Services[svc] = berth.ComposeService{Name: svc, Image: "app-" + svc, Replicas: 1}
	}
	return m, nil
}
func (f *fakeEngine) Stats(_ context.Context, id string) (*berth.ContainerStats, error) {
	if f.stats == nil {
		return nil, events.Errorf(events.CodeNotFound, "no stats")
	}
	return f.stats(id)
}
func (f *fakeEngine) Logs(_ context.Context, _ string, o berth.LogOptions, fn func(events.LogLine) error) error {
	f.lastLogs = o
	if f.err != nil {
		return f.err
	}
	lines := f.lines
	if o.Tail > 0 && len(lines) > o.Tail {
		lines = lines[len(lines)-o.Tail:]
	}
	for _, l := range lines {
		if err := fn(l); err != nil {
			return err
		}
	}
	return nil
}

// sentEvent is one event a fakeEmitter received.
type sentEvent struct {
	subject, msgID string
	durable        bool
	ev             events.Event
	size           int // of the encoded event
}

// fakeEmitter records events.
type fakeEmitter struct {
	mu      sync.Mutex
	events  []sentEvent
	replies map[string][][]byte
	audits  []events.AuditRecord
	fail    error
}

func (f *fakeEmitter) Emit(_ context.Context, subject, msgID string, body []byte, durable bool) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.fail != nil {
		return f.fail
	}
	if strings.Contains(subject, ".audit.") {
		var a events.AuditRecord
		if err := json.Unmarshal(body, &a); err != nil {
			panic(err)
		}
		f.audits = append(f.audits, a)
		return nil
	}
	var ev events.Event
	if err := json.Unmarshal(body, &ev); err != nil {
		panic(err)
	}
	f.events = append(f.events, sentEvent{subject, msgID, durable, ev, len(body)})
	return nil
}

func (f *fakeEmitter) Reply(_ context.Context, subject string, body []byte) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.replies == nil {
		f.replies = map[string][][]byte{}
	}
	f.replies[subject] = append(f.replies[subject], body)
	return nil
}

func (f *fakeEmitter) results() []events.Event {
	f.mu.Lock()
	defer f.mu.Unlock()
	var out []events.Event
	for _, e := range f.events {
		if e.ev.Kind == events.KindResult {
			out = append(out, e.ev)
		}
	}
	return out
}
