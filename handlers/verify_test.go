package handlers

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/berth-ops/berth"
)

func TestVerifyStabilisationWindowPerProject(t *testing.T) {
	f := newFixture(t)
	now := time.Now()
	f.engine.containers = []berth.Container{{Service: "worker", Name: "po-worker-1", State: "running", StartedAt: now.Add(-10 * time.Second)}}
	ints := func(n int) *int { return &n }
	for _, c := range []struct {
		name       string
		stabilizeS *int
		up         bool
	}{
		{"worker default (3 s) already run", nil, true},
		{"project window shorter", ints(0), true},
		{"project window longer", ints(60), false},
	} {
		t.Run(c.name, func(t *testing.T) {
			p := &berth.Project{Name: "po", ComposeProject: "po", Services: []string{"worker"}, StabilizeS: c.stabilizeS}
			ctx, cancel := context.WithTimeout(t.Context(), 600*time.Millisecond)
			defer cancel()
			health, fail, err := f.svc.verify(ctx, p, modelOf("worker"), nil, "verify", nopReporter{})
			switch {
			case fail != nil:
				t.Fatalf("failure %+v", fail)
			case c.up && (err != nil || len(health) != 1 || health[0].Service != "worker"):
				t.Fatalf("verify = %+v, %v; want the worker up", health, err)
			case !c.up && !errors.Is(err, context.DeadlineExceeded):
				t.Fatalf("verify = %+v, %v; want it still waiting when the context ends", health, err)
			}
		})
	}
	// A container started just now waits out a 1 s project window.
	f.engine.containers[0].StartedAt = time.Now()
	p := &berth.Project{Name: "po", ComposeProject: "po", Services: []string{"worker"}, StabilizeS: ints(1)}
	start := time.Now()
	if _, fail, err := f.svc.verify(t.Context(), p, modelOf("worker"), nil, "verify", nopReporter{}); err != nil || fail != nil {
		t.Fatalf("verify: %v %+v", err, fail)
	}
	if d := time.Since(start); d < 900*time.Millisecond {
		t.Fatalf("up after %v, before the 1 s window", d)
	}
}

// modelOf is a compose model of long-running services without
// healthchecks or restart policies.
func modelOf(services ...string) *berth.ComposeModel {
	m := &berth.ComposeModel{Services: map[string]berth.ComposeService{}}
	for _, svc := range services {
		m.Services[svc] = berth.ComposeService{Name: svc, Image: "app-" + svc, Replicas: 1}
	}
	return m
}

// TestContainerUpByCompletion judges containers by what their service
// declares: a one-shot must exit 0, a long-running service must keep
// running, a service without healthcheck or restart policy may do either.
func TestContainerUpByCompletion(t *testing.T) {
	now := time.Now()
	long := now.Add(-time.Minute)
	for _, c := range []struct {
		name       string
		c          berth.Container
		completion berth.Completion
		wantBy     string
		wantFail   string
	}{
		{"one-shot exited 0", berth.Container{State: "exited", ExitCode: 0}, berth.Finishes, "completed", ""},
		{"one-shot exited 1", berth.Container{State: "exited", ExitCode: 1}, berth.Finishes, "", "exited with code 1"},
		{"one-shot still running", berth.Container{State: "running", StartedAt: long}, berth.Finishes, "", ""},
		{"may-finish exited 0", berth.Container{State: "exited", ExitCode: 0}, berth.MayFinish, "completed", ""},
		{"may-finish running, stable", berth.Container{State: "running", StartedAt: long}, berth.MayFinish, "stable", ""},
		{"long-running exited 0", berth.Container{State: "exited", ExitCode: 0}, berth.Runs, "", "exited with code 0, but it is a long-running service"},
		{"long-running healthy", berth.Container{State: "running", Health: "healthy"}, berth.Runs, "healthy", ""},
		{"long-running unhealthy", berth.Container{State: "running", Health: "unhealthy"}, berth.Runs, "", "health check failing"},
		{"long-running starting", berth.Container{State: "running", Health: "starting", StartedAt: long}, berth.Runs, "", ""},
		{"labelled one-shot of an old model", berth.Container{State: "exited", ExitCode: 0, OneShot: true}, berth.Runs, "completed", ""},
		{"created, not started", berth.Container{State: "created"}, berth.Runs, "", ""},
		{"dead", berth.Container{State: "dead", ExitCode: 137}, berth.MayFinish, "", "exited with code 137"},
	} {
		t.Run(c.name, func(t *testing.T) {
			c.c.Name = "x-1"
			by, fail := containerUp(c.c, c.completion, now, 3*time.Second, map[string]int{}, map[string]time.Time{})
			if by != c.wantBy || (c.wantFail == "") != (fail == "") || (c.wantFail != "" && !strings.HasPrefix(fail, c.wantFail)) {
				t.Fatalf("containerUp = %q, %q; want %q, %q", by, fail, c.wantBy, c.wantFail)
			}
		})
	}
}
