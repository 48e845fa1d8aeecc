package handlers

import (
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/berth-ops/berth"
	"github.com/berth-ops/berth/events"
)

// recorder is an Observer that writes down what it is told.
type recorder struct {
	mu  sync.Mutex
	got []string
}

func (r *recorder) add(format string, a ...any) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.got = append(r.got, fmt.Sprintf(format, a...))
}

func (r *recorder) CommandDone(action string, code events.Code, d time.Duration) {
	if d < 0 {
		r.add("negative duration")
	}
	r.add("command %s %q", action, code)
}
func (r *recorder) QueryDone(ep string, code events.Code, _ time.Duration) {
	r.add("query %s %q", ep, code)
}
func (r *recorder) DeployStep(step string, d time.Duration) { r.add("step %s %s", step, d) }
func (r *recorder) StatusCache(hit bool)                    { r.add("cache hit=%v", hit) }
func (r *recorder) LockConflict()                           { r.add("lock conflict") }
func (r *recorder) Redelivery()                             { r.add("redelivery") }
func (r *recorder) Inflight(lane string, delta int)         { r.add("inflight %s %d", lane, delta) }

func (r *recorder) take() []string {
	r.mu.Lock()
	defer r.mu.Unlock()
	out := r.got
	r.got = nil
	return out
}

func TestMetricHooksOfTheDispatcher(t *testing.T) {
	f := newFixture(t)
	rec := &recorder{}
	f.disp.Observer = rec
	f.store.projects["po"] = &berth.Project{Name: "po", ComposeProject: "po", Strategy: "symlink", Services: []string{"web"}, PrimaryService: "web"}

	// Every delivery of the fixture has stream sequence 7: give each
	// command its own id.
	f.deliver(t, "berth.cmd.po.history", `{"id":"m1","user":"t:1"}`)
	f.deliver(t, "berth.cmd.po.explode", `{"id":"m2","user":"t:1"}`)
	f.deliver(t, "berth.cmd.nope.status", `{"id":"m3","user":"t:1"}`)
	f.deliver(t, "berth.cmd.po.status", `{"id":"m4","user":"t:1"}`)
	f.deliver(t, "berth.cmd.po.status", `{"id":"m5","user":"t:1"}`)
	want := []string{
		`command history ""`,
		`command explode "bad_request"`,
		`command status "not_found"`,
		`command status ""`, `cache hit=false`,
		`command status ""`, `cache hit=true`,
	}
	if got := rec.take(); !slices.Equal(got, want) {
		t.Fatalf("observed\n%s\nwant\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
	}

	// A command already done re-publishes its result: not counted again.
	body := `{"id":"same-1","user":"t:1"}`
	f.deliver(t, "berth.cmd.po.history", body)
	f.deliver(t, "berth.cmd.po.history", body)
	if got := rec.take(); !slices.Equal(got, []string{`command history ""`}) {
		t.Fatalf("a re-published result was observed again: %v", got)
	}
}

func TestMetricHooksOfResults(t *testing.T) {
	rec := &recorder{}
	ObserveResult(nil, events.ActionStatus, &StatusReport{Cached: true}, nil) // nil observer: no-op
	ObserveResult(rec, events.ActionDeploy, &DeployResult{StepsMS: map[string]int64{"sync": 20, "build": 1500, "up": 3000}}, nil)
	// A failed deploy that rolled back measured its steps too.
	ObserveResult(rec, events.ActionDeploy, &DeployResult{RolledBack: true, StepsMS: map[string]int64{"verify": 90000}},
		events.Errorf(events.CodeHealthFailed, "web unhealthy"))
	ObserveResult(rec, events.ActionDeploy, nil, ConflictError("po", &berth.LockInfo{User: "u", Action: "deploy", RequestID: "r"}))
	ObserveResult(rec, events.ActionRestart, nil, ConflictError("po", nil))
	// A conflict that is not a lock: too many pending confirmations.
	ObserveResult(rec, events.ActionDeploy, nil, events.Errorf(events.CodeConflict, "u has 10 pending confirmations, the most allowed"))
	ObserveResult(rec, events.ActionStatus, &StatusReport{}, errors.New("boom"))
	want := []string{
		"step build 1.5s", "step sync 20ms", "step up 3s",
		"step verify 1m30s",
		"lock conflict", "lock conflict",
	}
	if got := rec.take(); !slices.Equal(got, want) {
		t.Fatalf("observed %v, want %v", got, want)
	}
}
