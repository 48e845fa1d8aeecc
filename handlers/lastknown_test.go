package handlers

import (
	"context"
	"testing"

	"github.com/berth-ops/berth"
	"github.com/berth-ops/berth/events"
)

func TestStoreDownServesReadsFromLastKnownConfig(t *testing.T) {
	f := newFixture(t)
	p := sampleProject()
	p.Roles = map[string]string{"t:viewer": RoleViewer, "t:op": RoleOperator}
	f.store.projects["po"] = p
	f.engine.containers = []berth.Container{{ID: "c1", Service: "web", Name: "po-web-1", State: "running"}}
	ctx := context.Background()
	req := func(user, action string) *Request { return &Request{Project: "po", User: user, Action: action} }

	if _, err := f.svc.Status(ctx, req("t:viewer", events.ActionStatus), nil); err != nil {
		t.Fatal(err)
	}
	f.store.down = true

	out, err := f.svc.Status(ctx, req("t:viewer", events.ActionStatus), nil)
	if err != nil {
		t.Fatalf("status with the store down: %v", err)
	}
	rep := out.(*StatusReport)
	if rep.Cached || rep.CacheError == "" || rep.ConfigReadAt == nil || len(rep.Services) != 3 {
		t.Fatalf("status with the store down: %+v", rep)
	}
	out, err = f.svc.Logs(ctx, req("t:viewer", events.ActionLogs), nil)
	if err != nil || out.(*LogsResult).ConfigReadAt == nil {
		t.Fatalf("logs with the store down: %+v %v", out, err)
	}
	// Roles last read decide reads; anything else needs the store.
	for _, c := range []struct {
		user, action string
		want         events.Code
	}{
		{"t:viewer", events.ActionStatus, ""},
		{"t:viewer", events.ActionLogs, ""},
		{"t:stranger", events.ActionStatus, events.CodeForbidden},
		{"t:op", events.ActionRestart, events.CodeStoreUnavailable},
		{"t:viewer", events.ActionRestart, events.CodeStoreUnavailable},
	} {
		if err := f.svc.Authorize(ctx, req(c.user, c.action)); events.ErrorCode(err) != c.want {
			t.Errorf("authorize %s %s with the store down: %v, want %q", c.user, c.action, err, c.want)
		}
	}
	if _, err := f.svc.ConfigGet(ctx, req("t:viewer", events.ActionConfigGet), nil); events.ErrorCode(err) != events.CodeStoreUnavailable {
		t.Errorf("config.get with the store down: %v", err)
	}
	// A project this worker never read is not known.
	f.store.down = false
	f.store.projects["other"] = sampleProject()
	f.store.down = true
	if _, err := f.svc.Status(ctx, &Request{Project: "other", User: "t:viewer", Action: events.ActionStatus}, nil); events.ErrorCode(err) != events.CodeStoreUnavailable {
		t.Errorf("status of a project never read, store down: %v", err)
	}

	// Back up: the store is used again, and the report says so.
	f.store.down = false
	out, err = f.svc.Status(ctx, req("t:viewer", events.ActionStatus), nil)
	if err != nil || out.(*StatusReport).ConfigReadAt != nil || out.(*StatusReport).CacheError != "" {
		t.Fatalf("status with the store back: %+v %v", out, err)
	}
}

func TestLastKnownConfigForgetsDeletedProjects(t *testing.T) {
	f := newFixture(t)
	f.store.projects["po"] = sampleProject()
	ctx := context.Background()
	status := func() error {
		_, err := f.svc.Status(ctx, &Request{Project: "po", User: "t:1", Action: events.ActionStatus}, nil)
		return err
	}
	if err := status(); err != nil {
		t.Fatal(err)
	}
	// Deleted behind this worker's back: seen as missing once, forgotten.
	delete(f.store.projects, "po")
	if err := status(); events.ErrorCode(err) != events.CodeNotFound {
		t.Fatalf("status of a deleted project: %v", err)
	}
	f.store.down = true
	if err := status(); events.ErrorCode(err) != events.CodeStoreUnavailable {
		t.Fatalf("status of a deleted project, store down: %v", err)
	}
	// Deleted by this worker: forgotten at once.
	f.store.down = false
	f.store.projects["po"] = sampleProject()
	if err := status(); err != nil {
		t.Fatal(err)
	}
	if _, err := f.svc.deleteConfig(ctx, "po"); err != nil {
		t.Fatal(err)
	}
	f.store.down = true
	if err := status(); events.ErrorCode(err) != events.CodeStoreUnavailable {
		t.Fatalf("status after config.delete, store down: %v", err)
	}
}
