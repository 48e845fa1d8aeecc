package main

import (
	"path/filepath"
	"testing"
	"time"

	"github.com/berth-ops/berth/events"
	"github.com/berth-ops/berth/handlers"
)

// TestWatchInvalidatesStatusOnContainerEvents stops a container behind
// Berth's back: the engine's events drop the cached status, so status
// (without refresh) shows the change long before the cache's TTL (30 s in
// the harness).
func TestWatchInvalidatesStatusOnContainerEvents(t *testing.T) {
	h := newHarness(t, filepath.Clean(tempRoot(t)))
	sample := configure(t, h, "wa")

	status := func() handlers.StatusReport {
		t.Helper()
		res, _ := h.send("wa", events.ActionStatus, events.Command{})
		mustOK(t, res)
		return decodeData[handlers.StatusReport](t, res)
	}
	worker := func(st handlers.StatusReport) handlers.ServiceStatus {
		t.Helper()
		for _, s := range st.Services {
			if s.Service == "worker" {
				return s
			}
		}
		t.Fatalf("no worker service in %+v", st)
		return handlers.ServiceStatus{}
	}

	first := status()
	if first.Cached || worker(first).State != "running" {
		t.Fatalf("first status: cached %v, worker %+v", first.Cached, worker(first))
	}
	if second := status(); !second.Cached || worker(second).State != "running" {
		t.Fatalf("second status not from the cache: cached %v, worker %+v", second.Cached, worker(second))
	}

	sample.Compose(t, "stop", "worker")
	stopped := time.Now()
	var stale int
	var fresh handlers.StatusReport
	for {
		st := status()
		if worker(st).State != "running" {
			fresh = st
			break
		}
		// Only the report cached before the stop may show it running.
		if !st.Cached || st.CachedAt == nil || !st.CachedAt.Equal(first.TakenAt) {
			t.Fatalf("status after the stop shows the worker running, not from the old cache: %+v", st)
		}
		stale++
		if time.Since(stopped) > 10*time.Second {
			t.Fatalf("status still served from the cache %v after the worker stopped", time.Since(stopped))
		}
		time.Sleep(20 * time.Millisecond)
	}
	took := time.Since(stopped)
	t.Logf("status showed the stopped worker %v after compose stop returned, after %d stale answers", took, stale)
	if w := worker(fresh); fresh.Cached || w.State != "exited" || fresh.Summary.Stopped != 1 {
		t.Fatalf("first status showing the stop: cached %v, worker %+v, summary %+v", fresh.Cached, w, fresh.Summary)
	}
	if took >= 5*time.Second {
		t.Fatalf("status showed the stop after %v, want well under the 30s TTL", took)
	}
	// The fresh report is cached in turn.
	if again := status(); !again.Cached || worker(again).State != "exited" {
		t.Fatalf("status after the fresh one: cached %v, worker %+v", again.Cached, worker(again))
	}
}
