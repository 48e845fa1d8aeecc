package docker_test

import (
	"context"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/berth-ops/berth/docker"
	"github.com/berth-ops/berth/events"
	"github.com/berth-ops/berth/internal/testenv"
)

type containerEvent struct {
	cp, action string
	at, got    time.Time
}

// TestWatchContainers follows the sample app's events on the real engine:
// the ones since a past time first, then live ones.
func TestWatchContainers(t *testing.T) {
	s := testenv.SampleApp(t)
	e := newEngine(t)

	// Events from before the connection come back with since.
	since := time.Now()
	s.Compose(t, "restart", "worker")

	ctx, cancel := context.WithCancel(t.Context())
	evs := make(chan containerEvent, 1000)
	done := make(chan error, 1)
	go func() {
		done <- e.WatchContainers(ctx, since, func(cp, action string, at time.Time) {
			evs <- containerEvent{cp, action, at, time.Now()}
		})
	}()
	// wait collects the sample project's events until one has action want;
	// other tests' compose projects may have events too.
	wait := func(want string) []containerEvent {
		t.Helper()
		var got []containerEvent
		timeout := time.After(20 * time.Second)
		for {
			select {
			case ev := <-evs:
				if !slices.Contains(docker.WatchedActions, ev.action) && !strings.HasPrefix(ev.action, "health_status") {
					t.Errorf("event %+v has an action that is not watched", ev)
				}
				if ev.cp != s.Project {
					continue
				}
				if ev.at.Before(since) {
					t.Errorf("event %+v from before since %v", ev, since)
				}
				got = append(got, ev)
				if ev.action == want {
					return got
				}
			case err := <-done:
				t.Fatalf("WatchContainers returned %v before a %s event", err, want)
			case <-timeout:
				t.Fatalf("no %s event of %s within 20s; got %+v", want, s.Project, got)
			}
		}
	}
	// The engine logs restart last, after the container's kill, die,
	// (stop,) start.
	replayed := wait("restart")
	var actions []string
	for _, ev := range replayed {
		actions = append(actions, ev.action)
	}
	if !slices.Contains(actions, "die") || !slices.Contains(actions, "start") {
		t.Fatalf("events of the restart, replayed: %v", actions)
	}
	t.Logf("replayed since %v: %v", since.Format(time.RFC3339Nano), actions)

	// Live events, as a container stops behind Berth's back.
	stopped := time.Now()
	s.Compose(t, "stop", "worker")
	returned := time.Now()
	live := wait("stop")
	for _, ev := range live {
		if ev.at.Before(stopped) || ev.at.After(returned.Add(time.Second)) {
			t.Errorf("live event %+v not timed within the compose stop (%v to %v)", ev, stopped, returned)
		}
		t.Logf("%s %s: engine→watcher %v", ev.cp, ev.action, ev.got.Sub(ev.at))
	}
	if !slices.ContainsFunc(live, func(ev containerEvent) bool { return ev.action == "die" }) {
		t.Fatalf("no die event among %+v", live)
	}

	cancel()
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("WatchContainers returned %v when its context ended, want nil", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("WatchContainers did not return when its context ended")
	}
}

func TestWatchContainersUnavailable(t *testing.T) {
	t.Setenv("DOCKER_HOST", "unix://"+filepath.Join(t.TempDir(), "nonexistent.sock"))
	e := newEngine(t)
	err := e.WatchContainers(t.Context(), time.Time{}, func(string, string, time.Time) {
		t.Error("an event from no engine")
	})
	wantCode(t, err, events.CodeDockerUnavailable)
}
