package handlers

import (
	"context"
	"errors"
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
			health, fail, err := f.svc.verify(ctx, p, nil, nopReporter{})
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
	if _, fail, err := f.svc.verify(t.Context(), p, nil, nopReporter{}); err != nil || fail != nil {
		t.Fatalf("verify: %v %+v", err, fail)
	}
	if d := time.Since(start); d < 900*time.Millisecond {
		t.Fatalf("up after %v, before the 1 s window", d)
	}
}
